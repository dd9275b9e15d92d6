"""Audit trail entries: one immutable entry per version of a resource."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from app.events.domain import DomainEvent, EntityRef, new_event
from app.identity import Actor


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    entity_type: str
    entity_id: str
    version: int
    at: datetime
    actor: str
    request_id: str
    action: str
    changes: dict[str, Any] = field(default_factory=dict)
    # The event this change raises, stored in the same write as the entry (not read back:
    # the event log is where events are read).
    event: DomainEvent | None = field(default=None, compare=False)


def record_change(
    *,
    entity_type: str,
    entity_id: str,
    version: int,
    at: datetime,
    actor: Actor,
    action: str,
    before: dict[str, Any] | None,
    after: dict[str, Any],
) -> HistoryEntry:
    """The entry for one change: who, when, under which request, and what differs."""
    return HistoryEntry(
        entity_type=entity_type,
        entity_id=entity_id,
        version=version,
        at=at,
        actor=actor.subject,
        request_id=actor.request_id,
        action=action,
        changes=diff({} if before is None else before, after),
    )


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Fields whose value differs, as ``{field: {"from": old, "to": new}}``."""
    return {
        key: {"from": before.get(key), "to": after.get(key)}
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }


class Audited(Protocol):
    @property
    def version(self) -> int: ...

    @property
    def updated_at(self) -> datetime: ...


A = TypeVar("A", bound=Audited)


@dataclass(frozen=True, slots=True)
class AuditTrail(Generic[A]):
    """How one kind of resource is written into history: its entity type, its id, and the
    fields an entry compares between versions."""

    entity_type: str
    id_of: Callable[[A], str]
    snapshot: Callable[[A], dict[str, Any]]
    # The event type a change raises (None: none), from its action and both versions.
    raises: Callable[[str, A | None, A], str | None] = lambda action, before, after: None
    # The resource as an event raised at a moment carries it, and the (bench_id,
    # user_id) it concerns.
    view: Callable[[A, datetime], dict[str, Any]] | None = None
    scope: Callable[[A], tuple[str | None, str | None]] = lambda resource: (None, None)

    def entry(self, after: A, actor: Actor, action: str, before: A | None) -> HistoryEntry:
        entry = record_change(
            entity_type=self.entity_type,
            entity_id=self.id_of(after),
            version=after.version,
            at=after.updated_at,
            actor=actor,
            action=action,
            before=None if before is None else self.snapshot(before),
            after=self.snapshot(after),
        )
        raised = self.raises(action, before, after)
        if raised is None:
            return entry
        return replace(entry, event=self.event(raised, after, actor))

    def event(
        self, type: str, resource: A, actor: Actor, at: datetime | None = None
    ) -> DomainEvent:
        """The event ``type`` about ``resource`` as it is now (time-driven events too)."""
        bench_id, user_id = self.scope(resource)
        moment = resource.updated_at if at is None else at
        data = self.snapshot(resource) if self.view is None else self.view(resource, moment)
        return new_event(
            type,
            at=moment,
            actor=actor.subject,
            entity=EntityRef(self.entity_type, self.id_of(resource), resource.version),
            bench_id=bench_id,
            user_id=user_id,
            data=data,
        )
