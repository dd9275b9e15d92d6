"""Booking the earliest free window, taking the next one when another booker wins the race."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from bench_client import Client
from bench_client.errors import Conflict
from bench_client.models import FreeWindowOut, ReservationOut

__all__ = ["EARLIEST_TRIES", "NoWindow", "book_earliest"]

EARLIEST_TRIES = 5


class NoWindow(Exception):
    """No free window fits (within the search, or starting early enough)."""


def book_earliest(
    client: Client,
    duration: timedelta,
    *,
    capabilities: Sequence[str] = (),
    bench_id: str | None = None,
    purpose: str = "",
    search_from: datetime | None = None,
    start_by: datetime | None = None,
    tries: int = EARLIEST_TRIES,
    on_lost: Callable[[FreeWindowOut, Conflict], None] | None = None,
) -> ReservationOut:
    """Asks for the earliest windows and books the first one on its bench. A 409 means
    someone booked it in between: ask again and book the next, at most ``tries`` times.
    ``start_by``: a window starting later than this is not wanted (NoWindow)."""
    lost: Conflict | None = None
    for _ in range(tries):
        windows = client.find_availability(
            duration, capabilities=capabilities, bench_id=bench_id, start=search_from, limit=1
        )
        if not windows:
            raise NoWindow("no bench is free for that long in the next 7 days")
        window = windows[0]
        if start_by is not None and window.start > start_by:
            raise NoWindow(
                f"the earliest free window starts at {window.start.isoformat()}, "
                f"later than {start_by.isoformat()}"
            )
        try:
            return client.create_reservation(
                start=window.start,
                end=window.start + duration,
                bench_id=window.bench_id,
                purpose=purpose,
            )
        except Conflict as conflict:
            lost = conflict
            if on_lost is not None:
                on_lost(window, conflict)
    assert lost is not None
    raise lost
