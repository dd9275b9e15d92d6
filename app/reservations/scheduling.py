"""Scheduling rules, without I/O: where an advancing booking goes, who moves up first, and
what no-shows and idle holds are.

A booking with ``advance`` holds a concrete window at once (the earliest free one) and is
moved into an earlier one whenever one frees on a bench it may use, never later than it
was and never before ``not_before``. When several want the same freed time, the order is
``advance_order``: higher priority, then whoever used the lab least over the last seven
days (fair share), then the oldest request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from app.errors import Forbidden, InvalidInput
from app.identity import Principal, Role
from app.reservations.domain import (
    HOLDING_STATES,
    MAX_PRIORITY,
    USER_PRIORITY,
    Reservation,
    ReservationState,
    Window,
    free_windows,
)

FAIR_SHARE_PERIOD = timedelta(days=7)


def check_priority(principal: Principal, priority: int) -> None:
    if not 0 <= priority <= MAX_PRIORITY:
        raise InvalidInput(f"priority must be between 0 and {MAX_PRIORITY}")
    if principal.role is Role.USER and priority > USER_PRIORITY:
        raise Forbidden(
            f"users may ask for a priority of at most {USER_PRIORITY}; pipelines and admins"
            f" up to {MAX_PRIORITY}"
        )


def used_recently(held: Iterable[Reservation], now: datetime) -> timedelta:
    """Booked time of these reservations inside the last seven days, up to now."""
    period = Window(now - FAIR_SHARE_PERIOD, now)
    return sum((r.window.overlap(period) for r in held if r.state in HOLDING_STATES), timedelta(0))


def advance_order(
    reservation: Reservation, usage: Mapping[str, timedelta]
) -> tuple[int, timedelta, datetime, str]:
    """Sort key: who moves up first."""
    return (
        -reservation.priority,
        usage.get(reservation.user_id, timedelta(0)),
        reservation.created_at,
        reservation.reservation_id,
    )


@dataclass(frozen=True, slots=True)
class Placement:
    bench_id: str
    window: Window


def earliest_placement(
    duration: timedelta,
    busy: Mapping[str, list[Window]],
    earliest: datetime,
    latest: datetime,
) -> Placement | None:
    """The earliest window of ``duration`` starting in [earliest, latest) on any of the
    benches (``busy``: each bench's booked windows); ties go to the bench id first."""
    best: Placement | None = None
    for bench_id in sorted(busy):
        gaps = free_windows(busy[bench_id], Window(earliest, latest + duration), duration)
        if not gaps:
            continue
        start = gaps[0].start
        if start >= latest:
            continue
        if best is None or start < best.window.start:
            best = Placement(bench_id, Window(start, start + duration))
    return best


def advanced(reservation: Reservation, placement: Placement, now: datetime) -> Reservation:
    return replace(
        reservation,
        bench_id=placement.bench_id,
        start=placement.window.start,
        end=placement.window.end,
        version=reservation.version + 1,
        updated_at=now,
    )


def better(reservation: Reservation, placement: Placement | None) -> bool:
    """Whether the placement is earlier than where the reservation is now."""
    return placement is not None and placement.window.start < reservation.start


def waits(reservation: Reservation, now: datetime) -> bool:
    """Booked to advance and not begun yet: the scheduler may still move it."""
    return (
        reservation.advance
        and reservation.state is ReservationState.BOOKED
        and reservation.start > now
    )


def no_show(reservation: Reservation, now: datetime, grace: timedelta, checked_in: bool) -> bool:
    """Started, past its grace, and nobody came: it is released for others."""
    return (
        grace > timedelta(0)
        and reservation.state is ReservationState.BOOKED
        and reservation.start + grace <= now < reservation.end
        and not checked_in
        and reservation.checked_in_at is None
    )


def idle_step(
    reservation: Reservation, now: datetime, idle_after: timedelta, last_activity: datetime
) -> str | None:
    """``"warn"`` at half the idle time without activity, ``"release"`` at all of it, None
    otherwise (or when idle release is off)."""
    if idle_after <= timedelta(0) or reservation.state is not ReservationState.BOOKED:
        return None
    if not reservation.start <= now < reservation.end:
        return None
    quiet = now - last_activity
    warned = reservation.idle_warned_at
    warned_since = warned is not None and warned >= last_activity
    if quiet >= idle_after and warned_since:
        return "release"
    if quiet >= idle_after / 2 and not warned_since:
        return "warn"
    return None
