"""History entries on DynamoDB: written with the changes they describe, read per entity.

Entries are written by the other repositories, inside the transactions that make the
changes they describe (``HistoryTable.puts``: the entry, and the event it raises if any);
the repository here only reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.history.domain import HistoryEntry
from app.store.base import Page
from app.store.dynamodb.calls import Call, one_more_than, page_of, query_until
from app.store.dynamodb.codec import Action, Item, decode_history, entity, n, put_history, s
from app.store.dynamodb.events import EventTable


@dataclass(frozen=True, slots=True)
class HistoryTable:
    """Where history entries go, how long they are kept (None: for ever), and where the
    events they raise go."""

    name: str
    events: EventTable
    retention: timedelta | None = None

    def puts(self, entry: HistoryEntry) -> list[Action]:
        """The actions that store ``entry``, for the transaction of its change: its item,
        and its event's item when the change raises one (both commit, or neither)."""
        expires_at = None if self.retention is None else entry.at + self.retention
        actions = [put_history(self.name, entry, expires_at)]
        if entry.event is not None:
            actions.append(self.events.put(entry.event))
        return actions


class DynamoHistoryRepository:
    def __init__(self, call: Call, table: str) -> None:
        self._call = call
        self._table = table

    async def find(
        self, entity_type: str, entity_id: str, limit: int, after: int | None, *, now: datetime
    ) -> Page[HistoryEntry]:
        want = one_more_than(limit)
        condition = "entity = :entity"
        values: Item = {":entity": s(entity(entity_type, entity_id))}
        if after is not None:
            condition += " AND #version > :after"
            values[":after"] = n(after)
        # TTL deletes expired entries some time after they expire (moto never does): reads
        # skip them from the moment they expire.
        values[":now"] = n(int(now.timestamp()))
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": condition,
            "FilterExpression": "attribute_not_exists(#expires) OR #expires > :now",
            "ExpressionAttributeValues": values,
            "ExpressionAttributeNames": {"#expires": "expires_at"},
            "ConsistentRead": True,
            "ScanIndexForward": True,
        }
        if after is not None:
            params["ExpressionAttributeNames"]["#version"] = "version"
        # Pages are not widened for the TTL filter: it only drops entries past retention.
        entries = await query_until(
            self._call, params, want, lambda items: [decode_history(item) for item in items]
        )
        return page_of(entries, limit, lambda entry: str(entry.version))
