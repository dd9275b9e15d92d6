"""Change events, and the one interface every source of them offers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, cast

from app.timeutil import from_iso, to_iso

ChangeKind = Literal["insert", "modify", "remove"]
KINDS: tuple[ChangeKind, ...] = ("insert", "modify", "remove")


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One committed change of one stored item.

    ``event_id`` is stable: the same change read again has the same id, so a consumer of an
    at-least-once delivery drops duplicates by it. ``table`` is the logical table name,
    the same on every store ("benches", "reservations", ...). Images are plain JSON
    objects as the store holds the item (None where there is no such image). ``seq``
    orders the changes of one item: a larger seq is a later change.
    """

    event_id: str
    table: str
    key: dict[str, Any]
    kind: ChangeKind
    old_image: dict[str, Any] | None
    new_image: dict[str, Any] | None
    at: datetime
    seq: int

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "table": self.table,
            "key": self.key,
            "kind": self.kind,
            "old_image": self.old_image,
            "new_image": self.new_image,
            "at": to_iso(self.at),
            # Text: a DynamoDB sequence number has more digits than a JSON reader's double.
            "seq": str(self.seq),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChangeEvent:
        kind = data["kind"]
        if kind not in KINDS:
            raise ValueError(f"unknown change kind {kind!r}")
        return cls(
            event_id=data["event_id"],
            table=data["table"],
            key=data["key"],
            kind=cast(ChangeKind, kind),
            old_image=data["old_image"],
            new_image=data["new_image"],
            at=from_iso(data["at"]),
            seq=int(data["seq"]),
        )


@dataclass(frozen=True, slots=True)
class FeedBatch:
    """Events read after a position, and the position to resume from once they are safe.

    The position is opaque text for the checkpoint; it can move without events (a DynamoDB
    shard read to its end), and then it is worth storing all the same.
    """

    events: list[ChangeEvent]
    position: str | None


class ChangeFeed(Protocol):
    async def read(self, position: str | None, limit: int) -> FeedBatch:
        """At most ``limit`` events after ``position`` (None: from the oldest one kept)."""
        ...
