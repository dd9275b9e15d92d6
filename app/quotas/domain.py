"""Quota rules, without I/O. A booking (or a move, or an extension) is checked against its
holder's quota and their team's, in the same write that stores it: the store hands the
check the windows the user and the team hold, read inside that write, so two bookings
at once cannot both squeeze under a limit. Admins are exempt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from app.errors import Forbidden
from app.reservations.domain import BookedSlot, Window
from app.timeutil import rfc3339

PERIOD = timedelta(days=7)
NEVER = datetime(1970, 1, 1, tzinfo=UTC)


class QuotaKind(StrEnum):
    USER = "user"
    TEAM = "team"


@dataclass(frozen=True, slots=True)
class Limits:
    """None: no limit of that kind."""

    max_booked_hours_7d: float | None = None
    max_concurrent: int | None = None
    max_window_hours: float | None = None


@dataclass(frozen=True, slots=True)
class Quota:
    kind: QuotaKind
    name: str
    limits: Limits
    version: int  # 0: not stored, the defaults from settings
    updated_at: datetime = NEVER

    def audited(self) -> dict[str, float | int | None]:
        return {
            "max_booked_hours_7d": self.limits.max_booked_hours_7d,
            "max_concurrent": self.limits.max_concurrent,
            "max_window_hours": self.limits.max_window_hours,
        }


class QuotaExceeded(Forbidden):
    """403: which limit, the figures, and when room frees."""


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g} h"


@dataclass(frozen=True, slots=True)
class QuotaCheck:
    """What a write checks: ``window`` is the reservation's (new) window; ``quotas`` the
    holder's and their team's."""

    reservation_id: str
    window: Window
    quotas: tuple[Quota, ...]
    user_id: str = ""
    team: str | None = None

    @property
    def span(self) -> Window:
        """The held windows that matter are those overlapping this."""
        return Window(min(self.window.start, self.window.end - PERIOD), self.window.end)

    def check(self, held: Mapping[QuotaKind, Sequence[BookedSlot]]) -> None:
        for quota in self.quotas:
            others = [
                s for s in held.get(quota.kind, ()) if s.reservation_id != self.reservation_id
            ]
            check_limits(quota, self.window, others)


def check_limits(quota: Quota, window: Window, held: Sequence[BookedSlot]) -> None:
    """Raise QuotaExceeded when ``window`` on top of ``held`` goes over ``quota``."""
    who = f"{quota.kind.value} {quota.name!r}"
    limits = quota.limits
    requested = window.duration
    if limits.max_window_hours is not None:
        most = timedelta(hours=limits.max_window_hours)
        if requested > most:
            raise QuotaExceeded(
                f"{who}: a window of {_hours(requested)} > {_hours(most)}, the longest allowed",
                limit="max_window_hours",
                requested_hours=requested.total_seconds() / 3600,
                quota=limits.max_window_hours,
            )
    if limits.max_concurrent is not None:
        at_once = [s for s in held if s.window.overlaps(window)]
        if len(at_once) + 1 > limits.max_concurrent:
            raise QuotaExceeded(
                f"{who}: {len(at_once)} reservations already held at that time"
                f" + this one > {limits.max_concurrent} at once",
                limit="max_concurrent",
                held=len(at_once),
                quota=limits.max_concurrent,
            )
    if limits.max_booked_hours_7d is not None:
        most = timedelta(hours=limits.max_booked_hours_7d)
        period = Window(window.end - PERIOD, window.end)
        booked = sorted(
            (s for s in held if s.window.overlap(period) > timedelta(0)),
            key=lambda s: s.window.start,
        )
        total = sum((s.window.overlap(period) for s in booked), timedelta(0))
        if total + window.overlap(period) > most:
            excess = total + window.overlap(period) - most
            freed, frees_at = timedelta(0), None
            for slot in booked:
                freed += slot.window.overlap(period)
                if freed >= excess:
                    frees_at = slot.window.end + PERIOD
                    break
            when = "" if frees_at is None else f"; {_hours(freed)} frees on {rfc3339(frees_at)}"
            raise QuotaExceeded(
                f"{who}: requested {_hours(requested)} + {_hours(total)} booked in the 7 days"
                f" to its end > {_hours(most)}{when}",
                limit="max_booked_hours_7d",
                requested_hours=requested.total_seconds() / 3600,
                booked_hours=total.total_seconds() / 3600,
                quota=limits.max_booked_hours_7d,
                frees_at=None if frees_at is None else rfc3339(frees_at),
            )
