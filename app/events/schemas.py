"""Events as the API shows them: on the stream (`data:` of each message) and in pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.store.base import LoggedEvent


class EntityOut(BaseModel):
    type: str = Field(examples=["reservation"])
    id: str
    version: int


class EventOut(BaseModel):
    position: str = Field(
        description="Where to resume after this event: the stream's `id:`, the value for"
        " `Last-Event-ID` or `after`."
    )
    event_id: str = Field(description="Stable: the receiver's idempotency key.")
    type: str = Field(examples=["reservation.created"])
    at: datetime
    actor: str
    entity: EntityOut
    bench_id: str | None
    user_id: str | None
    data: dict[str, Any] = Field(
        description="The resource at that version, in the API's field names."
    )

    @classmethod
    def of(cls, logged: LoggedEvent) -> EventOut:
        event = logged.event
        return cls(
            position=logged.position,
            event_id=event.event_id,
            type=event.type,
            at=event.at,
            actor=event.actor,
            entity=EntityOut(
                type=event.entity.type, id=event.entity.id, version=event.entity.version
            ),
            bench_id=event.bench_id,
            user_id=event.user_id,
            data=event.data,
        )


class EventPageOut(BaseModel):
    items: list[EventOut]
    next_after: str | None = Field(
        description="Pass as `after` for the next page (it moves past events the filters"
        " left out); null while the log is empty."
    )
