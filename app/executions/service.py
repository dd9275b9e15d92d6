"""Execution and task use-cases. Each reads what it decides from, then writes one change
set conditioned on every version it read: a lost race is retried on fresh state."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.clock import Clock
from app.errors import Conflict, InvalidInput, NotFound
from app.executions.domain import (
    Execution,
    ExecutionStatus,
    Task,
    TaskSpec,
    TaskStatus,
    cancel_task,
    check_may_claim,
    check_may_launch,
    check_may_report,
    claim,
    complete,
    expire,
    extend,
    fail,
    new_execution,
    report,
    timed_out,
    transition,
    verdict,
)
from app.history.domain import AuditTrail, HistoryEntry
from app.identity import Actor
from app.ids import sortable_uuid
from app.kit.concurrency import retrying, stale
from app.kit.idempotency import IdempotencyClaim, create_once
from app.reservations.domain import ReservationStatus
from app.store.base import (
    ExecutionQuery,
    IdempotencyRecord,
    ItemNotFound,
    Page,
    ReservationQuery,
    Store,
    VersionMismatch,
    Write,
)
from app.versioning import VersionExpectation


@dataclass(frozen=True, slots=True)
class NewExecution:
    reservation_id: str
    commit_sha: str
    pipeline_url: str | None
    metadata: dict[str, Any]
    tasks: list[TaskSpec]


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


EXECUTION_AUDIT: AuditTrail[Execution] = AuditTrail(
    "execution", lambda execution: execution.execution_id, Execution.snapshot
)
TASK_AUDIT: AuditTrail[Task] = AuditTrail("task", lambda task: task.task_id, _task_snapshot)


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


class ExecutionService:
    def __init__(self, store: Store, clock: Clock, lease: timedelta) -> None:
        self._store = store
        self._clock = clock
        self._lease = lease

    def now(self) -> datetime:
        return self._clock.now()

    # --- executions ----------------------------------------------------------------------

    async def create(
        self, spec: NewExecution, actor: Actor, claim_: IdempotencyClaim | None
    ) -> tuple[Execution, list[Task], bool]:
        now = self._clock.now()
        reservation = await self._store.reservations.get(spec.reservation_id)
        if reservation is None:
            raise NotFound(f"reservation {spec.reservation_id!r} does not exist")
        principal = actor.principal
        check_may_launch(principal, reservation.user_id)
        status = reservation.status(now)
        if status not in (ReservationStatus.CONFIRMED, ReservationStatus.ACTIVE):
            raise Conflict(
                f"reservation {reservation.reservation_id!r} is {status.value}",
                reservation_status=status.value,
            )
        execution_id = sortable_uuid(now)
        execution, tasks = new_execution(
            execution_id=execution_id,
            reservation_id=reservation.reservation_id,
            bench_id=reservation.bench_id,
            created_by=principal.subject,
            commit_sha=spec.commit_sha,
            pipeline_url=spec.pipeline_url,
            metadata=spec.metadata,
            tasks=spec.tasks,
            now=now,
        )

        async def store_new(record: IdempotencyRecord | None) -> Execution:
            entries = [EXECUTION_AUDIT.entry(execution, actor, "created", None)]
            entries += [TASK_AUDIT.entry(task, actor, "created", None) for task in tasks]
            changes = ChangeSet([Write(None, execution)], [Write(None, task) for task in tasks])
            changes.entries += entries
            await self._commit(changes, record=record)
            return execution

        stored, replayed = await create_once(
            claim_,
            resource_id=execution_id,
            now=now,
            lookup=self._store.idempotency.get,
            create=store_new,
            load=self._store.executions.get,
        )
        if not replayed:
            return stored, tasks, False
        return stored, await self._store.executions.get_tasks(stored.task_ids), True

    async def get(self, execution_id: str) -> tuple[Execution, list[Task]]:
        execution = await self._store.executions.get(execution_id)
        if execution is None:
            raise NotFound(f"execution {execution_id!r} does not exist")
        return execution, await self._store.executions.get_tasks(execution.task_ids)

    async def find(
        self,
        *,
        reservation_id: str | None = None,
        bench_id: str | None = None,
        status: ExecutionStatus | None = None,
        limit: int,
        after: str | None,
    ) -> Page[Execution]:
        """Runs of a reservation, a bench or in a status: at least one (each is an index)."""
        if reservation_id is None and bench_id is None and status is None:
            raise InvalidInput("filter by reservation_id, bench_id or status")
        query = ExecutionQuery(reservation_id=reservation_id, bench_id=bench_id, status=status)
        return await self._store.executions.find(query, limit, after)

    async def history(self, execution_id: str, limit: int, after: int | None) -> Page[HistoryEntry]:
        await self.get(execution_id)
        return await self._store.history.find(
            EXECUTION_AUDIT.entity_type, execution_id, limit, after, now=self._clock.now()
        )

    async def update(
        self,
        execution_id: str,
        *,
        status: ExecutionStatus | None,
        artifacts_uri: str | None,
        summary: str | None,
        expectation: VersionExpectation | None,
        actor: Actor,
    ) -> tuple[Execution, list[Task]]:
        """A client-reported change: status along the state machine, artifacts, summary."""

        async def attempt() -> tuple[Execution, list[Task]]:
            now = self._clock.now()
            execution, tasks = await self.get(execution_id)
            check_may_report(actor.principal, execution)
            if expectation is not None and not expectation.allows(execution.version):
                raise stale(_what(execution_id), execution.version)
            after = report(
                execution,
                status=status,
                artifacts_uri=artifacts_uri,
                summary=summary,
                now=now,
            )
            if after is execution:
                return execution, tasks
            changes = ChangeSet()
            if after.status.is_terminal:
                for task in tasks:
                    if not task.status.is_terminal:
                        changes.change_task(task, cancel_task(task, now), actor, "cancelled")
            changes.change_execution(execution, after, actor, "updated")
            await self._commit(changes, expectation=expectation)
            return after, await self._store.executions.get_tasks(after.task_ids)

        return await retrying(attempt, _what(execution_id))

    async def cancel(
        self, execution_id: str, expectation: VersionExpectation | None, actor: Actor
    ) -> tuple[Execution, list[Task]]:
        return await self.update(
            execution_id,
            status=ExecutionStatus.CANCELLED,
            artifacts_uri=None,
            summary=None,
            expectation=expectation,
            actor=actor,
        )

    async def time_out(self, execution: Execution, actor: Actor) -> Execution | None:
        """Housekeeping: end a run that outlived its time budget. None if it need not."""
        seen = execution

        async def attempt() -> Execution | None:
            nonlocal seen
            now = self._clock.now()
            if not timed_out(seen, now):
                return None
            tasks = await self._store.executions.get_tasks(seen.task_ids)
            changes = ChangeSet()
            after = transition(seen, ExecutionStatus.TIMED_OUT, now)
            changes.change_execution(seen, after, actor, "timed_out")
            for task in tasks:
                if not task.status.is_terminal:
                    changes.change_task(task, cancel_task(task, now), actor, "cancelled")
            try:
                await self._commit(changes)
            except VersionMismatch as moved:
                # The run (or a task) moved meanwhile: decide again from the stored run.
                current = await self._store.executions.get(execution.execution_id)
                if current is None:
                    return None
                seen = current
                raise moved
            return after

        return await retrying(attempt, _what(execution.execution_id))

    async def _commit(
        self,
        changes: ChangeSet,
        *,
        expectation: VersionExpectation | None = None,
        record: IdempotencyRecord | None = None,
    ) -> None:
        """Every change set goes through here: one atomic apply, its outcomes in our terms.

        A VersionMismatch passes through for ``retrying`` to decide again, unless the
        client named a version with If-Match: then the moved execution is a 412.
        """
        try:
            await self._store.executions.apply(
                changes.executions, changes.tasks, changes.entries, record
            )
        except VersionMismatch as moved:
            if (
                expectation is not None
                and not expectation.any_version
                and isinstance(moved.current, Execution)
            ):
                raise stale(_what(moved.current.execution_id), moved.current.version) from moved
            raise
        except ItemNotFound as gone:
            raise NotFound(str(gone)) from gone

    # --- tasks ---------------------------------------------------------------------------

    async def claim_next(self, bench_id: str, actor: Actor) -> Task | None:
        """Lease the next pending task of a run on this bench's active reservation."""
        principal = actor.principal
        check_may_claim(principal, bench_id)

        async def attempt() -> Task | None:
            now = self._clock.now()
            for execution in await self._runnable(bench_id, now):
                tasks = await self._store.executions.get_tasks(execution.task_ids)
                pending = next((t for t in tasks if t.status is TaskStatus.PENDING), None)
                if pending is None:
                    continue
                leased = claim(pending, principal.subject, now, self._lease)
                changes = ChangeSet()
                changes.change_task(pending, leased, actor, "claimed")
                if execution.status is ExecutionStatus.QUEUED:
                    started = transition(execution, ExecutionStatus.RUNNING, now)
                    changes.change_execution(execution, started, actor, "started")
                await self._commit(changes)
                return leased
            return None

        return await retrying(attempt, f"the task queue of bench {bench_id!r}")

    async def _runnable(self, bench_id: str, now: datetime) -> list[Execution]:
        """Queued or running executions of the reservation active on the bench now."""
        active = await self._store.reservations.find(
            ReservationQuery(
                bench_id=bench_id,
                ends_after=now,
                starts_before=now + timedelta(microseconds=1),
                holding_only=True,
            ),
            10,
            None,
        )
        runnable: list[Execution] = []
        for reservation in active.items:
            if reservation.status(now) is not ReservationStatus.ACTIVE:
                continue
            after: str | None = None
            while True:
                page = await self._store.executions.find(
                    ExecutionQuery(reservation_id=reservation.reservation_id, open_only=True),
                    100,
                    after,
                )
                # The open index may lag a verdict by a moment: skip what has finished.
                runnable += [e for e in page.items if not e.status.is_terminal]
                if page.next_after is None:
                    break
                after = page.next_after
        return runnable

    async def heartbeat(self, task_id: str, actor: Actor) -> Task:
        async def attempt() -> Task:
            task = await self._task(task_id)
            extended = extend(task, actor.subject, self._clock.now(), self._lease)
            changes = ChangeSet()
            changes.change_task(task, extended, actor, "lease_extended")
            await self._commit(changes)
            return extended

        return await retrying(attempt, f"task {task_id!r}")

    async def complete(self, task_id: str, result: dict[str, Any], actor: Actor) -> Task:
        return await self._finish(
            task_id,
            actor,
            lambda task, now: complete(task, actor.subject, now, result),
            "completed",
        )

    async def fail(self, task_id: str, error: str, retryable: bool, actor: Actor) -> Task:
        return await self._finish(
            task_id,
            actor,
            lambda task, now: fail(task, actor.subject, now, error, retryable),
            "failed",
        )

    async def expire_lease(self, task: Task, actor: Actor) -> Task | None:
        """Housekeeping: a lease that ran out puts the task back, or kills it. None if the
        lease is still live (a heartbeat came in)."""
        if task.lease_live(self._clock.now()):
            return None
        try:
            return await self._finish(task.task_id, actor, lambda t, now: expire(t, now), "expired")
        except Conflict:
            return None

    async def _finish(
        self,
        task_id: str,
        actor: Actor,
        decide: Callable[[Task, datetime], Task],
        action: str,
    ) -> Task:
        async def attempt() -> Task:
            now = self._clock.now()
            task = await self._task(task_id)
            after = decide(task, now)
            if after == task:
                raise Conflict(f"task {task_id} has nothing to {action.removesuffix('d')}")
            execution = await self._store.executions.get(task.execution_id)
            assert execution is not None  # tasks are written with their execution
            tasks = await self._store.executions.get_tasks(execution.task_ids)
            changes = ChangeSet()
            changes.change_task(task, after, actor, action)
            settled = settle(changes, execution, tasks, after, actor, now)
            if settled is not execution:
                changes.change_execution(execution, settled, actor, "verdict")
            await self._commit(changes)
            return after

        return await retrying(attempt, f"task {task_id!r}")

    async def get_task(self, task_id: str) -> Task:
        return await self._task(task_id)

    async def task_history(self, task_id: str, limit: int, after: int | None) -> Page[HistoryEntry]:
        await self._task(task_id)
        return await self._store.history.find(
            TASK_AUDIT.entity_type, task_id, limit, after, now=self._clock.now()
        )

    async def _task(self, task_id: str) -> Task:
        task = await self._store.executions.get_task(task_id)
        if task is None:
            raise NotFound(f"task {task_id!r} does not exist")
        return task


def _what(execution_id: str) -> str:
    return f"execution {execution_id!r}"
