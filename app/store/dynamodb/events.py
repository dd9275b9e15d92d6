"""The event log on DynamoDB: one item per event, by the UTC hour of its id and its id.

An event id is a UUIDv7 (app/ids.py): its first 48 bits are the millisecond it was made
at, so the text order of ids is time order, and an id alone says which hour's partition
(``bucket``) holds it. A position is the id of the last event read; a reader resumes by
querying that hour after the id, then each following hour.

Ids are made before their transaction commits, and transactions commit in any order, so
the newest ids are not final yet: one made a moment ago may still commit before one made
earlier. Readers therefore stop ``settle`` before now, and a transaction that takes longer
than that to commit after making its event's id is the one thing that could be skipped.
TTL deletes events some time after their retention; reads never reach that far back (a
position older than the retention is refused with PositionNotKept), so what TTL has or has
not deleted yet never shows.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from app.events.domain import DomainEvent
from app.store.base import LoggedEvent, PositionNotKept
from app.store.dynamodb.calls import Call, query_until
from app.store.dynamodb.codec import Action, Item, n, s
from app.timeutil import to_iso

HOUR_MS = 3_600_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A position may be this far ahead of a reader's clock (it came from another replica).
_CLOCK_SKEW = timedelta(minutes=5)
# How long the log keeps events, and how far behind now it reads, unless told otherwise
# (settings: event_retention_h, event_settle_ms).
DEFAULT_EVENT_RETENTION = timedelta(days=7)
DEFAULT_EVENT_SETTLE = timedelta(milliseconds=1000)


def ms_of(moment: datetime) -> int:
    """The millisecond of ``moment`` as an id made at it carries (see sortable_uuid)."""
    return int(moment.timestamp() * 1000)


def id_ms(event_id: str) -> int:
    """The millisecond an event id was made at; ValueError when it is not a UUID."""
    return uuid.UUID(event_id).int >> 80


def lowest_id(ms: int) -> str:
    """An id below every id made at or after millisecond ``ms``."""
    digits = f"{ms:012x}"
    return f"{digits[:8]}-{digits[8:]}-0000-0000-000000000000"


def highest_id(ms: int) -> str:
    """An id above every id made at or before millisecond ``ms``."""
    digits = f"{ms:012x}"
    return f"{digits[:8]}-{digits[8:]}-ffff-ffff-ffffffffffff"


def bucket(ms: int) -> str:
    """The partition of the ids made in the UTC hour of millisecond ``ms``: 2026-12-01T18."""
    return (_EPOCH + timedelta(hours=ms // HOUR_MS)).strftime("%Y-%m-%dT%H")


@dataclass(frozen=True, slots=True)
class EventTable:
    """Where events go, and how long they are kept."""

    name: str
    retention: timedelta = DEFAULT_EVENT_RETENTION

    def put(self, event: DomainEvent) -> Action:
        """The event's item, for the transaction of the change that raises it."""
        made = id_ms(event.event_id)
        # Kept for the retention after the later of its time and its id's: a reader keeps
        # every id made within the retention, so TTL must not delete one of them earlier.
        kept_from = max(event.at, _EPOCH + timedelta(milliseconds=made))
        item: Item = {
            "bucket": s(bucket(made)),
            "event_id": s(event.event_id),
            "at": s(to_iso(event.at)),
            "body": s(json.dumps(event.to_json())),
            # Epoch seconds, the TTL attribute's format; rounding up never deletes early.
            "expires_at": n(math.ceil((kept_from + self.retention).timestamp())),
        }
        # An event is logged once: a second item of one id is a bug, not an overwrite.
        return {
            "Put": {
                "TableName": self.name,
                "Item": item,
                "ConditionExpression": "attribute_not_exists(event_id)",
            }
        }


def decode_event(item: Item) -> LoggedEvent:
    event = DomainEvent.from_json(json.loads(item["body"]["S"]))
    return LoggedEvent(position=item["event_id"]["S"], event=event)


class DynamoEventLog:
    def __init__(
        self, call: Call, table: EventTable, settle: timedelta = DEFAULT_EVENT_SETTLE
    ) -> None:
        self._call = call
        self._table = table
        self._settle = settle

    async def read(self, after: str | None, limit: int, *, now: datetime) -> list[LoggedEvent]:
        oldest = ms_of(now - self._table.retention)
        newest = ms_of(now - self._settle)
        if after is None:
            start_ms, lowest = oldest, lowest_id(oldest)
        else:
            start_ms = _position_ms(after, oldest, ms_of(now + _CLOCK_SKEW))
            # The smallest text above ``after`` that a 36-character id can be: every id
            # greater than ``after`` differs from it at some character, upwards.
            lowest = after + "~"
        highest = highest_id(newest)
        found: list[LoggedEvent] = []
        hour, last = start_ms // HOUR_MS, newest // HOUR_MS
        while hour <= last and len(found) < limit:
            # Each hour's query is bounded to the hour, and to what the reader asked.
            low = max(lowest, lowest_id(hour * HOUR_MS))
            high = min(highest, highest_id((hour + 1) * HOUR_MS - 1))
            found += await self._read_hour(hour, low, high, limit - len(found))
            hour += 1
        return found

    async def head(self, *, now: datetime) -> str:
        # Reading after this gives the events made since ``now - settle``: every one that
        # commits from now on, and a few that committed just before.
        return lowest_id(ms_of(now - self._settle))

    async def _read_hour(self, hour: int, low: str, high: str, want: int) -> list[LoggedEvent]:
        if low > high:
            return []
        params: dict[str, Any] = {
            "TableName": self._table.name,
            "KeyConditionExpression": "#bucket = :bucket AND #id BETWEEN :low AND :high",
            "ExpressionAttributeNames": {"#bucket": "bucket", "#id": "event_id"},
            "ExpressionAttributeValues": {
                ":bucket": s(bucket(hour * HOUR_MS)),
                ":low": s(low),
                ":high": s(high),
            },
            "ConsistentRead": True,
            "ScanIndexForward": True,
        }
        return await query_until(
            self._call, params, want, lambda items: [decode_event(item) for item in items]
        )


def _position_ms(position: str, oldest: int, latest: int) -> int:
    """The millisecond of a position this log gave, or PositionNotKept."""
    try:
        parsed = uuid.UUID(position)
    except ValueError:
        raise PositionNotKept(f"{position!r} is not a position this store gave") from None
    if str(parsed) != position:
        raise PositionNotKept(f"{position!r} is not a position this store gave")
    made = parsed.int >> 80
    if made < oldest:
        raise PositionNotKept(
            f"events after position {position} are no longer kept (older than the retention)"
        )
    if made > latest:
        raise PositionNotKept(f"position {position} is beyond the newest event")
    return made
