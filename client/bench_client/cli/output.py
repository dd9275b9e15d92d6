"""What benchctl prints: tables for people, the API's JSON for scripts, errors in one or
two lines, and progress (a Rich spinner on a terminal, plain lines otherwise)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import tzinfo
from enum import Enum
from types import TracebackType
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from bench_client.cli.timeparse import format_local

__all__ = [
    "Output",
    "Progress",
    "jsonable",
    "text",
]

PLAIN_PROGRESS_EVERY_S = 60.0


def text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def jsonable(value: Any) -> Any:
    """The API's JSON for a model, a list of them, or a dict holding them."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


def _console(stderr: bool) -> Console:
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return probe
    # Not a terminal (CI logs, pipes): no colour, and wide enough that rows do not wrap.
    return Console(stderr=stderr, width=200, no_color=True, highlight=False, soft_wrap=False)


class Output:
    """``json``: stdout holds only JSON (progress and messages go to stderr)."""

    def __init__(self, fmt: str, tz: tzinfo | None = None) -> None:
        self.json = fmt == "json"
        self.tz = tz
        self.out = _console(stderr=False)
        self.err = _console(stderr=True)

    @property
    def info(self) -> Console:
        """Where messages and progress go: stdout for people, stderr under -o json."""
        return self.err if self.json else self.out

    def when(self, instant: Any) -> str:
        return format_local(instant, self.tz)

    def emit_json(self, value: Any) -> None:
        sys.stdout.write(json.dumps(jsonable(value), indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def say(self, message: str) -> None:
        self.info.print(escape(message), highlight=False)

    def table(
        self, columns: Sequence[str], rows: Iterable[Sequence[object]], *, empty: str
    ) -> None:
        materialised = [[text(cell) for cell in row] for row in rows]
        if not materialised:
            self.say(empty)
            return
        table = Table(*columns, box=None, header_style="bold", pad_edge=False)
        for row in materialised:
            table.add_row(*(escape(cell) for cell in row))
        self.out.print(table)

    def fields(self, pairs: Sequence[tuple[str, object]]) -> None:
        width = max(len(name) for name, _ in pairs)
        for name, value in pairs:
            self.out.print(f"{name + ':':<{width + 1}} {escape(text(value))}", highlight=False)

    def error(self, first: str, more: Sequence[str] = ()) -> None:
        self.err.print(f"[bold red]error:[/] {escape(first)}", highlight=False)
        for line in more:
            self.err.print(f"  {escape(line)}", highlight=False)

    def progress(self, initial: str) -> Progress:
        return Progress(self.info, initial)


class Progress:
    """A spinner whose text changes on a terminal; without one, the text as a plain line
    when it changes in substance (``update(..., force=True)``) or once a minute."""

    def __init__(self, console: Console, initial: str) -> None:
        self._console = console
        self._text = initial
        self._status: Status | None = None
        self._printed_at = 0.0

    def __enter__(self) -> Progress:
        if self._console.is_terminal:
            self._status = self._console.status(escape(self._text))
            self._status.start()
        else:
            self._plain(self._text)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def update(self, message: str, *, force: bool = False) -> None:
        self._text = message
        if self._status is not None:
            self._status.update(escape(message))
        elif force or time.monotonic() - self._printed_at >= PLAIN_PROGRESS_EVERY_S:
            self._plain(message)

    def log(self, message: str) -> None:
        """A line that stays (above the spinner on a terminal)."""
        self._console.print(escape(message), highlight=False)
        if self._status is None:
            self._printed_at = time.monotonic()

    def _plain(self, message: str) -> None:
        self._console.print(escape(message), highlight=False)
        self._printed_at = time.monotonic()
