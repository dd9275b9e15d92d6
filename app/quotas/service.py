"""Quota use-cases: read and set a user's or a team's limits (admins), the check a
booking carries into its write, and usage: booked and used hours per day."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from app.clock import Clock
from app.history.domain import AuditTrail
from app.identity import Actor, Role
from app.kit.concurrency import change_versioned
from app.quotas.domain import Limits, Quota, QuotaCheck, QuotaKind
from app.reservations.domain import HOLDING_STATES, Reservation, Window
from app.store.base import AlreadyExists, ExecutionQuery, ReservationQuery, Store, VersionMismatch
from app.versioning import VersionExpectation

USAGE_DAYS = 30

AUDIT: AuditTrail[Quota] = AuditTrail(
    "quota", lambda quota: f"{quota.kind.value}:{quota.name}", Quota.audited
)


@dataclass(frozen=True, slots=True)
class DayUsage:
    day: datetime
    booked: timedelta
    used: timedelta


class QuotaService:
    def __init__(self, store: Store, clock: Clock, defaults: dict[QuotaKind, Limits]) -> None:
        self._store = store
        self._clock = clock
        self._defaults = defaults

    async def get(self, kind: QuotaKind, name: str) -> Quota:
        """The stored quota, or the defaults (version 0) when none was set."""
        stored = await self._store.quotas.get(kind, name)
        return stored or Quota(kind, name, self._defaults.get(kind, Limits()), version=0)

    async def put(
        self,
        kind: QuotaKind,
        name: str,
        limits: Limits,
        expectation: VersionExpectation | None,
        actor: Actor,
    ) -> Quota:
        now = self._clock.now()

        def decide(current: Quota) -> Quota:
            if current.limits == limits and current.version > 0:
                return current
            return replace(current, limits=limits, version=current.version + 1, updated_at=now)

        async def write(before: Quota, after: Quota) -> None:
            entry = AUDIT.entry(after, actor, "set", before if before.version else None)
            try:
                await self._store.quotas.put(before if before.version else None, after, entry)
            except AlreadyExists as error:  # set by someone else since it was read
                raise VersionMismatch(await self.get(kind, name)) from error

        return await change_versioned(
            load=lambda: self.get(kind, name),
            decide=decide,
            write=write,
            expectation=expectation,
            what=f"the quota of {kind.value} {name!r}",
        )

    async def check_for(self, reservation: Reservation, role: Role | None) -> QuotaCheck | None:
        """What a write of ``reservation`` must pass: its holder's quota and their team's.
        Admins (and housekeeping, which acts as one) are exempt."""
        if role is Role.ADMIN:
            return None
        quotas = [await self.get(QuotaKind.USER, reservation.user_id)]
        if reservation.team is not None:
            quotas.append(await self.get(QuotaKind.TEAM, reservation.team))
        limited = tuple(q for q in quotas if q.limits != Limits())
        if not limited:
            return None
        return QuotaCheck(
            reservation_id=reservation.reservation_id,
            window=reservation.window,
            quotas=limited,
            user_id=reservation.user_id,
            team=reservation.team,
        )

    async def usage(self, *, user_id: str | None, team: str | None) -> tuple[list[DayUsage], Quota]:
        """Booked and used (a run under way) hours per UTC day, the last 30 days."""
        now = self._clock.now()
        first = (now - timedelta(days=USAGE_DAYS - 1)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        days = [first + timedelta(days=n) for n in range(USAGE_DAYS)]
        query = ReservationQuery(
            user_id=user_id, team=team, ends_after=first, starts_before=now, holding_only=True
        )
        booked = {day: timedelta(0) for day in days}
        used = {day: timedelta(0) for day in days}
        after: str | None = None
        while True:
            page = await self._store.reservations.find(query, 500, after)
            for reservation in page.items:
                if reservation.state not in HOLDING_STATES:
                    continue
                held = Window(reservation.start, min(reservation.end, now))
                for day in days:
                    booked[day] += held.overlap(Window(day, day + timedelta(days=1)))
                for busy in await self._runs(reservation, now):
                    for day in days:
                        used[day] += busy.overlap(Window(day, day + timedelta(days=1)))
            if page.next_after is None:
                break
            after = page.next_after
        kind, name = (QuotaKind.TEAM, team) if team is not None else (QuotaKind.USER, user_id)
        assert name is not None
        return [DayUsage(day, booked[day], used[day]) for day in days], await self.get(kind, name)

    async def _runs(self, reservation: Reservation, now: datetime) -> list[Window]:
        """When runs were under way on the reservation, inside its window."""
        page = await self._store.executions.find(
            ExecutionQuery(reservation_id=reservation.reservation_id), 100, None
        )
        windows = []
        for execution in page.items:
            if execution.started_at is None:
                continue
            end = execution.finished_at or now
            window = Window(max(execution.started_at, reservation.start), min(end, reservation.end))
            if window.end > window.start:
                windows.append(window)
        return windows
