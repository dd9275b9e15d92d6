"""``benchctl watch``: the service's events as they happen, one line each (or one JSON
object per line), until Ctrl-C. The stream reconnects by itself and resumes where it was
(Client.follow_events); what it says about that goes to stderr."""

from __future__ import annotations

import json
import os
import sys
from datetime import tzinfo
from typing import Annotated

import typer
from rich.markup import escape

from bench_client import StreamNotice, StreamOpened, StreamReconnecting
from bench_client.cli.context import open_client, settings_of
from bench_client.cli.output import Output, jsonable
from bench_client.cli.runs import EXIT_USAGE
from bench_client.cli.timeparse import to_local
from bench_client.errors import Gone
from bench_client.models import EventOut

__all__ = ["describe", "watch"]

_COLOURS = {
    "bench": "green",
    "reservation": "cyan",
    "execution": "magenta",
    "task": "blue",
    "webhook": "yellow",
}
_BAD = {"task.dead", "webhook.disabled", "bench.offline"}
_TYPE_WIDTH = len("reservation.ending_soon")


def describe(event: EventOut, tz: tzinfo | None = None) -> list[tuple[str, str]]:
    """The line for an event, as (text, Rich style) parts: when (local time), type, the
    entity (with its status, if it has one), the bench, the actor."""
    when = to_local(event.at, tz).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    family = event.type.partition(".")[0]
    style = "bold red" if event.type in _BAD else f"bold {_COLOURS.get(family, 'white')}"
    status = event.data.get("status")
    is_bench = event.entity.type == "bench" and event.entity.id == event.bench_id
    entity = f"{event.entity.type} {event.entity.id} v{event.entity.version}"
    parts = [
        (when, "dim"),
        ("  ", ""),
        (f"{event.type:<{_TYPE_WIDTH}}", style),
        ("  ", ""),
        (entity + (f" ({status})" if isinstance(status, str) else ""), ""),
        (f"  on {event.bench_id}" if event.bench_id and not is_bench else "", ""),
        (f"  by {event.actor}", "dim"),
    ]
    return [(text, part_style) for text, part_style in parts if text]


def _print_event(out: Output, event: EventOut, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(jsonable(event), ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    line = "".join(
        f"[{style}]{escape(text)}[/]" if style else escape(text)
        for text, style in describe(event, out.tz)
    )
    out.out.print(line, highlight=False, soft_wrap=True)


def _notice(out: Output, notice: StreamNotice) -> None:
    """Connection news, on stderr (stdout holds only events)."""
    if isinstance(notice, StreamReconnecting):
        message = f"stream lost ({notice.reason}); reconnecting in {notice.delay:.1f}s"
        if not notice.last_event_id:
            message += " (no event seen yet to resume after: what happens until then is missed)"
    elif isinstance(notice, StreamOpened) and notice.last_event_id:
        message = f"watching events after position {notice.last_event_id} (Ctrl-C to stop)"
    else:
        message = "watching events from now on (Ctrl-C to stop)"
    out.err.print(escape(message), style="dim", highlight=False, soft_wrap=True)


def watch(
    ctx: typer.Context,
    bench_id: Annotated[
        str | None, typer.Option("--bench", help="Only this bench's events.", metavar="BENCH")
    ] = None,
    mine: Annotated[
        bool, typer.Option("--mine", help="Only events about you (your bookings, runs, webhooks).")
    ] = False,
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--type",
            "-t",
            help="Only these types; globs work: 'reservation.*' (repeat for several).",
            metavar="GLOB",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object (the API's event) per line.")
    ] = False,
    after: Annotated[
        str | None,
        typer.Option(
            "--after",
            help="Start after this event's position (from --json), not from now.",
            metavar="POSITION",
        ),
    ] = None,
) -> None:
    """Print events as they happen (bookings, runs, benches), until Ctrl-C.

    One line each: local time, type, what changed, its bench, who did it. A dropped
    connection is resumed after the last event seen, so none is missed."""
    settings = settings_of(ctx)
    out = settings.out
    as_json = as_json or out.json
    position = after
    try:
        with open_client(settings) as client:
            for event in client.follow_events(
                types=types or (),
                bench_id=bench_id,
                user_id="me" if mine else None,
                after=after,
                on_notice=lambda notice: _notice(out, notice),
            ):
                _print_event(out, event, as_json)
                position = event.position
    except KeyboardInterrupt:
        out.err.print("stopped", style="dim", highlight=False)
    except BrokenPipeError:
        # The reader went away (`benchctl watch --json | head -1`): that is the end.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except Gone as gone:
        out.error(
            f"cannot resume after position {position}: the service no longer keeps it",
            [gone.detail, "run benchctl watch without --after to follow from now on"],
        )
        raise typer.Exit(EXIT_USAGE) from gone
