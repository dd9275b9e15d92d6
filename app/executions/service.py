"""Execution and task use-cases. Each reads what it decides from, then writes one change
set conditioned on every version it read: a lost race is retried on fresh state."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.benches.domain import AdminState
from app.clock import Clock
from app.errors import Conflict, InvalidInput, NotFound
from app.executions.changes import EXECUTION_AUDIT, TASK_AUDIT, ChangeSet, settle
from app.executions.domain import (
    MAX_TASK_TIMEOUT_S,
    Execution,
    ExecutionStatus,
    Task,
    TaskSpec,
    TaskStatus,
    cancel_task,
    check_may_claim,
    check_may_launch,
    check_may_report,
    check_may_work_on,
    claim,
    complete,
    expire,
    extend,
    fail,
    new_execution,
    report,
    timed_out,
    transition,
)
from app.executions.ordering import OpenRun, held_back, next_task, runs_to_read
from app.history.domain import HistoryEntry
from app.identity import Actor
from app.ids import sortable_uuid
from app.kit.concurrency import check_expectation, retrying, stale
from app.kit.idempotency import IdempotencyClaim, create_once
from app.kit.paging import page_of
from app.reservations.domain import Reservation, ReservationStatus
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

logger = logging.getLogger("app.executions")


@dataclass(frozen=True, slots=True)
class NewExecution:
    reservation_id: str
    commit_sha: str
    pipeline_url: str | None
    metadata: dict[str, Any]
    tasks: list[TaskSpec]


class ExecutionService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        lease: timedelta,
        on_finished: Callable[[Execution], Awaitable[None]] | None = None,
    ) -> None:
        """``on_finished`` sees each run this service ends, once committed (bench health
        counts its verdict for or against the bench)."""
        self._store = store
        self._clock = clock
        self._lease = lease
        self._on_finished = on_finished

    async def _finished(self, before: Execution, after: Execution) -> None:
        if self._on_finished is None or before.status.is_terminal:
            return
        if after.status.is_terminal:
            try:
                await self._on_finished(after)
            except Exception:  # the run's end is committed whatever happens here
                logger.exception("after the end of %s", after.execution_id)

    def now(self) -> datetime:
        return self._clock.now()

    # --- executions ----------------------------------------------------------------------

    async def create(
        self, spec: NewExecution, actor: Actor, claim_: IdempotencyClaim | None
    ) -> tuple[Execution, list[Task], bool]:
        now = self._clock.now()
        execution_id = sortable_uuid(now)
        created: list[Task] = []

        async def store_new(record: IdempotencyRecord | None) -> Execution:
            # Checked here, after the key: a retry replays what its key made whatever the
            # reservation has become since (cancelled, ended).
            reservation = await self._store.reservations.get(spec.reservation_id)
            if reservation is None:
                raise NotFound(f"reservation {spec.reservation_id!r} does not exist")
            check_may_launch(actor.principal, reservation.user_id)
            status = reservation.status(now)
            if status not in (ReservationStatus.CONFIRMED, ReservationStatus.ACTIVE):
                raise Conflict(
                    f"reservation {reservation.reservation_id!r} is {status.value}",
                    reservation_status=status.value,
                )
            execution, tasks = new_execution(
                execution_id=execution_id,
                reservation_id=reservation.reservation_id,
                bench_id=reservation.bench_id,
                created_by=actor.subject,
                commit_sha=spec.commit_sha,
                pipeline_url=spec.pipeline_url,
                metadata=spec.metadata,
                tasks=spec.tasks,
                now=now,
            )
            changes = ChangeSet([Write(None, execution)], [Write(None, task) for task in tasks])
            changes.entries.append(EXECUTION_AUDIT.entry(execution, actor, "created", None))
            changes.entries += [TASK_AUDIT.entry(task, actor, "created", None) for task in tasks]
            await self._commit(changes, record=record)
            created.extend(tasks)
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
            return stored, created, False
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
        async def execution_exists() -> None:
            if await self._store.executions.get(execution_id) is None:
                raise NotFound(f"execution {execution_id!r} does not exist")

        return await page_of(
            execution_exists,
            lambda: self._store.history.find(
                EXECUTION_AUDIT.entity_type, execution_id, limit, after, now=self._clock.now()
            ),
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
            check_expectation(_what(execution_id), expectation, execution.version)
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
            await self._finished(execution, after)
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
            await self._finished(seen, after)
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
        """Lease the task the bench runs next (the domain's ``next_task``), or None.

        The change set is conditioned on everything the decision read that another claim
        could change: the leased task, and every other task that could be handed out now
        (checked at the versions read), so two racing claims never both take the bench's
        last free slot, nor one task twice."""
        principal = actor.principal
        check_may_claim(principal, bench_id)

        async def attempt() -> Task | None:
            now = self._clock.now()
            bench = await self._store.benches.get(bench_id)
            if bench is None:
                raise NotFound(f"bench {bench_id!r} does not exist")
            reservations = await self._reservations_reaching(bench_id, now)
            active = [r for r in reservations if r.status(now) is ReservationStatus.ACTIVE]
            runs = await self._open_runs(active, bench.concurrency, claimable=True)
            quarantined = bench.quarantine if bench.admin_state is AdminState.QUARANTINED else None
            runs = held_back(runs, None if quarantined is None else quarantined.since)
            decision = next_task(runs, bench.concurrency)
            ended = [r for r in reservations if r not in active]
            if decision is not None and ended:
                # Runs of reservations that have ended hand out nothing, but the leases
                # they still hold count against the bench: read them only when it matters.
                runs += await self._open_runs(ended, bench.concurrency, claimable=False)
                decision = next_task(runs, bench.concurrency)
            if decision is None:
                return None
            execution, pending = decision.execution, decision.task
            leased = claim(pending, principal.subject, now, self._lease)
            changes = ChangeSet()
            changes.change_task(pending, leased, actor, "claimed")
            for other in decision.pinned:
                changes.check_task(other)
            if execution.status is ExecutionStatus.QUEUED:
                started = transition(execution, ExecutionStatus.RUNNING, now)
                changes.change_execution(execution, started, actor, "started")
            await self._commit(changes)
            return leased

        return await retrying(attempt, f"the task queue of bench {bench_id!r}")

    async def _reservations_reaching(self, bench_id: str, now: datetime) -> list[Reservation]:
        """The bench's reservations under way now, or ended recently enough that a run of
        theirs may still hold a lease (a lease never outlives its attempt's timeout)."""
        query = ReservationQuery(
            bench_id=bench_id,
            ends_after=now - timedelta(seconds=MAX_TASK_TIMEOUT_S),
            starts_before=now + timedelta(microseconds=1),
        )
        found: list[Reservation] = []
        after: str | None = None
        while True:
            page = await self._store.reservations.find(query, 100, after)
            found += page.items
            if page.next_after is None:
                return found
            after = page.next_after

    async def _open_runs(
        self, reservations: Sequence[Reservation], concurrency: int, *, claimable: bool
    ) -> list[OpenRun]:
        """The runs of these reservations that a claim decides on (``runs_to_read``), with
        their tasks: one read of candidates per reservation, however long its queue."""
        executions: list[Execution] = []
        for reservation in reservations:
            candidates = await self._store.executions.find_claim_candidates(
                reservation.reservation_id, concurrency if claimable else 0
            )
            executions += runs_to_read(candidates, concurrency, claimable=claimable)
        wanted = [task_id for execution in executions for task_id in execution.task_ids]
        tasks = {task.task_id: task for task in await self._store.executions.get_tasks(wanted)}
        return [
            OpenRun(execution, tuple(tasks[i] for i in execution.task_ids if i in tasks), claimable)
            for execution in executions
        ]

    async def heartbeat(self, task_id: str, actor: Actor) -> Task:
        async def attempt() -> Task:
            task = await self._task(task_id)
            check_may_work_on(actor.principal, task)
            extended = extend(task, actor.subject, self._clock.now(), self._lease)
            changes = ChangeSet()
            changes.change_task(task, extended, actor, "lease_extended")
            await self._commit(changes)
            return extended

        return await retrying(attempt, f"task {task_id!r}")

    async def complete(self, task_id: str, result: dict[str, Any], actor: Actor) -> Task:
        task, _ = await self._finish(
            task_id,
            actor,
            lambda task, now, by: complete(task, actor.subject, now, result, by),
            "completed",
        )
        return task

    async def fail(self, task_id: str, error: str, retryable: bool, actor: Actor) -> Task:
        task, _ = await self._finish(
            task_id,
            actor,
            lambda task, now, by: fail(task, actor.subject, now, error, retryable, by),
            "failed",
        )
        return task

    async def expire_lease(self, task: Task, actor: Actor) -> Task | None:
        """Housekeeping: a lease that ran out puts the task back, or kills it. None if the
        lease is still live (a heartbeat came in) or the task has moved on."""
        if task.lease_live(self._clock.now()):
            return None
        expired, changed = await self._finish(
            task.task_id,
            actor,
            lambda current, now, _: expire(current, now),
            "expired",
            by_agent=False,
        )
        return expired if changed else None

    async def _finish(
        self,
        task_id: str,
        actor: Actor,
        decide: Callable[[Task, datetime, str | None], Task],
        action: str,
        *,
        by_agent: bool = True,
    ) -> tuple[Task, bool]:
        """The task as stored after ``decide``, and whether this call changed it: a report
        whose effect already holds (``decide`` returns the task itself) writes nothing."""

        async def attempt() -> tuple[Task, bool]:
            now = self._clock.now()
            task = await self._task(task_id)
            if by_agent:
                check_may_work_on(actor.principal, task)
            reported_by = None if task.status is TaskStatus.LEASED else await self._reporter(task)
            after = decide(task, now, reported_by)
            if after is task:
                return task, False
            execution = await self._store.executions.get(task.execution_id)
            assert execution is not None  # tasks are written with their execution
            tasks = await self._store.executions.get_tasks(execution.task_ids)
            changes = ChangeSet()
            changes.change_task(task, after, actor, action)
            settled = settle(changes, execution, tasks, after, actor, now)
            if settled is not execution:
                changes.change_execution(execution, settled, actor, "verdict")
            await self._commit(changes)
            await self._finished(execution, settled)
            return after, True

        return await retrying(attempt, f"task {task_id!r}")

    async def _reporter(self, task: Task) -> str | None:
        """Who made the task's current version by completing or failing it, if anyone:
        the one caller whose repeated report is answered with the task as it is."""
        entries = await self._store.history.find(
            TASK_AUDIT.entity_type, task.task_id, 1, task.version - 1, now=self._clock.now()
        )
        entry = next(iter(entries.items), None)
        if entry is None or entry.version != task.version:
            return None
        return entry.actor if entry.action in ("completed", "failed") else None

    async def get_task(self, task_id: str) -> Task:
        return await self._task(task_id)

    async def task_history(self, task_id: str, limit: int, after: int | None) -> Page[HistoryEntry]:
        return await page_of(
            lambda: self._task(task_id),
            lambda: self._store.history.find(
                TASK_AUDIT.entity_type, task_id, limit, after, now=self._clock.now()
            ),
        )

    async def _task(self, task_id: str) -> Task:
        task = await self._store.executions.get_task(task_id)
        if task is None:
            raise NotFound(f"task {task_id!r} does not exist")
        return task


def _what(execution_id: str) -> str:
    return f"execution {execution_id!r}"
