"""What the export ships: each change in the API's vocabulary, not the store's.

The stores keep instants fixed-width (``...T09:00:00.000000Z``, so that text order is time
order) and a reservation's stored ``state`` (``booked`` holds the window); the API says
``...T09:00:00Z`` and ``status: confirmed | active | completed | cancelled | released``.
The archive and the analytics tables read like the API, so one query reads both.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from app.feed.events import ChangeEvent
from app.timeutil import from_iso, rfc3339

_STORED_INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def public_event(event: ChangeEvent) -> ChangeEvent:
    def image(stored: dict[str, Any] | None) -> dict[str, Any] | None:
        if stored is None:
            return None
        shown: dict[str, Any] = _instants(stored)
        if event.table == "reservations" and "state" in shown:
            shown["status"] = _reservation_status(shown.pop("state"), stored)
        return shown

    return replace(
        event,
        key=_instants(event.key),
        old_image=image(event.old_image),
        new_image=image(event.new_image),
    )


def _reservation_status(state: str, stored: dict[str, Any]) -> str:
    """As the API answered at the change (``updated_at``), like the reservation's history."""
    at = from_iso(stored["updated_at"])
    if state != "booked":
        return state  # cancelled, released, completed: the same words
    if at < from_iso(stored["start"]):
        return "confirmed"
    if at < from_iso(stored["end"]):
        return "active"
    return "completed"


def _instants(value: Any) -> Any:
    if isinstance(value, str) and _STORED_INSTANT.match(value):
        return rfc3339(from_iso(value))
    if isinstance(value, dict):
        return {key: _instants(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_instants(item) for item in value]
    return value
