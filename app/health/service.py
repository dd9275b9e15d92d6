"""Bench health use-cases: health reports and run outcomes (and the quarantine they may
call for), bookings on unfit benches (marked at risk, healed onto an equivalent bench,
or offered alternatives), maintenance windows, and a bench's record (record.py).

Every write is the store's conditional one, so any number of API processes may do this
at once: two heals racing for one spare bench cannot both take it (the calendar
decides), and the loser is left at risk with alternatives to offer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from app.benches.domain import (
    AdminState,
    Bench,
    BenchChanges,
    HealthReport,
    MaintenanceWindow,
    Quarantine,
    health_report,
)
from app.benches.service import BenchService
from app.clock import Clock
from app.errors import Conflict, InvalidInput, NotFound
from app.executions.domain import Execution
from app.health.domain import (
    INFRASTRUCTURE_FAILURES,
    HealthRules,
    clears_itself,
    displaced,
    exposed,
    fit_for,
    heals_itself,
    marked,
    needed_capabilities,
    quarantine_for_report,
    quarantine_for_runs,
    recovered,
    remaining_window,
    risk_of,
    swapped,
)
from app.health.record import BenchRecords
from app.history.domain import HistoryEntry
from app.identity import Actor, Principal, Role
from app.ids import sortable_uuid
from app.kit.concurrency import change_versioned
from app.kit.idempotency import IdempotencyClaim, create_once
from app.reservations.domain import (
    CLOCK_SKEW,
    LONGEST_WINDOW,
    Reservation,
    ReservationKind,
    ReservationState,
    ReservationStatus,
    Window,
    check_may_change,
    check_not_maintenance,
)
from app.reservations.scheduler import Scheduler
from app.reservations.scheduling import Placement
from app.reservations.trail import AUDIT, window_taken
from app.store.base import (
    BenchNotBookable,
    BenchQuery,
    IdempotencyRecord,
    ItemNotFound,
    ReservationQuery,
    Store,
    VersionMismatch,
    WindowTaken,
)
from app.versioning import VersionExpectation

logger = logging.getLogger("app.health")

MONITOR = Principal("health-monitor", Role.ADMIN)
# Candidate benches read for one heal or one list of alternatives.
MAX_CANDIDATES = 200
# Peers (benches of the same type) a bench's record is compared with.
MAX_PEERS = 50
BATCH = 500
# Where "the nearest windows" are looked for, after the booking's own.
NEAREST_SEARCH = timedelta(days=7)
STATS_PERIODS = {"7d": timedelta(days=7), "30d": timedelta(days=30)}


@dataclass(frozen=True, slots=True)
class Alternative:
    bench_id: str
    window: Window
    same_window: bool


@dataclass(frozen=True, slots=True)
class Displacement:
    """What a maintenance window does to a booking in its way: ``swapped`` to
    ``bench_id``, or ``cancelled``."""

    reservation: Reservation
    outcome: str
    bench_id: str | None = None


@dataclass(frozen=True, slots=True)
class MaintenancePlan:
    window: MaintenanceWindow
    displaced: list[Displacement]
    bench: Bench | None = None  # after the real run
    reservation: Reservation | None = None  # the one holding the window (real run)


def _monitor(request: str) -> Actor:
    return Actor(MONITOR, request_id=f"health-{request}")


class HealthService(BenchRecords):
    def __init__(
        self,
        store: Store,
        clock: Clock,
        rules: HealthRules,
        benches: BenchService,
        scheduler: Scheduler,
    ) -> None:
        self._store = store
        self._clock = clock
        self._rules = rules
        self._benches = benches
        self._scheduler = scheduler

    def now(self) -> datetime:
        return self._clock.now()

    # --- signals -------------------------------------------------------------------------

    async def record_heartbeat(
        self, bench_id: str, principal: Principal, agent_version: str, details: dict[str, Any]
    ) -> tuple[Bench, bool]:
        """The heartbeat, its health report kept; (the bench, whether the agent should run
        its health command now). A failing report may quarantine the bench and heals its
        bookings before their holders arrive; passing ones may end an automatic
        quarantine."""
        report = health_report(details)
        bench = await self._benches.record_heartbeat(
            bench_id, principal, agent_version, details, report
        )
        if report is not None:
            bench = await self._after_report(bench, report)
        return bench, bench.check_requested(self._clock.now(), self._rules.pre_booking_check)

    async def _after_report(self, bench: Bench, report: HealthReport) -> Bench:
        now = self._clock.now()
        quarantine = quarantine_for_report(bench, report, self._rules, now)
        if quarantine is not None:
            return await self._quarantine(bench, quarantine)
        if clears_itself(bench, self._rules):
            actor = _monitor(f"clear-{bench.bench_id}")
            changes = BenchChanges(admin_state=AdminState.ACTIVE)
            try:
                return await self._benches.update(bench.bench_id, changes, None, actor)
            except Conflict:
                return bench
        if bench.health is not None and bench.health.failures == 1:
            await self.protect(bench)  # the first failing report: heal before the window
        return bench

    async def record_run_outcome(self, execution: Execution) -> None:
        """A run ended: count it for or against its bench, which may quarantine it."""
        if not execution.status.is_terminal:
            return
        failure = execution.status in INFRASTRUCTURE_FAILURES
        try:
            bench = await self._store.benches.record_run_outcome(execution.bench_id, failure)
        except ItemNotFound:
            return
        quarantine = quarantine_for_runs(
            bench, self._rules, self._clock.now(), [execution.execution_id]
        )
        if quarantine is not None:
            await self._quarantine(bench, quarantine)

    async def admin_state_moved(self, before: Bench, after: Bench) -> None:
        """After an admin's change of admin state: a quarantine that ends restarts the
        failure counts (the next failing reports have to add up again), and a bench that
        became unfit protects its bookings."""
        if before.admin_state is AdminState.QUARANTINED:
            await self._store.benches.restart_failure_runs(after.bench_id)
        await self.protect(after)

    async def _quarantine(self, bench: Bench, quarantine: Quarantine) -> Bench:
        actor = _monitor(f"quarantine-{bench.bench_id}")
        changes = BenchChanges(admin_state=AdminState.QUARANTINED, quarantine=quarantine)
        try:
            quarantined = await self._benches.update(bench.bench_id, changes, None, actor)
        except Conflict:  # retired meanwhile
            return bench
        logger.warning("bench %s quarantined: %s", bench.bench_id, quarantine.reason)
        await self.protect(quarantined)
        return quarantined

    async def request_checks(self) -> int:
        """Housekeeping: ask the agents of benches whose window starts soon to check
        health (their heartbeats' answers say so until a report comes)."""
        pre_check = self._rules.pre_booking_check
        if pre_check <= timedelta(0):
            return 0
        now = self._clock.now()
        soonest: dict[str, datetime] = {}
        for reservation in await self._store.reservations.find_started(now, now + pre_check, BATCH):
            if reservation.kind is ReservationKind.BOOKING:
                soonest.setdefault(reservation.bench_id, reservation.start)
        for bench_id, start in soonest.items():
            await self._store.benches.request_health_check(bench_id, start)
        return len(soonest)

    # --- bookings on unfit benches -------------------------------------------------------

    async def sweep(self, benches: Sequence[Bench]) -> int:
        """Housekeeping: protect the bookings of every unfit bench, and clear the marks of
        bookings whose bench is fit again. How many reservations changed."""
        now = self._clock.now()
        by_id = {bench.bench_id: bench for bench in benches}
        changed = 0
        for bench in benches:
            if risk_of(bench, now) is not None:
                changed += await self.protect(bench)
        for reservation in await self._store.reservations.find_at_risk(BATCH):
            holder = by_id.get(reservation.bench_id) or await self._store.benches.get(
                reservation.bench_id
            )
            if holder is None or risk_of(holder, now) is not None:
                continue
            if await self._flag(reservation, recovered(reservation), "reservation.recovered"):
                changed += 1
        return changed

    async def protect(self, bench: Bench) -> int:
        """Mark the bench's exposed bookings at risk, and move those that heal themselves
        to an equivalent bench. How many reservations changed."""
        now = self._clock.now()
        reason = risk_of(bench, now)
        if reason is None:
            return 0
        changed = 0
        for reservation in await self._exposed(bench.bench_id, now):
            at_risk = marked(reservation, reason, now)
            if at_risk is not reservation:
                if not await self._flag(reservation, at_risk, "reservation.at_risk"):
                    continue
                changed += 1
            if heals_itself(at_risk) and await self.heal(at_risk, bench) is not None:
                changed += 1
        return changed

    async def heal(self, reservation: Reservation, bench: Bench | None) -> Reservation | None:
        """Move an at-risk booking to an equivalent bench free for its window, atomically;
        None when none is (it stays at risk, and alternatives are offered)."""
        now = self._clock.now()
        needs = needed_capabilities(reservation, bench)
        window = remaining_window(reservation, now)
        for candidate in await self._equivalents(reservation, needs, now):
            busy = await self._scheduler.busy([candidate.bench_id], window)
            if any(taken.overlaps(window) for taken in busy[candidate.bench_id]):
                continue
            after = swapped(reservation, candidate.bench_id, now)
            try:
                await self._update(reservation, after, "swapped", _monitor(after.reservation_id))
            except WindowTaken:
                continue  # another heal (or a booking) took it first: the next one
            except (VersionMismatch, ItemNotFound, BenchNotBookable):
                return None
            logger.info(
                "swapped %s from %s to %s",
                after.reservation_id,
                bench and bench.bench_id,
                after.bench_id,
            )
            return after
        return None

    async def alternatives(self, reservation_id: str) -> list[Alternative]:
        """Benches that fit the booking's window, else the nearest windows on fit ones."""
        reservation = await self._reservation(reservation_id)
        now = self._clock.now()
        bench = await self._store.benches.get(reservation.bench_id)
        needs = needed_capabilities(reservation, bench)
        window = remaining_window(reservation, now)
        candidates = [b.bench_id for b in await self._equivalents(reservation, needs, now)]
        if not candidates:
            return []
        busy = await self._scheduler.busy(candidates, window)
        free = [
            Alternative(bench_id, window, True)
            for bench_id in candidates
            if not any(taken.overlaps(window) for taken in busy[bench_id])
        ]
        if free:
            return free
        nearest: list[Placement] = []
        start = max(window.start, now)
        for bench_id in candidates:
            placement = await self._scheduler.earliest(
                [bench_id], window.duration, start, start + NEAREST_SEARCH
            )
            if placement is not None:
                nearest.append(placement)
        nearest.sort(key=lambda p: (p.window.start, p.bench_id))
        return [Alternative(p.bench_id, p.window, False) for p in nearest[:5]]

    async def swap(
        self,
        reservation_id: str,
        bench_id: str,
        expectation: VersionExpectation | None,
        actor: Actor,
    ) -> Reservation:
        """The holder moves the booking to ``bench_id`` for the same window, atomically."""
        target = await self._store.benches.get(bench_id)

        def decide(reservation: Reservation) -> Reservation:
            now = self._clock.now()
            if target is None:  # said after authorization: who may not swap learns 403
                raise NotFound(f"bench {bench_id!r} does not exist")
            status = reservation.status(now)
            if status not in (ReservationStatus.CONFIRMED, ReservationStatus.ACTIVE):
                raise Conflict(f"a {status.value} reservation cannot be swapped")
            check_not_maintenance(reservation)
            if reservation.bench_id == bench_id:
                return reservation
            reason = risk_of(target, now)
            if reason is not None:
                raise Conflict(f"bench {bench_id!r} is not fit: {reason.value}", reason=reason)
            missing = reservation.capabilities - target.capabilities
            if missing:
                raise Conflict(
                    f"bench {bench_id!r} lacks " + ", ".join(sorted(missing)),
                    missing_capabilities=sorted(missing),
                )
            return swapped(reservation, bench_id, now)

        async def write(before: Reservation, after: Reservation) -> None:
            try:
                await self._update(before, after, "swapped", actor)
            except WindowTaken as taken:
                raise window_taken(after.bench_id, taken) from taken
            except BenchNotBookable as refused:
                raise Conflict(f"bench {bench_id!r} cannot be booked") from refused

        return await change_versioned(
            load=lambda: self._store.reservations.get(reservation_id),
            decide=decide,
            write=write,
            expectation=expectation,
            what=f"reservation {reservation_id!r}",
            authorize=lambda reservation: check_may_change(actor.principal, reservation),
        )

    # --- maintenance ---------------------------------------------------------------------

    async def maintenance(
        self,
        bench_id: str,
        window: Window,
        reason: str,
        dry_run: bool,
        actor: Actor,
        claim: IdempotencyClaim | None = None,
    ) -> MaintenancePlan:
        """Book the bench for maintenance. The bookings in the way move to an equivalent
        bench, or are cancelled (``reservation.displaced``) when none is free; a dry run
        says which would, and changes nothing. A retry with the Idempotency-Key of a
        real run answers the window it made (what it displaced was said the first time)."""
        if dry_run or claim is None:
            return await self._maintenance(bench_id, window, reason, dry_run, actor, None)
        made: list[MaintenancePlan] = []

        async def create(record: IdempotencyRecord | None) -> Reservation:
            plan = await self._maintenance(bench_id, window, reason, False, actor, record)
            made.append(plan)
            blocker = await self._store.reservations.get(plan.window.reservation_id)
            assert blocker is not None
            return blocker

        blocker, replayed = await create_once(
            claim,
            resource_id=sortable_uuid(self._clock.now()),
            now=self._clock.now(),
            lookup=self._store.idempotency.get,
            create=create,
            load=self._store.reservations.get,
        )
        if not replayed:
            return made[0]
        listed = MaintenanceWindow(
            blocker.reservation_id, blocker.start, blocker.end, blocker.purpose
        )
        return MaintenancePlan(listed, [], await self._benches.get(blocker.bench_id), blocker)

    async def _maintenance(
        self,
        bench_id: str,
        window: Window,
        reason: str,
        dry_run: bool,
        actor: Actor,
        record: IdempotencyRecord | None,
    ) -> MaintenancePlan:
        now = self._clock.now()
        if window.end <= window.start:
            raise InvalidInput("end must be after start")
        if window.start < now - CLOCK_SKEW:
            raise InvalidInput("start is in the past")
        if window.duration > LONGEST_WINDOW:
            raise InvalidInput("a maintenance window may last at most 31 days")
        bench = await self._benches.get(bench_id)
        if bench.admin_state is AdminState.RETIRED:
            raise Conflict(f"bench {bench_id!r} is retired")
        blocker_id = sortable_uuid(now) if record is None else record.resource_id
        planned = MaintenanceWindow(blocker_id, window.start, window.end, reason)
        for _ in range(3):
            in_way = await self._in_the_way(bench, window)
            plan = await self._plan(bench, in_way, planned)
            if dry_run:
                return plan
            done = [await self._displace(item, bench) for item in plan.displaced]
            blocker = Reservation(
                reservation_id=blocker_id,
                bench_id=bench_id,
                user_id=actor.subject,
                start=window.start,
                end=window.end,
                purpose=reason,
                state=ReservationState.BOOKED,
                version=1,
                created_at=now,
                updated_at=now,
                kind=ReservationKind.MAINTENANCE,
            )
            try:
                await self._store.reservations.create(
                    blocker, AUDIT.entry(blocker, actor, "created", None), record
                )
            except WindowTaken:
                continue  # a booking came in meanwhile: move it too
            except BenchNotBookable as refused:
                raise Conflict(f"bench {bench_id!r} cannot be booked for maintenance") from (
                    refused
                )
            listed = await self._benches.schedule_maintenance(bench_id, planned, actor)
            return MaintenancePlan(planned, done, listed, blocker)
        raise Conflict("the bench is being booked too fast to schedule maintenance; retry")

    async def _in_the_way(self, bench: Bench, window: Window) -> list[Reservation]:
        found = await self._holding(bench.bench_id, window)
        blockers = [r for r in found if r.kind is ReservationKind.MAINTENANCE]
        if blockers:
            raise Conflict(
                "a maintenance window overlaps: " + ", ".join(r.reservation_id for r in blockers),
                conflicts=[
                    {"reservation_id": r.reservation_id, "start": r.start, "end": r.end}
                    for r in blockers
                ],
            )
        return found

    async def _plan(
        self, bench: Bench, in_way: list[Reservation], planned: MaintenanceWindow
    ) -> MaintenancePlan:
        """Where each booking in the way would go: the first equivalent bench free for it
        (counting the moves planned before it), else nowhere."""
        now = self._clock.now()
        taken: dict[str, list[Window]] = {}
        displaced_: list[Displacement] = []
        windows = [remaining_window(reservation, now) for reservation in in_way]
        if windows:  # every candidate's calendar over all of them, read once
            span = Window(min(w.start for w in windows), max(w.end for w in windows))
        for reservation, window in zip(in_way, windows, strict=True):
            needs = needed_capabilities(reservation, bench)
            target = None
            for candidate in await self._equivalents(reservation, needs, now):
                if candidate.bench_id not in taken:
                    busy = await self._scheduler.busy([candidate.bench_id], span)
                    taken[candidate.bench_id] = busy[candidate.bench_id]
                if not any(w.overlaps(window) for w in taken[candidate.bench_id]):
                    target = candidate.bench_id
                    taken[target].append(window)
                    break
            outcome = "swapped" if target is not None else "cancelled"
            displaced_.append(Displacement(reservation, outcome, target))
        return MaintenancePlan(planned, displaced_)

    async def _displace(self, item: Displacement, bench: Bench) -> Displacement:
        actor = _monitor(f"maintenance-{item.reservation.reservation_id}")
        reservation = item.reservation
        if item.bench_id is not None:
            after = swapped(reservation, item.bench_id, self._clock.now())
            try:
                await self._update(reservation, after, "swapped", actor, reason="maintenance")
                return Displacement(after, "swapped", item.bench_id)
            except (WindowTaken, BenchNotBookable):
                healed = await self.heal(reservation, bench)
                if healed is not None:
                    return Displacement(healed, "swapped", healed.bench_id)
            except (VersionMismatch, ItemNotFound):
                pass
        current = await self._store.reservations.get(reservation.reservation_id) or reservation
        if not current.holds_bench:
            return Displacement(current, current.state.value)
        cancelled = displaced(current, self._clock.now())
        await self._update(current, cancelled, "displaced", actor, reason="maintenance")
        return Displacement(cancelled, "cancelled")

    # --- reads and writes ----------------------------------------------------------------

    async def _reservation(self, reservation_id: str) -> Reservation:
        reservation = await self._store.reservations.get(reservation_id)
        if reservation is None:
            raise NotFound(f"reservation {reservation_id!r} does not exist")
        return reservation

    async def _exposed(self, bench_id: str, now: datetime) -> list[Reservation]:
        horizon = self._rules.at_risk_horizon
        found = await self._holding(bench_id, Window(now, now + horizon))
        return [r for r in found if exposed(r, now, horizon)]

    async def _holding(self, bench_id: str, window: Window) -> list[Reservation]:
        query = ReservationQuery(
            bench_id=bench_id, ends_after=window.start, starts_before=window.end, holding_only=True
        )
        found: list[Reservation] = []
        after: str | None = None
        while True:
            page = await self._store.reservations.find(query, BATCH, after)
            found += [r for r in page.items if r.holds_bench and r.window.overlaps(window)]
            if page.next_after is None:
                return found
            after = page.next_after

    async def _equivalents(
        self, reservation: Reservation, needs: frozenset[str], now: datetime
    ) -> list[Bench]:
        query = BenchQuery(capabilities=needs, admin_state=AdminState.ACTIVE.value)
        page = await self._store.benches.find(query, MAX_CANDIDATES, None)
        return [bench for bench in page.items if fit_for(bench, reservation, needs, now)]

    async def _flag(self, before: Reservation, after: Reservation, event_type: str) -> bool:
        """Mark or clear, raising ``event_type``: a lost race leaves it to the winner or
        the next pass (the holder's own change meanwhile is decided on again then)."""
        if after is before:
            return False
        actor = _monitor(after.reservation_id)
        event = AUDIT.event(event_type, after, actor, at=self._clock.now())
        try:
            await self._store.reservations.flag(before, after.at_risk, [event])
        except (VersionMismatch, ItemNotFound):
            return False
        return True

    async def _update(
        self,
        before: Reservation,
        after: Reservation,
        action: str,
        actor: Actor,
        reason: str | None = None,
    ) -> None:
        entry = AUDIT.entry(after, actor, action, before)
        why = reason or (before.at_risk.reason if before.at_risk is not None else None)
        if action in ("swapped", "displaced") and why is not None:
            entry = _with_data(entry, {"reason": why, "from_bench_id": before.bench_id})
        await self._store.reservations.update(before, after, entry)


def _with_data(entry: HistoryEntry, data: dict[str, Any]) -> HistoryEntry:
    changes = {**entry.changes, "reason": {"from": None, "to": data["reason"]}}
    event = entry.event
    if event is not None:
        event = replace(event, data={**event.data, **data})
    return replace(entry, changes=changes, event=event)
