"""How reservations are written into history and raise events, and how store refusals
read as errors: shared by the booking use-cases and the scheduler."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.benches.domain import Bench
from app.errors import Conflict, NotFound
from app.history.domain import AuditTrail
from app.reservations.domain import AtRisk, BookedSlot, Reservation
from app.store.base import WindowTaken
from app.timeutil import rfc3339


def _snapshot(reservation: Reservation) -> dict[str, Any]:
    return {
        "bench_id": reservation.bench_id,
        "user_id": reservation.user_id,
        "start": rfc3339(reservation.start),
        "end": rfc3339(reservation.end),
        "purpose": reservation.purpose,
        # The API's word and value, as of the change (a booking is confirmed or active).
        "status": reservation.status(reservation.updated_at).value,
        "at_risk": at_risk_view(reservation.at_risk),
    }


def at_risk_view(at_risk: AtRisk | None) -> dict[str, str] | None:
    return None if at_risk is None else {"reason": at_risk.reason, "since": rfc3339(at_risk.since)}


def _reservation_event(action: str, before: Reservation | None, after: Reservation) -> str | None:
    if action == "updated":
        assert before is not None
        moved = before.window != after.window or before.bench_id != after.bench_id
        return "reservation.moved" if moved else "reservation.changed"
    return _RESERVATION_EVENTS.get(action)


_RESERVATION_EVENTS = {
    "created": "reservation.created",
    "advanced": "reservation.advanced",
    "checked_in": "reservation.checked_in",
    "idle_warned": "reservation.idle",
    "released_no_show": "reservation.released",
    "released_idle": "reservation.released",
    "cancelled": "reservation.cancelled",
    "released": "reservation.released",
    "completed": "reservation.ended",
    "swapped": "reservation.swapped",
    "displaced": "reservation.displaced",
}


def _reservation_view(reservation: Reservation, at: datetime) -> dict[str, Any]:
    return {
        "reservation_id": reservation.reservation_id,
        **_snapshot(reservation),
        "status": reservation.status(at).value,  # as of the event: active once started
        "advance": reservation.advance,
        "priority": reservation.priority,
        "at_risk": at_risk_view(reservation.at_risk),
        "version": reservation.version,
    }


# Why a reservation was released, when housekeeping did it (in its event's data).
RELEASE_REASONS = {"released_no_show": "no_show", "released_idle": "idle"}


AUDIT: AuditTrail[Reservation] = AuditTrail(
    "reservation",
    lambda reservation: reservation.reservation_id,
    _snapshot,
    raises=_reservation_event,
    view=_reservation_view,
    scope=lambda reservation: (reservation.bench_id, reservation.user_id),
)


def slots_problem(slots: list[BookedSlot]) -> list[dict[str, Any]]:
    return [
        {
            "reservation_id": slot.reservation_id,
            "start": slot.window.start,
            "end": slot.window.end,
        }
        for slot in sorted(slots, key=lambda s: s.window.start)
    ]


def window_taken(bench_id: str, taken: WindowTaken) -> Conflict:
    return Conflict(
        f"bench {bench_id!r} is already reserved in that window",
        conflicts=slots_problem(taken.conflicts),
    )


def not_bookable(bench_id: str, bench: Bench | None) -> NotFound | Conflict:
    if bench is None:
        return NotFound(f"bench {bench_id!r} does not exist")
    return Conflict(
        f"bench {bench_id!r} is {bench.admin_state.value} and cannot be booked",
        admin_state=bench.admin_state.value,
    )
