"""Executions from the command line: task specs, following a run to its verdict, exit codes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bench_client import Client
from bench_client.cli.output import Progress, text
from bench_client.cli.timeparse import format_duration
from bench_client.models import ExecutionOut, TaskOut

__all__ = [
    "EXIT_CODES",
    "EXIT_TIMED_OUT",
    "Follower",
    "parse_task",
    "verdict_code",
]

# 0 passed, 1 failed, 2 errored or timed out, 3 cancelled (4: usage or server error).
EXIT_CODES = {"passed": 0, "failed": 1, "errored": 2, "timed_out": 2, "cancelled": 3}
EXIT_TIMED_OUT = 2
EXIT_USAGE = 4
POLL_MIN_S = 0.25
POLL_MAX_S = 5.0
POLL_FACTOR = 1.6


def parse_task(
    spec: str, *, timeout_s: int | None = None, max_attempts: int | None = None
) -> dict[str, Any]:
    """``flash`` or ``test:suite=smoke,board=b2`` -> ``{"type": ..., "params": {...}}``
    (parameter values are strings)."""
    kind, sep, rest = spec.partition(":")
    kind = kind.strip()
    if not kind:
        raise ValueError(f"{spec!r}: a task is 'type' or 'type:key=value,key=value'")
    params: dict[str, str] = {}
    if sep and rest.strip():
        for pair in rest.split(","):
            key, eq, value = pair.partition("=")
            if not eq or not key.strip():
                raise ValueError(f"{spec!r}: {pair!r} is not key=value")
            params[key.strip()] = value.strip()
    task: dict[str, Any] = {"type": kind, "params": params}
    if timeout_s is not None:
        task["timeout_s"] = timeout_s
    if max_attempts is not None:
        task["max_attempts"] = max_attempts
    return task


def verdict_code(status: str) -> int:
    return EXIT_CODES.get(status, EXIT_TIMED_OUT)


def _describe(index: int, count: int, task: TaskOut) -> str:
    status = text(task.status)
    head = f"task {index}/{count} {task.type}: {status}"
    if status == "leased":
        return f"{head} (attempt {task.attempts}/{task.max_attempts})"
    if status == "pending" and task.attempts:
        why = f": {task.error}" if task.error else ""
        return f"{head} (attempt {task.attempts}/{task.max_attempts} failed{why}; will retry)"
    if status in ("failed", "dead") and task.error:
        return f"{head} ({task.error})"
    return head


@dataclass
class Follower:
    """Polls ``get_execution`` with backoff (quick again after every change) and reports
    each execution and task transition as it is seen."""

    client: Client
    log: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def follow(
        self, execution_id: str, *, deadline: float | None, progress: Progress | None = None
    ) -> tuple[ExecutionOut, bool]:
        """(the execution as last read, whether it reached a verdict before ``deadline``),
        ``deadline`` being a ``clock()`` value."""
        seen: dict[str, tuple[str, int]] = {}
        status_seen = ""
        started = self.clock()
        interval = POLL_MIN_S
        while True:
            execution = self.client.get_execution(execution_id)
            status = text(execution.status)
            tasks = execution.tasks or []
            lines = [
                _describe(index, len(tasks), task)
                for index, task in enumerate(tasks, start=1)
                if seen.get(task.task_id) != (text(task.status), task.attempts)
            ]
            seen.update({task.task_id: (text(task.status), task.attempts) for task in tasks})
            if status != status_seen:
                headline = f"execution {execution.execution_id}: {status}"
                # The verdict after the task that decided it; otherwise the run first.
                lines = [*lines, headline] if status in EXIT_CODES else [headline, *lines]
                status_seen = status
            for line in lines:
                self.log(line)
            changed = bool(lines)
            if status in EXIT_CODES:
                return execution, True
            now = self.clock()
            if deadline is not None and now >= deadline:
                return execution, False
            if progress is not None:
                done = sum(1 for task in tasks if text(task.status) == "succeeded")
                progress.update(
                    f"execution {status}: {done}/{len(tasks)} tasks done, "
                    f"{format_duration_s(now - started)} elapsed"
                )
            interval = POLL_MIN_S if changed else min(interval * POLL_FACTOR, POLL_MAX_S)
            pause = interval if deadline is None else min(interval, max(deadline - now, 0.0))
            self.sleep(pause)


def format_duration_s(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds))
