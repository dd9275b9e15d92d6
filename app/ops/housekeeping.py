"""Housekeeping: the chores that time makes necessary. Every write here is conditional, so
any number of API processes may run it at once; a lost race just means another did it."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import asdict, dataclass

from app.benches.domain import Bench
from app.clock import Clock
from app.deps import bench_service, execution_service, health_service, reservation_service
from app.errors import AppError
from app.executions.domain import ExecutionStatus
from app.identity import Actor, Principal, Role
from app.ops.metrics import Metrics
from app.settings import Settings
from app.store.base import Store, StoreError

logger = logging.getLogger("app.ops.housekeeping")

HOUSEKEEPER = Principal("housekeeping", Role.ADMIN)
# One pass handles at most this many items of each kind; the next pass continues.
BATCH = 500


@dataclass(frozen=True, slots=True)
class HousekeepingReport:
    leases_expired: int = 0
    executions_timed_out: int = 0
    reservations_completed: int = 0
    milestones_announced: int = 0
    reservations_advanced: int = 0
    no_shows_released: int = 0
    idle_holds_handled: int = 0
    liveness_changes_recorded: int = 0
    reservations_protected: int = 0
    health_checks_requested: int = 0
    expired_records_purged: int = 0


class Housekeeper:
    def __init__(
        self, store: Store, clock: Clock, settings: Settings, metrics: Metrics | None = None
    ) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._metrics = metrics
        self._executions = execution_service(store, clock, settings)
        self._reservations = reservation_service(store, clock, settings)
        self._benches = bench_service(store, clock)
        self._health = health_service(store, clock, settings)

    async def run_once(self) -> HousekeepingReport:
        actor = Actor(HOUSEKEEPER, request_id=f"housekeeping-{uuid.uuid4()}")
        benches: list[Bench] = []
        report = HousekeepingReport(
            leases_expired=await self._expire_leases(actor),
            executions_timed_out=await self._time_out_executions(actor),
            reservations_completed=await self._complete_reservations(actor),
            milestones_announced=await self._reservations.announce_milestones(
                actor, self._settings.ending_soon, BATCH
            ),
            no_shows_released=await self._reservations.scheduler.release_no_shows(),
            idle_holds_handled=await self._reservations.scheduler.release_idle(),
            reservations_advanced=await self._reservations.scheduler.advance(),
            liveness_changes_recorded=await self._record_liveness(actor, benches),
            reservations_protected=await self._health.sweep(benches),
            health_checks_requested=await self._health.request_checks(),
            expired_records_purged=await self._store.purge_expired(self._clock.now()),
        )
        if self._metrics is not None:
            self._metrics.count_housekeeping(asdict(report))
        return report

    async def _complete_reservations(self, actor: Actor) -> int:
        completed = 0
        for reservation in await self._store.reservations.find_ended(self._clock.now(), BATCH):
            try:
                if await self._reservations.mark_completed(reservation, actor) is not None:
                    completed += 1
            except AppError as error:
                logger.info("not completed: %s", error.detail)
        return completed

    async def _record_liveness(self, actor: Actor, seen: list[Bench]) -> int:
        """Record liveness transitions; ``seen`` gets every bench as read (the health
        sweep that follows decides on them, so they are read once a pass)."""
        recorded = 0
        after: str | None = None
        while True:
            page = await self._benches.find(limit=100, after=after)
            seen += page.items
            for bench in page.items:
                try:
                    if await self._benches.record_liveness(bench, actor) is not None:
                        recorded += 1
                except AppError as error:
                    logger.info("liveness not recorded: %s", error.detail)
            if page.next_after is None:
                return recorded
            after = page.next_after

    async def _expire_leases(self, actor: Actor) -> int:
        expired = 0
        for task in await self._store.executions.find_expired_leases(self._clock.now(), BATCH):
            try:
                if await self._executions.expire_lease(task, actor) is not None:
                    expired += 1
            except AppError as error:  # another process got there first, or it moved on
                logger.info("lease not expired: %s", error.detail, extra={"task": task.task_id})
        return expired

    async def _time_out_executions(self, actor: Actor) -> int:
        timed_out = 0
        after: str | None = None
        seen = 0
        while seen < BATCH:
            page = await self._executions.find(
                status=ExecutionStatus.RUNNING, limit=100, after=after
            )
            for execution in page.items:
                seen += 1
                try:
                    if await self._executions.time_out(execution, actor) is not None:
                        timed_out += 1
                except (AppError, StoreError) as error:
                    logger.info(
                        "not timed out: %s", error, extra={"execution": execution.execution_id}
                    )
            if page.next_after is None:
                break
            after = page.next_after
        return timed_out


async def run_forever(housekeeper: Housekeeper, interval_s: float) -> None:
    """The loop each API process runs; jittered so replicas do not fire in step."""
    while True:
        await asyncio.sleep(interval_s * random.uniform(0.8, 1.2))
        try:
            report = await housekeeper.run_once()
        except Exception:  # the loop must outlive a bad pass; the next one retries
            logger.exception("housekeeping pass failed")
            continue
        if report != HousekeepingReport():
            logger.info("housekeeping", extra={"report": asdict(report)})
