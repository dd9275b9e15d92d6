"""What an execution use-case writes, and the one rule every task change obeys.

A ``ChangeSet`` collects versioned replacements, version checks and the history entries
that describe them; the store applies it all at once or not at all. ``settle`` is what
follows any task change: the run's verdict, or pins that keep two changes from both
missing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.executions.domain import (
    Execution,
    ExecutionStatus,
    Task,
    TaskStatus,
    cancel_task,
    transition,
    verdict,
)
from app.history.domain import AuditTrail, HistoryEntry
from app.identity import Actor
from app.store.base import Write


@dataclass(slots=True)
class ChangeSet:
    """What one use-case writes: versioned replacements, checks and history entries."""

    executions: list[Write[Execution]] = field(default_factory=list)
    tasks: list[Write[Task]] = field(default_factory=list)
    entries: list[HistoryEntry] = field(default_factory=list)

    def change_execution(
        self, before: Execution, after: Execution, actor: Actor, action: str
    ) -> None:
        self.executions.append(Write(before, after))
        self.entries.append(EXECUTION_AUDIT.entry(after, actor, action, before))

    def change_task(self, before: Task, after: Task, actor: Actor, action: str) -> None:
        self.tasks.append(Write(before, after))
        self.entries.append(TASK_AUDIT.entry(after, actor, action, before))

    def check_task(self, task: Task) -> None:
        self.tasks.append(Write(task, None))


def _task_snapshot(task: Task) -> dict[str, Any]:
    return {
        "status": task.status.value,
        "attempts": task.attempts,
        "lease_holder": task.lease_holder,
        "error": task.error,
        "result": task.result,
    }


def _execution_event(action: str, before: Execution | None, after: Execution) -> str | None:
    if action == "created":
        return "execution.queued"
    if before is not None and before.status is not after.status:
        if after.status.is_terminal:
            return "execution.finished"
        if after.status is ExecutionStatus.RUNNING:
            return "execution.started"
    return None


def _execution_view(execution: Execution, at: datetime) -> dict[str, Any]:
    return {
        "execution_id": execution.execution_id,
        "reservation_id": execution.reservation_id,
        "bench_id": execution.bench_id,
        "created_by": execution.created_by,
        "commit_sha": execution.commit_sha,
        "pipeline_url": execution.pipeline_url,
        **execution.snapshot(),
        # The verdict, once there is one (the status of a finished run).
        "verdict": execution.status.value if execution.status.is_terminal else None,
        "version": execution.version,
    }


def _task_event(action: str, before: Task | None, after: Task) -> str | None:
    if action == "claimed":
        return "task.claimed"
    if before is None or before.status is not TaskStatus.LEASED:
        return None
    if after.status is TaskStatus.PENDING:
        return "task.retried"  # a retryable failure or a lease that ran out
    if after.status is TaskStatus.DEAD:
        return "task.dead"
    return None


def _task_view(task: Task, at: datetime) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "execution_id": task.execution_id,
        "bench_id": task.bench_id,
        "seq": task.seq,
        "type": task.type,
        **_task_snapshot(task),
        "version": task.version,
    }


EXECUTION_AUDIT: AuditTrail[Execution] = AuditTrail(
    "execution",
    lambda execution: execution.execution_id,
    Execution.snapshot,
    raises=_execution_event,
    view=_execution_view,
    scope=lambda execution: (execution.bench_id, execution.created_by),
)
TASK_AUDIT: AuditTrail[Task] = AuditTrail(
    "task",
    lambda task: task.task_id,
    _task_snapshot,
    raises=_task_event,
    view=_task_view,
    scope=lambda task: (task.bench_id, None),
)


def settle(
    changes: ChangeSet,
    execution: Execution,
    tasks: Sequence[Task],
    changed: Task,
    actor: Actor,
    now: datetime,
) -> Execution:
    """After ``changed`` replaces its old self in ``tasks``: reach the verdict if the tasks
    decide it (cancelling what is left), or else pin every unfinished sibling's version,
    so that two tasks finishing at once cannot both miss the verdict."""
    current = [changed if task.task_id == changed.task_id else task for task in tasks]
    outcome = verdict(current)
    siblings = [task for task in tasks if task.task_id != changed.task_id]
    # Tasks finish only after a claim started the run: a queued run has no verdict yet.
    if outcome is None or execution.status is not ExecutionStatus.RUNNING:
        for sibling in siblings:
            if not sibling.status.is_terminal:
                changes.check_task(sibling)
        return execution
    finished = transition(execution, outcome, now)
    for sibling in siblings:
        if not sibling.status.is_terminal:
            changes.change_task(sibling, cancel_task(sibling, now), actor, "cancelled")
    return finished
