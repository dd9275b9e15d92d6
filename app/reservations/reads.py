"""Reading reservations: one, a user's or a bench's, calendars, history, availability
search, and the bench choices a booking by capability makes. Part of ReservationService."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from app.benches.domain import AdminState, Bench
from app.clock import Clock
from app.errors import InvalidInput, NotFound
from app.history.domain import HistoryEntry
from app.kit.paging import filtered_page, page_of
from app.reservations.domain import (
    FreeWindow,
    Reservation,
    ReservationStatus,
    Window,
    free_windows,
)
from app.reservations.trail import AUDIT
from app.store.base import BenchQuery, Page, ReservationQuery, Store, reservation_page_key

# A capability booking considers at most this many matching benches.
MAX_CANDIDATES = 200
LONGEST_SEARCH = timedelta(days=31)


def check_range(window: Window) -> None:
    if window.end <= window.start:
        raise InvalidInput("to must be after from")


class ReservationReads:
    _store: Store
    _clock: Clock
    _max_duration: timedelta

    async def _active_benches(self, capabilities: frozenset[str]) -> list[Bench]:
        query = BenchQuery(capabilities=capabilities, admin_state=AdminState.ACTIVE.value)
        benches: list[Bench] = []
        after: str | None = None
        while len(benches) < MAX_CANDIDATES:
            page = await self._store.benches.find(query, MAX_CANDIDATES - len(benches), after)
            benches += page.items
            if page.next_after is None:
                break
            after = page.next_after
        return benches

    async def _least_loaded_first(self, benches: list[Bench], window: Window) -> list[Bench]:
        """Spread load: benches with the least booked time around the window come first;
        ties in random order, so concurrent bookings fan out instead of all racing for one."""
        around = Window(window.start - timedelta(days=1), window.end + timedelta(days=1))
        load: dict[str, float] = {}
        for bench in benches:
            busy = 0.0
            async for taken in self._holding(bench.bench_id, around):
                overlap = min(taken.end, around.end) - max(taken.start, around.start)
                busy += overlap.total_seconds()
            load[bench.bench_id] = busy
        shuffled = random.sample(benches, len(benches))
        return sorted(shuffled, key=lambda bench: load[bench.bench_id])

    async def _holding(self, bench_id: str, window: Window) -> AsyncIterator[Window]:
        """The windows booked on a bench that overlap ``window``, in start order."""
        query = ReservationQuery(
            bench_id=bench_id,
            ends_after=window.start,
            starts_before=window.end,
            holding_only=True,
        )
        after: str | None = None
        while True:
            page = await self._store.reservations.find(query, 500, after)
            for reservation in page.items:
                yield reservation.window
            if page.next_after is None:
                return
            after = page.next_after

    # --- reading -------------------------------------------------------------------------

    async def get(self, reservation_id: str) -> Reservation:
        reservation = await self._store.reservations.get(reservation_id)
        if reservation is None:
            raise NotFound(f"reservation {reservation_id!r} does not exist")
        return reservation

    async def find(
        self,
        *,
        user_id: str | None,
        bench_id: str | None,
        status: ReservationStatus | None = None,
        ends_after: datetime | None = None,
        starts_before: datetime | None = None,
        limit: int,
        after: str | None,
    ) -> Page[Reservation]:
        """Reservations of a user or a bench overlapping [ends_after, starts_before).
        Status is derived from the clock, so it is filtered here, page by page."""
        if ends_after is not None and starts_before is not None:
            check_range(Window(ends_after, starts_before))
        query = ReservationQuery(
            bench_id=bench_id, user_id=user_id, ends_after=ends_after, starts_before=starts_before
        )
        if status is None:
            return await self._store.reservations.find(query, limit, after)
        now = self._clock.now()
        return await filtered_page(
            lambda size, start: self._store.reservations.find(query, size, start),
            lambda reservation: reservation.status(now) is status,
            reservation_page_key,
            limit,
            after,
        )

    async def calendar(
        self, bench_id: str, window: Window, limit: int, after: str | None
    ) -> Page[Reservation]:
        check_range(window)

        async def bench_exists() -> None:
            if await self._store.benches.get(bench_id) is None:
                raise NotFound(f"bench {bench_id!r} does not exist")

        query = ReservationQuery(
            bench_id=bench_id, ends_after=window.start, starts_before=window.end, holding_only=True
        )
        return await page_of(
            bench_exists, lambda: self._store.reservations.find(query, limit, after)
        )

    async def history(
        self, reservation_id: str, limit: int, after: int | None
    ) -> Page[HistoryEntry]:
        return await page_of(
            lambda: self.get(reservation_id),
            lambda: self._store.history.find(
                AUDIT.entity_type, reservation_id, limit, after, now=self._clock.now()
            ),
        )

    async def availability(
        self,
        *,
        bench_id: str | None,
        capabilities: frozenset[str],
        duration: timedelta,
        search: Window,
        limit: int,
    ) -> list[FreeWindow]:
        """The earliest free windows of at least ``duration``, over every matching bench."""
        if duration <= timedelta(0):
            raise InvalidInput("duration must be positive")
        if duration > self._max_duration:
            raise InvalidInput("duration is longer than any reservation may last")
        check_range(search)
        if search.duration > LONGEST_SEARCH:
            raise InvalidInput("search at most 31 days at a time")
        search = Window(max(search.start, self._clock.now()), search.end)
        if bench_id is not None:
            bench = await self._store.benches.get(bench_id)
            if bench is None:
                raise NotFound(f"bench {bench_id!r} does not exist")
            benches = [bench] if bench.admin_state is AdminState.ACTIVE else []
            benches = [b for b in benches if capabilities <= b.capabilities]
        else:
            benches = await self._active_benches(capabilities)
        found: list[FreeWindow] = []
        for bench in benches:
            if search.end <= search.start:
                break
            busy = [window async for window in self._holding(bench.bench_id, search)]
            found += [
                FreeWindow(bench.bench_id, gap) for gap in free_windows(busy, search, duration)
            ]
        found.sort(key=lambda free: (free.window.start, free.bench_id))
        return found[:limit]
