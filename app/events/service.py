"""Reading the event log: pages for scripts, and the follow loop behind the live stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from app.clock import Clock
from app.errors import AppError
from app.events.domain import EventFilter
from app.store.base import LoggedEvent, PositionNotKept, Store

# Events read from the log per round trip; filtering happens on them.
READ_BATCH = 200


class PositionGone(AppError):
    """The position to resume from is older than the log keeps (or was never given)."""

    status = 410


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[LoggedEvent]
    # Where the next page starts: past the events read, matching or not.
    next_after: str | None


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing new for ``seconds``: the stream sends a comment so proxies keep it open."""

    seconds: float


class EventService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        poll_s: float,
        keepalive_s: float,
        stopping: Callable[[], bool],
        longest_s: float = 3600.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._poll_s = poll_s
        self._keepalive_s = keepalive_s
        self._stopping = stopping
        self._longest_s = longest_s

    async def page(self, after: str | None, wanted: EventFilter, limit: int) -> EventPage:
        """Up to ``limit`` matching events after ``after``, reading at most a few batches
        (a rare type may take several pages of nothing but a moving ``next_after``)."""
        found: list[LoggedEvent] = []
        position = after
        for _ in range(5):
            batch = await self._read(position, max(limit, READ_BATCH))
            for logged in batch:
                position = logged.position
                if wanted.matches(logged.event):
                    found.append(logged)
                    if len(found) == limit:
                        return EventPage(found, position)
            if len(batch) < max(limit, READ_BATCH):
                break
        return EventPage(found, position)

    async def start(self, after: str | None) -> str:
        """Where a stream starts: after ``after`` (checked now, so a position the log no
        longer keeps is a 410 before the stream begins), or at the newest event."""
        if after is None:
            return await self._store.events.head(now=self._clock.now())
        await self._read(after, 1)
        return after

    async def follow(
        self, after: str | None, wanted: EventFilter
    ) -> AsyncIterator[LoggedEvent | Idle]:
        """Matching events as they are logged, until the process stops or the stream has
        lasted its longest (the client resumes after the last event it got)."""
        position = after
        quiet = 0.0
        ends = time.monotonic() + self._longest_s
        while not self._stopping() and time.monotonic() < ends:
            batch = await self._read(position, READ_BATCH)
            for logged in batch:
                position = logged.position
                if wanted.matches(logged.event):
                    quiet = 0.0
                    yield logged
            if len(batch) == READ_BATCH:
                continue
            await asyncio.sleep(self._poll_s)
            quiet += self._poll_s
            if quiet >= self._keepalive_s:
                quiet = 0.0
                yield Idle(self._keepalive_s)

    async def _read(self, after: str | None, limit: int) -> list[LoggedEvent]:
        try:
            return await self._store.events.read(after, limit, now=self._clock.now())
        except PositionNotKept as error:
            raise PositionGone(str(error)) from error
