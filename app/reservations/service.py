"""Reservation use-cases: book (by bench or by capability), move, cancel, release, search.

The store decides conflicts atomically; this layer picks benches, validates windows with
the domain, and turns store outcomes into the errors users see.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from app.benches.domain import AdminState
from app.benches.service import BenchService
from app.clock import Clock
from app.errors import Conflict, InvalidInput, Unavailable
from app.health.domain import risk_of
from app.identity import Actor
from app.ids import sortable_uuid
from app.kit.concurrency import change_versioned
from app.kit.idempotency import IdempotencyClaim, create_once
from app.quotas.service import QuotaService
from app.reservations.domain import (
    DEFAULT_PRIORITY,
    LONGEST_WINDOW,
    AtRisk,
    Reservation,
    ReservationState,
    Window,
    cancel,
    check_in,
    check_may_change,
    check_not_maintenance,
    mark_completed,
    milestones_due,
    move,
    release,
    validate_window,
)
from app.reservations.reads import LONGEST_SEARCH, ReservationReads
from app.reservations.scheduler import Scheduler
from app.reservations.scheduling import check_priority
from app.reservations.trail import AUDIT, not_bookable, slots_problem, window_taken
from app.store.base import (
    BenchNotBookable,
    IdempotencyRecord,
    ItemNotFound,
    Store,
    VersionMismatch,
    WindowTaken,
)
from app.timeutil import rfc3339
from app.versioning import VersionExpectation

logger = logging.getLogger("app.reservations")

# Searches for an advancing booking's window before giving up with 503: each lost race
# means another booking took the window found, so this covers a burst of that many.
ADVANCING_ATTEMPTS = 32


@dataclass(frozen=True, slots=True)
class BookingRequest:
    """``window`` for a plain booking. An advancing one gives ``duration`` and lets the
    service find the earliest window from ``not_before`` (now when None) that starts by
    ``latest_start``; its ``window`` is then only the one asked about, if any."""

    window: Window | None
    purpose: str
    bench_id: str | None = None
    capabilities: frozenset[str] = frozenset()
    advance: bool = False
    duration: timedelta | None = None
    not_before: datetime | None = None
    latest_start: datetime | None = None
    priority: int = DEFAULT_PRIORITY
    allow_swap: bool = False


class ReservationService(ReservationReads):
    def __init__(
        self,
        store: Store,
        clock: Clock,
        max_duration: timedelta,
        quotas: QuotaService,
        scheduler: Scheduler,
        *,
        at_risk_horizon: timedelta = timedelta(hours=24),
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_duration = min(max_duration, LONGEST_WINDOW)
        self._quotas = quotas
        self.scheduler = scheduler
        self._at_risk_horizon = at_risk_horizon

    def now(self) -> datetime:
        return self._clock.now()

    # --- booking -------------------------------------------------------------------------

    async def book(
        self, request: BookingRequest, actor: Actor, claim: IdempotencyClaim | None
    ) -> tuple[Reservation, bool]:
        """Returns (reservation, replayed)."""
        now = self._clock.now()
        reservation_id = sortable_uuid(now)

        check_priority(actor.principal, request.priority)

        def draft(bench_id: str, window: Window | None = None) -> Reservation:
            window = window or request.window
            assert window is not None
            return Reservation(
                reservation_id=reservation_id,
                bench_id=bench_id,
                user_id=actor.subject,
                start=window.start,
                end=window.end,
                purpose=request.purpose,
                state=ReservationState.BOOKED,
                version=1,
                created_at=now,
                updated_at=now,
                advance=request.advance,
                priority=request.priority,
                not_before=request.not_before,
                capabilities=request.capabilities if request.bench_id is None else frozenset(),
                team=actor.principal.team,
                allow_swap=request.allow_swap,
            )

        async def create(record: IdempotencyRecord | None) -> Reservation:
            # Checked here, after the key: a retry replays what its key made, even once
            # the window has begun (a first request would now be "in the past").
            if request.advance:
                return await self._book_earliest(request, draft, actor, record)
            assert request.window is not None
            validate_window(request.window, now, self._max_duration)
            if request.bench_id is not None:
                return await self._book_bench(draft(request.bench_id), actor, record)
            return await self._book_any(request, draft, actor, record)

        return await create_once(
            claim,
            resource_id=reservation_id,
            now=now,
            lookup=self._store.idempotency.get,
            create=create,
            load=self._store.reservations.get,
        )

    async def _book_earliest(
        self,
        request: BookingRequest,
        draft: Callable[[str, Window | None], Reservation],
        actor: Actor,
        record: IdempotencyRecord | None,
    ) -> Reservation:
        """An advancing booking: the earliest free window now, moved up later by itself."""
        now = self._clock.now()
        duration = request.duration
        assert duration is not None
        if duration <= timedelta(0) or duration > self._max_duration:
            hours = self._max_duration.total_seconds() / 3600
            raise InvalidInput(f"duration must be positive and at most {hours:g} hours")
        earliest = max(now, request.not_before or now)
        horizon = earliest + LONGEST_SEARCH
        latest = request.latest_start or horizon
        if latest < earliest:
            raise InvalidInput("latest_start is before the earliest start (now, or not_before)")
        benches = await self.scheduler.usable_benches(
            request.bench_id or "", frozenset() if request.bench_id else request.capabilities
        )
        if request.bench_id is not None:
            bench = await self._store.benches.get(request.bench_id)
            if bench is None or bench.admin_state is not AdminState.ACTIVE:
                raise not_bookable(request.bench_id, bench)
        elif not benches:
            raise Conflict(
                "no active bench has all of: " + ", ".join(sorted(request.capabilities)),
                candidates_tried=[],
            )
        for attempt in range(ADVANCING_ATTEMPTS):
            # Another booking may take the window between the search and the write: search
            # again (after a short random pause, so that racing requests spread out).
            if attempt:
                await asyncio.sleep(random.uniform(0, 0.02 * min(attempt, 10)))
            placement = await self.scheduler.earliest(benches, duration, earliest, latest)
            if placement is None:
                found = await self.scheduler.earliest(benches, duration, earliest, horizon)
                when = "none within 31 days" if found is None else rfc3339(found.window.start)
                raise Conflict(
                    f"no window of that length starts by {rfc3339(latest)}; the earliest"
                    f" found: {when}",
                    earliest_start=None if found is None else rfc3339(found.window.start),
                    earliest_bench_id=None if found is None else found.bench_id,
                )
            reservation = draft(placement.bench_id, placement.window)
            try:
                await self._create(reservation, actor, record)
            except WindowTaken:
                continue
            return reservation
        raise Unavailable("the benches are being booked too fast; retry", retry_after_s=1)

    async def _create(
        self, reservation: Reservation, actor: Actor, record: IdempotencyRecord | None
    ) -> None:
        quota = await self._quotas.check_for(reservation, actor.principal.role)
        await self._store.reservations.create(
            reservation, AUDIT.entry(reservation, actor, "created", None), record, quota
        )

    async def _book_bench(
        self, reservation: Reservation, actor: Actor, record: IdempotencyRecord | None
    ) -> Reservation:
        """A bench booked by id while it is unfit is booked all the same, marked at risk
        at once when the window is near enough for its health to matter."""
        now = self._clock.now()
        if reservation.start < now + self._at_risk_horizon:
            bench = await self._store.benches.get(reservation.bench_id)
            reason = None if bench is None else risk_of(bench, now)
            if reason is not None:
                reservation = replace(reservation, at_risk=AtRisk(reason.value, now))
        try:
            await self._create(reservation, actor, record)
        except WindowTaken as taken:
            raise window_taken(reservation.bench_id, taken) from taken
        except BenchNotBookable as refused:
            raise not_bookable(reservation.bench_id, refused.bench) from refused
        return reservation

    async def _book_any(
        self,
        request: BookingRequest,
        draft: Callable[[str], Reservation],
        actor: Actor,
        record: IdempotencyRecord | None,
    ) -> Reservation:
        assert request.window is not None
        candidates = await self._active_benches(request.capabilities)
        if not candidates:
            raise Conflict(
                "no active bench has all of: " + ", ".join(sorted(request.capabilities)),
                candidates_tried=[],
            )
        tried: list[dict[str, Any]] = []
        now = self._clock.now()
        soon = request.window.start < now + self._at_risk_horizon
        ranked = await self._least_loaded_first(candidates, request.window)
        if soon:
            # Health matters this soon: fit benches first (a stable sort keeps the load order).
            ranked.sort(key=lambda bench: risk_of(bench, now) is not None)
        for bench in ranked:
            reservation = draft(bench.bench_id)
            reason = risk_of(bench, now) if soon else None
            if reason is not None:
                reservation = replace(reservation, at_risk=AtRisk(reason.value, now))
            try:
                await self._create(reservation, actor, record)
            except WindowTaken as taken:
                tried.append(
                    {"bench_id": bench.bench_id, "conflicts": slots_problem(taken.conflicts)}
                )
                continue
            except BenchNotBookable:
                tried.append({"bench_id": bench.bench_id, "conflicts": []})
                continue
            return reservation
        raise Conflict(
            "no bench with those capabilities is free for the whole window",
            candidates_tried=tried,
        )

    # --- changing ------------------------------------------------------------------------

    async def move(
        self,
        reservation_id: str,
        *,
        start: datetime | None,
        end: datetime | None,
        purpose: str | None,
        expectation: VersionExpectation | None,
        actor: Actor,
    ) -> Reservation:
        def decide(reservation: Reservation) -> Reservation:
            check_not_maintenance(reservation)
            return move(
                reservation,
                start=start,
                end=end,
                purpose=purpose,
                now=self._clock.now(),
                max_duration=self._max_duration,
            )

        return await self._change(
            reservation_id, decide, expectation, actor, "updated", by_holder=True
        )

    async def cancel(
        self, reservation_id: str, expectation: VersionExpectation | None, actor: Actor
    ) -> Reservation:
        def decide(reservation: Reservation) -> Reservation:
            return cancel(reservation, self._clock.now())

        return await self._change(
            reservation_id, decide, expectation, actor, "cancelled", by_holder=True
        )

    async def release(
        self, reservation_id: str, expectation: VersionExpectation | None, actor: Actor
    ) -> Reservation:
        def decide(reservation: Reservation) -> Reservation:
            return release(reservation, self._clock.now())

        return await self._change(
            reservation_id, decide, expectation, actor, "released", by_holder=True
        )

    async def mark_completed(self, reservation: Reservation, actor: Actor) -> Reservation | None:
        """Housekeeping: record that a window is over. None when it is not, or was done."""
        if mark_completed(reservation, self._clock.now()) is reservation:
            return None
        done = await self._change(
            reservation.reservation_id,
            lambda current: mark_completed(current, self._clock.now()),
            None,
            actor,
            "completed",
        )
        return done if done.state is ReservationState.COMPLETED else None

    async def announce_milestones(self, actor: Actor, ending_soon: timedelta, limit: int) -> int:
        """Housekeeping: raise ``reservation.started`` and ``.ending_soon`` once each. The
        conditional write decides who raises them: a replica that loses the race (or
        meets a reservation that just moved) leaves it to the winner or the next pass."""
        now = self._clock.now()
        raised = 0
        for reservation in await self._store.reservations.find_unannounced(
            now + ending_soon, limit
        ):
            due = milestones_due(reservation, now, ending_soon)
            if due is None:
                continue
            announced, types = due
            events = [AUDIT.event(type, reservation, actor, at=now) for type in types]
            try:
                await self._store.reservations.announce(reservation, announced, events)
            except (VersionMismatch, ItemNotFound):
                continue
            raised += len(events)
        return raised

    async def _change(
        self,
        reservation_id: str,
        decide: Callable[[Reservation], Reservation],
        expectation: VersionExpectation | None,
        actor: Actor,
        action: str,
        *,
        by_holder: bool = False,
    ) -> Reservation:
        """``by_holder``: only the owner or an admin may make this change (housekeeping's
        own changes are not asked)."""

        def authorize(reservation: Reservation) -> None:
            check_may_change(actor.principal, reservation)

        freed: list[str] = []

        async def write(before: Reservation, after: Reservation) -> None:
            grows = after.holds_bench and before.window.frees_time_of(after.window)
            quota = await self._quotas.check_for(after, actor.principal.role) if grows else None
            try:
                await self._store.reservations.update(
                    before, after, AUDIT.entry(after, actor, action, before), quota
                )
            except WindowTaken as taken:
                raise window_taken(after.bench_id, taken) from taken
            gives_up = not after.holds_bench or after.bench_id != before.bench_id
            if before.holds_bench and (gives_up or after.window.frees_time_of(before.window)):
                freed[:] = [before.bench_id]

        changed = await change_versioned(
            load=lambda: self._store.reservations.get(reservation_id),
            decide=decide,
            write=write,
            expectation=expectation,
            what=f"reservation {reservation_id!r}",
            authorize=authorize if by_holder else None,
        )
        if not changed.is_booking and not changed.holds_bench:
            # A maintenance window cancelled or released: the bench no longer lists it.
            await BenchService(self._store, self._clock).end_maintenance(
                changed.bench_id, changed.reservation_id, actor
            )
        if freed:
            await self._advance_after(freed[0])
        return changed

    async def _advance_after(self, bench_id: str) -> None:
        """Time freed on a bench: bookings waiting to advance may move up now. Best effort
        (the change is committed; housekeeping's pass catches anything missed here)."""
        try:
            await self.scheduler.advance({bench_id})
        except Exception:  # the caller's change stands whatever happens here
            logger.exception("advancing after a change on %s failed", bench_id)

    async def check_in(
        self, reservation_id: str, expectation: VersionExpectation | None, actor: Actor
    ) -> Reservation:
        """The holder is at the bench (hands-on work): no no-show release, and activity."""
        return await self._change(
            reservation_id,
            lambda reservation: check_in(reservation, self._clock.now()),
            expectation,
            actor,
            "checked_in",
            by_holder=True,
        )

    async def extend(
        self,
        reservation_id: str,
        by: timedelta,
        expectation: VersionExpectation | None,
        actor: Actor,
    ) -> Reservation:
        if by <= timedelta(0):
            raise InvalidInput("by must be a positive duration, such as PT30M")

        def decide(reservation: Reservation) -> Reservation:
            check_not_maintenance(reservation)
            return move(
                reservation,
                start=None,
                end=reservation.end + by,
                purpose=None,
                now=self._clock.now(),
                max_duration=self._max_duration,
            )

        try:
            return await self._change(
                reservation_id, decide, expectation, actor, "extended", by_holder=True
            )
        except Conflict as refused:
            raise await self._named_holders(refused) from refused

    async def _named_holders(self, refused: Conflict) -> Conflict:
        """A 409 for an extension that says who holds the time after."""
        conflicts = refused.extensions.get("conflicts")
        if not conflicts:
            return refused
        holders = []
        for conflict in conflicts:
            other = await self._store.reservations.get(conflict["reservation_id"])
            if other is not None:
                conflict["user_id"] = other.user_id
                holders.append(f"{other.user_id} from {rfc3339(other.start)}")
        return Conflict(f"the time after is held: {', '.join(holders)}", conflicts=conflicts)
