"""Domain events: one model for the stream, the JSON pages and webhook deliveries.

An event is stored in the same write as the change that raises it (with its history
entry), or by the one conditional write that decides a time-driven milestone; so a change
that rolled back raises nothing, and a committed one is never lost. No I/O here.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.ids import sortable_uuid
from app.timeutil import from_iso, rfc3339

# Every type the service raises; a subscription's globs are checked against these.
EVENT_TYPES = (
    "bench.registered",
    "bench.changed",
    "bench.online",
    "bench.offline",
    "bench.retired",
    "bench.quarantined",
    "reservation.created",
    "reservation.moved",
    "reservation.changed",
    "reservation.cancelled",
    "reservation.released",
    "reservation.advanced",
    "reservation.checked_in",
    "reservation.idle",
    "reservation.started",
    "reservation.ending_soon",
    "reservation.ended",
    "reservation.at_risk",
    "reservation.recovered",
    "reservation.swapped",
    "reservation.displaced",
    "execution.queued",
    "execution.started",
    "execution.finished",
    "task.claimed",
    "task.retried",
    "task.dead",
    "webhook.disabled",
    "webhook.ping",
)
_GLOB = re.compile(r"^[a-z_*]+(\.[a-z_*]+)?$")


@dataclass(frozen=True, slots=True)
class EntityRef:
    type: str
    id: str
    version: int


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """``event_id`` is stable (the receiver's idempotency key); ``data`` is the resource
    at ``entity.version`` in the API's field names; ``bench_id`` and ``user_id`` are what
    the stream and subscriptions filter on (the bench concerned, the holder or creator)."""

    event_id: str
    type: str
    at: datetime
    actor: str
    entity: EntityRef
    bench_id: str | None
    user_id: str | None
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "at": rfc3339(self.at),
            "actor": self.actor,
            "entity": {
                "type": self.entity.type,
                "id": self.entity.id,
                "version": self.entity.version,
            },
            "bench_id": self.bench_id,
            "user_id": self.user_id,
            "data": self.data,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DomainEvent:
        entity = raw["entity"]
        return cls(
            event_id=raw["event_id"],
            type=raw["type"],
            at=from_iso(raw["at"]),
            actor=raw["actor"],
            entity=EntityRef(entity["type"], entity["id"], int(entity["version"])),
            bench_id=raw.get("bench_id"),
            user_id=raw.get("user_id"),
            data=raw.get("data") or {},
        )

    @property
    def entity_key(self) -> str:
        """What per-entity order is kept for."""
        return f"{self.entity.type}:{self.entity.id}"


def new_event(
    type: str,
    *,
    at: datetime,
    actor: str,
    entity: EntityRef,
    bench_id: str | None,
    user_id: str | None,
    data: dict[str, Any],
) -> DomainEvent:
    return DomainEvent(
        event_id=sortable_uuid(at),
        type=type,
        at=at,
        actor=actor,
        entity=entity,
        bench_id=bench_id,
        user_id=user_id,
        data=data,
    )


def invalid_glob(pattern: str) -> str | None:
    """Why ``pattern`` cannot be a type filter, or None when it can (``reservation.*``)."""
    if not _GLOB.match(pattern):
        return f"{pattern!r} is not an event type or glob such as 'reservation.*'"
    if not any(fnmatch.fnmatchcase(known, pattern) for known in EVENT_TYPES):
        return f"{pattern!r} matches no event type"
    return None


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Empty ``types``: every type; ``bench_id``/``user_id`` None: any."""

    types: tuple[str, ...] = ()
    bench_id: str | None = None
    user_id: str | None = None

    def matches(self, event: DomainEvent) -> bool:
        if self.types and not any(fnmatch.fnmatchcase(event.type, p) for p in self.types):
            return False
        if self.bench_id is not None and event.bench_id != self.bench_id:
            return False
        return self.user_id is None or event.user_id == self.user_id


def matching(events: Sequence[DomainEvent], wanted: EventFilter) -> list[DomainEvent]:
    return [event for event in events if wanted.matches(event)]
