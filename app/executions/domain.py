"""Executions and their tasks: the state machines, leases, retries and verdicts, and which
task a bench's agent gets next. No I/O.

An execution tests one commit on a reserved bench; its tasks run in order, leased one at
a time to the bench's agent. Everything here is a pure function from old state to new
state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from app.errors import Conflict, Forbidden
from app.identity import Principal, Role
from app.timeutil import rfc3339

COMMIT_SHA_PATTERN = r"^[0-9a-fA-F]{7,40}$"
# A DynamoDB transaction holds 100 items. The largest change sets are creating a run
# (execution, N tasks, N + 1 history entries and an idempotency key: 2N + 3) and a verdict
# that cancels every unfinished sibling (2N + 2): N = 48 keeps both within one transaction.
MAX_TASKS = 48
DEFAULT_MAX_ATTEMPTS = 3
# The longest one attempt of a task may take. A lease never outlives its attempt's timeout,
# so a run can hold its bench for at most this long after its reservation has ended.
MAX_TASK_TIMEOUT_S = 86_400


class ExecutionStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    ERRORED = "errored"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_terminal(self) -> bool:
        return not EXECUTION_TRANSITIONS[self]


EXECUTION_TRANSITIONS: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    ExecutionStatus.QUEUED: frozenset({ExecutionStatus.RUNNING, ExecutionStatus.CANCELLED}),
    ExecutionStatus.RUNNING: frozenset(
        {
            ExecutionStatus.PASSED,
            ExecutionStatus.FAILED,
            ExecutionStatus.ERRORED,
            ExecutionStatus.CANCELLED,
            ExecutionStatus.TIMED_OUT,
        }
    ),
    ExecutionStatus.PASSED: frozenset(),
    ExecutionStatus.FAILED: frozenset(),
    ExecutionStatus.ERRORED: frozenset(),
    ExecutionStatus.CANCELLED: frozenset(),
    ExecutionStatus.TIMED_OUT: frozenset(),
}


class TaskStatus(StrEnum):
    PENDING = "pending"
    LEASED = "leased"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # failed and not worth retrying
    DEAD = "dead"  # ran out of attempts
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return not TASK_TRANSITIONS[self]


TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.LEASED, TaskStatus.CANCELLED}),
    TaskStatus.LEASED: frozenset(
        {
            TaskStatus.SUCCEEDED,
            TaskStatus.FAILED,
            TaskStatus.PENDING,  # a retry, after a failure or an expired lease
            TaskStatus.DEAD,
            TaskStatus.CANCELLED,
        }
    ),
    TaskStatus.SUCCEEDED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.DEAD: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class TaskSpec:
    type: str
    params: dict[str, Any]
    timeout_s: int
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


@dataclass(frozen=True, slots=True)
class Task:
    task_id: str
    execution_id: str
    bench_id: str
    seq: int
    type: str
    params: dict[str, Any]
    timeout_s: int
    max_attempts: int
    status: TaskStatus
    attempts: int
    version: int
    created_at: datetime
    updated_at: datetime
    lease_holder: str | None = None
    lease_expires_at: datetime | None = None
    attempt_started_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    def _next(self, now: datetime, **changes: Any) -> Task:
        return replace(self, version=self.version + 1, updated_at=now, **changes)

    def lease_live(self, now: datetime) -> bool:
        return (
            self.status is TaskStatus.LEASED
            and self.lease_expires_at is not None
            and now < self.lease_expires_at
        )


@dataclass(frozen=True, slots=True)
class Execution:
    execution_id: str
    reservation_id: str
    bench_id: str
    created_by: str
    commit_sha: str
    pipeline_url: str | None
    metadata: dict[str, Any]
    task_ids: tuple[str, ...]
    # The longest a run may take once started: every task's timeout times its attempts.
    time_budget_s: int
    status: ExecutionStatus
    version: int
    created_at: datetime
    updated_at: datetime
    artifacts_uri: str | None = None
    summary: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def deadline(self) -> datetime | None:
        if self.started_at is None:
            return None
        return self.started_at + timedelta(seconds=self.time_budget_s)

    def snapshot(self) -> dict[str, Any]:
        """The fields whose changes the history records."""
        return {
            "status": self.status.value,
            "artifacts_uri": self.artifacts_uri,
            "summary": self.summary,
            "started_at": None if self.started_at is None else rfc3339(self.started_at),
            "finished_at": None if self.finished_at is None else rfc3339(self.finished_at),
        }


def task_id_for(execution_id: str, seq: int) -> str:
    """Task ids derive from their execution: its tasks can be read by key, consistently."""
    return f"{execution_id}.{seq:02d}"


def new_execution(
    *,
    execution_id: str,
    reservation_id: str,
    bench_id: str,
    created_by: str,
    commit_sha: str,
    pipeline_url: str | None,
    metadata: dict[str, Any],
    tasks: Sequence[TaskSpec],
    now: datetime,
) -> tuple[Execution, list[Task]]:
    built = [
        Task(
            task_id=task_id_for(execution_id, seq),
            execution_id=execution_id,
            bench_id=bench_id,
            seq=seq,
            type=spec.type,
            params=spec.params,
            timeout_s=spec.timeout_s,
            max_attempts=spec.max_attempts,
            status=TaskStatus.PENDING,
            attempts=0,
            version=1,
            created_at=now,
            updated_at=now,
        )
        for seq, spec in enumerate(tasks)
    ]
    execution = Execution(
        execution_id=execution_id,
        reservation_id=reservation_id,
        bench_id=bench_id,
        created_by=created_by,
        commit_sha=commit_sha.lower(),
        pipeline_url=pipeline_url,
        metadata=metadata,
        task_ids=tuple(task.task_id for task in built),
        time_budget_s=sum(spec.timeout_s * spec.max_attempts for spec in tasks),
        status=ExecutionStatus.QUEUED,
        version=1,
        created_at=now,
        updated_at=now,
    )
    return execution, built


def _move(execution: Execution, target: ExecutionStatus, now: datetime) -> Execution:
    allowed = EXECUTION_TRANSITIONS[execution.status]
    if target not in allowed:
        raise Conflict(
            f"an execution cannot go from {execution.status.value!r} to {target.value!r}",
            current_status=execution.status.value,
            allowed_transitions=sorted(status.value for status in allowed),
        )
    started_at = execution.started_at
    if target is ExecutionStatus.RUNNING and started_at is None:
        started_at = now
    return replace(
        execution,
        status=target,
        started_at=started_at,
        finished_at=now if target.is_terminal else None,
    )


def report(
    execution: Execution,
    *,
    status: ExecutionStatus | None,
    artifacts_uri: str | None,
    summary: str | None,
    now: datetime,
) -> Execution:
    """One change, one version: a status along the state machine, artifacts, a summary.
    The service, not the client, sets started_at and finished_at."""
    changed = replace(
        execution,
        artifacts_uri=execution.artifacts_uri if artifacts_uri is None else artifacts_uri,
        summary=execution.summary if summary is None else summary,
    )
    if status is not None and status is not execution.status:
        changed = _move(changed, status, now)
    if changed == execution:
        return execution
    return replace(changed, version=execution.version + 1, updated_at=now)


def transition(execution: Execution, target: ExecutionStatus, now: datetime) -> Execution:
    return report(execution, status=target, artifacts_uri=None, summary=None, now=now)


# --- leases ------------------------------------------------------------------------------


def _lease_end(task: Task, now: datetime, lease: timedelta) -> datetime:
    # A lease never outlives the attempt's timeout: a task that runs too long is retried.
    started = task.attempt_started_at or now
    return min(now + lease, started + timedelta(seconds=task.timeout_s))


def _refuse(task: Task, detail: str, **extensions: Any) -> Conflict:
    allowed = TASK_TRANSITIONS[task.status]
    return Conflict(
        detail,
        current_status=task.status.value,
        allowed_transitions=sorted(status.value for status in allowed),
        **extensions,
    )


def claim(task: Task, holder: str, now: datetime, lease: timedelta) -> Task:
    if task.status is not TaskStatus.PENDING:
        raise _refuse(task, f"task {task.task_id} is {task.status.value}, not pending")
    started = replace(task, attempt_started_at=now)
    return started._next(
        now,
        status=TaskStatus.LEASED,
        attempts=task.attempts + 1,
        lease_holder=holder,
        lease_expires_at=_lease_end(started, now, lease),
        error=None,
    )


def _check_holder(task: Task, holder: str, now: datetime) -> None:
    if task.status is not TaskStatus.LEASED or task.lease_holder != holder:
        raise _refuse(task, f"task {task.task_id} is not leased to you")
    if not task.lease_live(now):
        raise _refuse(task, f"the lease on task {task.task_id} has expired", lease_expired=True)


def extend(task: Task, holder: str, now: datetime, lease: timedelta) -> Task:
    _check_holder(task, holder, now)
    return task._next(now, lease_expires_at=_lease_end(task, now, lease))


def complete(
    task: Task,
    holder: str,
    now: datetime,
    result: dict[str, Any],
    reported_by: str | None = None,
) -> Task:
    """``reported_by``: the agent whose report made the task's current version, if one did.
    That agent completing it again with the same result changes nothing (a retried
    request): the task comes back as it is."""
    if task.status is TaskStatus.SUCCEEDED and reported_by == holder and task.result == result:
        return task
    _check_holder(task, holder, now)
    return task._next(
        now, status=TaskStatus.SUCCEEDED, result=result, lease_holder=None, lease_expires_at=None
    )


def _retry_or_die(task: Task, now: datetime, error: str) -> Task:
    status = TaskStatus.PENDING if task.attempts < task.max_attempts else TaskStatus.DEAD
    return task._next(
        now,
        status=status,
        error=error,
        lease_holder=None,
        lease_expires_at=None,
        attempt_started_at=None,
    )


def fail(
    task: Task,
    holder: str,
    now: datetime,
    error: str,
    retryable: bool,
    reported_by: str | None = None,
) -> Task:
    """Like ``complete``, the same failure repeated by the agent that reported it is the
    task as it is."""
    if reported_by == holder and task.error == error and _failed_as(task, retryable):
        return task
    _check_holder(task, holder, now)
    if retryable:
        return _retry_or_die(task, now, error)
    return task._next(
        now, status=TaskStatus.FAILED, error=error, lease_holder=None, lease_expires_at=None
    )


def _failed_as(task: Task, retryable: bool) -> bool:
    """Whether the task is as a failure of that kind leaves it."""
    if retryable:
        return task.status in (TaskStatus.PENDING, TaskStatus.DEAD)
    return task.status is TaskStatus.FAILED


def expire(task: Task, now: datetime) -> Task:
    """An expired lease returns the task to pending, or kills it after its last attempt."""
    if task.status is not TaskStatus.LEASED or task.lease_live(now):
        return task
    return _retry_or_die(task, now, "lease expired")


def cancel_task(task: Task, now: datetime) -> Task:
    if task.status.is_terminal:
        return task
    return task._next(now, status=TaskStatus.CANCELLED, lease_holder=None, lease_expires_at=None)


def verdict(tasks: Sequence[Task]) -> ExecutionStatus | None:
    """The execution's outcome once its tasks decide it; None while they do not yet."""
    statuses = {task.status for task in tasks}
    if TaskStatus.FAILED in statuses:
        return ExecutionStatus.FAILED
    if TaskStatus.DEAD in statuses:
        return ExecutionStatus.ERRORED
    if statuses == {TaskStatus.SUCCEEDED}:
        return ExecutionStatus.PASSED
    return None


def timed_out(execution: Execution, now: datetime) -> bool:
    deadline = execution.deadline
    return execution.status is ExecutionStatus.RUNNING and deadline is not None and now >= deadline


# --- who may act on whose runs -----------------------------------------------------------


def check_may_launch(principal: Principal, reservation_owner: str) -> None:
    """Users start runs on their own reservations; CI and admins on any."""
    if principal.role is Role.USER and reservation_owner != principal.subject:
        raise Forbidden("users may only run executions on their own reservations")


def check_may_report(principal: Principal, execution: Execution) -> None:
    if principal.role in (Role.CI, Role.ADMIN):
        return
    if principal.role is Role.AGENT and principal.bench_id == execution.bench_id:
        return
    if principal.role is Role.USER and principal.subject == execution.created_by:
        return
    raise Forbidden("only CI, admins, the bench's agent or its creator change an execution")


def check_may_work_on(principal: Principal, task: Task) -> None:
    """Only the agent of the task's bench reports on it: another bench's agent is refused
    before the lease is looked at, so it learns nothing about the task's state."""
    if principal.role is not Role.AGENT or principal.bench_id != task.bench_id:
        raise Forbidden(
            f"task {task.task_id} runs on bench {task.bench_id!r}; only its agent reports on it"
        )


def check_may_claim(principal: Principal, bench_id: str) -> None:
    if principal.role is not Role.AGENT or principal.bench_id != bench_id:
        raise Forbidden(f"only the agent of bench {bench_id!r} claims its tasks")
