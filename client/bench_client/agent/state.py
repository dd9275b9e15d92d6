"""The state file (``<work_dir>/state.json``): the task in flight and, once it has ended,
the report still owed to the service. Written atomically (a temporary file, fsync, then
``os.replace``), so an agent killed at any moment leaves the old state or the new one."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger("bench_client.agent")

STATE_VERSION = 1


class Report(BaseModel):
    """What the agent owes the service for one task: a completion or a failure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["complete", "fail"]
    result: dict[str, Any] | None = None
    error: str | None = None
    retryable: bool = False


class InFlight(BaseModel):
    """The task this agent holds, its process once started, its report once it ended."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str
    execution_id: str
    type: str
    attempt: int
    claimed_at: str
    pid: int | None = None
    process_start: str | None = None
    log_path: str | None = None
    report: Report | None = None


class StateFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = STATE_VERSION
    task: InFlight | None = None


class State:
    """Read and write ``path``; a missing file is an empty state."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> InFlight | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return StateFile.model_validate(json.loads(text)).task
        except (ValueError, ValidationError) as error:
            # Unreadable: keep it for a human, start afresh (the lease, if any, expires).
            broken = self.path.with_suffix(".broken")
            os.replace(self.path, broken)
            log.error("state file %s is unreadable (%s); moved to %s", self.path, error, broken)
            return None

    def save(self, task: InFlight | None) -> None:
        body = StateFile(task=task).model_dump_json(indent=2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(
            dir=self.path.parent, prefix=".state.", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(body)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        _fsync_dir(self.path.parent)

    def clear(self) -> None:
        self.save(None)


def _fsync_dir(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(descriptor)
    finally:
        os.close(descriptor)
