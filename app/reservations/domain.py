"""Reservations: windows on a bench's calendar, their life, and the booking rules. No I/O.

Windows are half-open, ``[start, end)``: a booking ending at 11:00 and one starting at
11:00 do not collide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum

from app.errors import Conflict, Forbidden, InvalidInput
from app.identity import Principal, Role

# Who moves up first when a window frees: higher priority; users ask at most USER_PRIORITY.
DEFAULT_PRIORITY = 50
USER_PRIORITY = 50
MAX_PRIORITY = 100
# Clients' clocks drift; a window starting this much in the past still counts as "now".
CLOCK_SKEW = timedelta(seconds=60)
# The longest window any deployment may allow. Calendar queries look back this far for
# reservations that began earlier and still reach into the range asked about.
LONGEST_WINDOW = timedelta(days=31)


class ReservationState(StrEnum):
    """What is stored. ``booked`` becomes confirmed, active or completed by the clock."""

    BOOKED = "booked"
    # Marked by housekeeping once the window is over; it still held its window.
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    RELEASED = "released"


class ReservationKind(StrEnum):
    BOOKING = "booking"
    # An admin booked the bench for maintenance: it holds the calendar, nothing else.
    MAINTENANCE = "maintenance"


@dataclass(frozen=True, slots=True)
class AtRisk:
    """The bench may not be fit for the window: offline, quarantined, in maintenance, or
    failing its health check, since ``since``."""

    reason: str
    since: datetime


# The states whose window is taken on the bench's calendar.
HOLDING_STATES = frozenset({ReservationState.BOOKED, ReservationState.COMPLETED})


class ReservationStatus(StrEnum):
    """What users see."""

    CONFIRMED = "confirmed"
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    RELEASED = "released"


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime

    def overlaps(self, other: Window) -> bool:
        return self.start < other.end and other.start < self.end

    def overlap(self, other: Window) -> timedelta:
        """How long the two windows share (zero when they do not meet)."""
        return max(min(self.end, other.end) - max(self.start, other.start), timedelta(0))

    def frees_time_of(self, before: Window) -> bool:
        """Whether this window, replacing ``before``, gives up some of its time."""
        return self.start > before.start or self.end < before.end

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def days(self) -> list[date]:
        """The UTC days the window touches: the calendar buckets it lives in."""
        first = self.start.date()
        last = (self.end - timedelta(microseconds=1)).date()
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]


@dataclass(frozen=True, slots=True)
class FreeWindow:
    """A window free on a bench, as an availability search finds it."""

    bench_id: str
    window: Window


@dataclass(frozen=True, slots=True)
class BookedSlot:
    """A window a reservation holds on its bench's calendar."""

    reservation_id: str
    window: Window


@dataclass(frozen=True, slots=True)
class Reservation:
    reservation_id: str
    bench_id: str
    user_id: str
    start: datetime
    end: datetime
    purpose: str
    state: ReservationState
    version: int
    created_at: datetime
    updated_at: datetime
    # Time-driven milestones raised so far: 1 once started, 2 once ending soon. Not
    # configuration: announcing one moves neither version nor updated_at.
    announced: int = 0
    # Booked to advance: the scheduler moves it into an earlier window that frees (never
    # before not_before), on its bench or, booked by capability, any bench with them.
    advance: bool = False
    priority: int = DEFAULT_PRIORITY
    not_before: datetime | None = None
    capabilities: frozenset[str] = frozenset()
    # The holder's team, as their token says (team quotas).
    team: str | None = None
    # The holder said they are here (POST .../checkin), and when idleness was warned of.
    checked_in_at: datetime | None = None
    idle_warned_at: datetime | None = None
    # Bench health: the holder allows a move to an equivalent bench when theirs fails (a
    # booking by capability always does), and whether the bench looks unfit now.
    allow_swap: bool = False
    at_risk: AtRisk | None = None
    kind: ReservationKind = ReservationKind.BOOKING

    @property
    def window(self) -> Window:
        return Window(self.start, self.end)

    @property
    def is_booking(self) -> bool:
        """A person's or a pipeline's booking, not a maintenance window (which nobody
        checks in to, and which no hold rule ends)."""
        return self.kind is ReservationKind.BOOKING

    @property
    def holds_bench(self) -> bool:
        """Whether the window is taken: cancelled and released windows are free at once."""
        return self.state in HOLDING_STATES

    @property
    def slot(self) -> BookedSlot:
        return BookedSlot(self.reservation_id, self.window)

    def status(self, now: datetime) -> ReservationStatus:
        if self.state is ReservationState.CANCELLED:
            return ReservationStatus.CANCELLED
        if self.state is ReservationState.RELEASED:
            return ReservationStatus.RELEASED
        if self.state is ReservationState.COMPLETED:
            return ReservationStatus.COMPLETED
        if now < self.start:
            return ReservationStatus.CONFIRMED
        if now < self.end:
            return ReservationStatus.ACTIVE
        return ReservationStatus.COMPLETED


def validate_window(window: Window, now: datetime, max_duration: timedelta) -> None:
    if window.end <= window.start:
        raise InvalidInput("end must be after start")
    if window.start < now - CLOCK_SKEW:
        raise InvalidInput("start is in the past")
    if window.duration > max_duration:
        hours = max_duration.total_seconds() / 3600
        raise InvalidInput(f"a reservation may last at most {hours:g} hours")


def conflicts(window: Window, slots: Iterable[BookedSlot], ignore: str = "") -> list[BookedSlot]:
    """The slots that overlap ``window``; ``ignore`` names the reservation being moved."""
    return [
        slot for slot in slots if slot.reservation_id != ignore and slot.window.overlaps(window)
    ]


def check_not_maintenance(reservation: Reservation) -> None:
    if not reservation.is_booking:
        raise Conflict(
            "a maintenance window does not move: cancel it and schedule another",
            kind=reservation.kind.value,
        )


def check_may_change(principal: Principal, reservation: Reservation) -> None:
    if principal.role is not Role.ADMIN and principal.subject != reservation.user_id:
        raise Forbidden("only the owner of a reservation or an admin may change it")


def _refuse(reservation: Reservation, action: str, now: datetime, allowed: list[str]) -> Conflict:
    status = reservation.status(now).value
    return Conflict(
        f"a {status} reservation cannot be {action}",
        current_status=status,
        allowed_transitions=allowed,
    )


def _transitions(status: ReservationStatus) -> list[str]:
    return {
        ReservationStatus.CONFIRMED: ["cancel", "move"],
        ReservationStatus.ACTIVE: ["cancel", "release", "move", "extend", "checkin"],
    }.get(status, [])


def cancel(reservation: Reservation, now: datetime) -> Reservation:
    """Cancelled; the same reservation when it already is (a retried script is safe)."""
    if reservation.state is ReservationState.CANCELLED:
        return reservation
    status = reservation.status(now)
    if status not in (ReservationStatus.CONFIRMED, ReservationStatus.ACTIVE):
        raise _refuse(reservation, "cancelled", now, _transitions(status))
    return replace(
        reservation,
        state=ReservationState.CANCELLED,
        version=reservation.version + 1,
        updated_at=now,
    )


def check_in(reservation: Reservation, now: datetime) -> Reservation:
    """The holder says they are at the bench; only while the window is under way."""
    status = reservation.status(now)
    if status is not ReservationStatus.ACTIVE:
        raise _refuse(reservation, "checked in", now, _transitions(status))
    return replace(reservation, checked_in_at=now, version=reservation.version + 1, updated_at=now)


def mark_completed(reservation: Reservation, now: datetime) -> Reservation:
    """Record that a booked window is over; the same reservation if it is not (yet)."""
    if reservation.state is not ReservationState.BOOKED or now < reservation.end:
        return reservation
    return replace(
        reservation,
        state=ReservationState.COMPLETED,
        version=reservation.version + 1,
        updated_at=now,
    )


def release(reservation: Reservation, now: datetime) -> Reservation:
    """Ends an active reservation now: the rest of its window is free for others. The same
    reservation when it was released already."""
    if reservation.state is ReservationState.RELEASED:
        return reservation
    status = reservation.status(now)
    if status is not ReservationStatus.ACTIVE:
        raise _refuse(reservation, "released", now, _transitions(status))
    return replace(
        reservation,
        state=ReservationState.RELEASED,
        end=now,
        version=reservation.version + 1,
        updated_at=now,
    )


def move(
    reservation: Reservation,
    *,
    start: datetime | None,
    end: datetime | None,
    purpose: str | None,
    now: datetime,
    max_duration: timedelta,
) -> Reservation:
    """A new window and/or purpose; the same reservation when nothing changes."""
    status = reservation.status(now)
    if status not in (ReservationStatus.CONFIRMED, ReservationStatus.ACTIVE):
        raise _refuse(reservation, "changed", now, _transitions(status))
    window = Window(start or reservation.start, end or reservation.end)
    if window != reservation.window:
        if status is ReservationStatus.ACTIVE:
            # An active reservation has begun: its start is history, its end must lie ahead.
            if window.start != reservation.start:
                raise Conflict("an active reservation cannot change its start")
            if window.end <= now:
                raise InvalidInput("end must be in the future")
            if window.duration > max_duration:
                hours = max_duration.total_seconds() / 3600
                raise InvalidInput(f"a reservation may last at most {hours:g} hours")
        else:
            validate_window(window, now, max_duration)
    changed = replace(
        reservation,
        start=window.start,
        end=window.end,
        purpose=reservation.purpose if purpose is None else purpose,
    )
    if changed == reservation:
        return reservation
    return replace(changed, version=reservation.version + 1, updated_at=now)


def free_windows(busy: Iterable[Window], search: Window, duration: timedelta) -> list[Window]:
    """The gaps of at least ``duration`` inside ``search`` between busy windows, in order."""
    gaps: list[Window] = []
    cursor = search.start
    for taken in sorted(busy, key=lambda w: w.start):
        if taken.end <= cursor:
            continue
        if taken.start >= search.end:
            break
        if taken.start - cursor >= duration:
            gaps.append(Window(cursor, taken.start))
        cursor = max(cursor, taken.end)
    if search.end - cursor >= duration:
        gaps.append(Window(cursor, search.end))
    return gaps


def milestones_due(
    reservation: Reservation, now: datetime, ending_soon: timedelta
) -> tuple[int, list[str]] | None:
    """The milestones to announce now, once each, and the announced count they make; None
    when there are none. A window that is over gets none here: completing it raises
    ``reservation.ended``."""
    if reservation.state is not ReservationState.BOOKED or now >= reservation.end:
        return None
    announced, raised = reservation.announced, []
    if announced == 0 and reservation.start <= now:
        announced, raised = 1, ["reservation.started"]
    if announced == 1 and reservation.end - ending_soon <= now:
        announced, raised = 2, [*raised, "reservation.ending_soon"]
    return (announced, raised) if raised else None
