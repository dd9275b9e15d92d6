"""Webhook subscriptions and their deliveries.

A delivery row per subscription and event (its key says so, and ``add`` inserts only the
new ones), so fan-out that runs twice creates each once. The relay's checkpoint lives in
the feed checkpoint table under a name of its own.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.events.domain import DomainEvent
from app.history.domain import HistoryEntry
from app.store.base import ItemNotFound, Page, VersionMismatch, Write
from app.store.sqlite.database import SqliteDatabase
from app.store.sqlite.outbox import CHECKPOINTS_TABLE
from app.store.sqlite.table import Table
from app.timeutil import from_iso, to_iso
from app.webhooks.domain import (
    Attempt,
    Delivery,
    DeliveryStatus,
    Webhook,
    WebhookFormat,
    WebhookState,
)

RELAY_CHECKPOINT = "webhook-relay"
_OPEN = tuple(status.value for status in DeliveryStatus if status.is_open)


def _optional_iso(moment: datetime | None) -> str | None:
    return None if moment is None else to_iso(moment)


def _optional_time(text: str | None) -> datetime | None:
    return None if text is None else from_iso(text)


def _webhook_row(webhook: Webhook) -> dict[str, Any]:
    return {
        "webhook_id": webhook.webhook_id,
        "owner": webhook.owner,
        "url": webhook.url,
        "events": json.dumps(list(webhook.events)),
        "bench_id": webhook.bench_id,
        "user_id": webhook.user_id,
        "format": webhook.format.value,
        "secret": webhook.secret,
        "state": webhook.state.value,
        "disabled_reason": webhook.disabled_reason,
        "failing_since": _optional_iso(webhook.failing_since),
        "version": webhook.version,
        "created_at": to_iso(webhook.created_at),
        "updated_at": to_iso(webhook.updated_at),
    }


def _webhook_from_row(row: sqlite3.Row) -> Webhook:
    return Webhook(
        webhook_id=row["webhook_id"],
        owner=row["owner"],
        url=row["url"],
        events=tuple(json.loads(row["events"])),
        bench_id=row["bench_id"],
        user_id=row["user_id"],
        format=WebhookFormat(row["format"]),
        secret=row["secret"],
        state=WebhookState(row["state"]),
        disabled_reason=row["disabled_reason"],
        failing_since=_optional_time(row["failing_since"]),
        version=row["version"],
        created_at=from_iso(row["created_at"]),
        updated_at=from_iso(row["updated_at"]),
    )


# failing_since is not configuration: a replace leaves it as stored.
WEBHOOKS: Table[Webhook] = Table(
    "webhooks", "webhook_id", _webhook_row, _webhook_from_row, insert_only=("failing_since",)
)


def _delivery_row(delivery: Delivery) -> dict[str, Any]:
    return {
        "webhook_id": delivery.webhook_id,
        "delivery_id": delivery.delivery_id,
        "entity_key": delivery.entity_key,
        "event": json.dumps(delivery.event.to_json()),
        "status": delivery.status.value,
        "due_at": _optional_iso(delivery.due_at),
        "attempts": json.dumps([a.to_json() for a in delivery.attempts]),
        "sender": delivery.sender,
        "version": delivery.version,
        "created_at": to_iso(delivery.created_at),
        "updated_at": to_iso(delivery.updated_at),
    }


def _delivery_from_row(row: sqlite3.Row) -> Delivery:
    return Delivery(
        webhook_id=row["webhook_id"],
        delivery_id=row["delivery_id"],
        event=DomainEvent.from_json(json.loads(row["event"])),
        status=DeliveryStatus(row["status"]),
        due_at=_optional_time(row["due_at"]),
        attempts=tuple(Attempt.from_json(a) for a in json.loads(row["attempts"])),
        sender=row["sender"],
        version=row["version"],
        created_at=from_iso(row["created_at"]),
        updated_at=from_iso(row["updated_at"]),
    )


class SqliteWebhookRepository:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def create(self, webhook: Webhook, entry: HistoryEntry) -> None:
        async with self._db.write() as connection:
            await WEBHOOKS.insert(connection, webhook)
            await self._db.insert_history(connection, entry)

    async def get(self, webhook_id: str) -> Webhook | None:
        async with self._db.read() as connection:
            return await WEBHOOKS.read(connection, webhook_id)

    async def update(self, current: Webhook, updated: Webhook, entry: HistoryEntry) -> None:
        async with self._db.write() as connection:
            await WEBHOOKS.write(
                connection, current.webhook_id, Write(current, updated), current.version
            )
            await self._db.insert_history(connection, entry)

    async def delete(self, current: Webhook, entry: HistoryEntry) -> None:
        async with self._db.write() as connection:
            cursor = await connection.execute(
                "DELETE FROM webhooks WHERE webhook_id = ? AND version = ?",
                (current.webhook_id, current.version),
            )
            if cursor.rowcount == 0:
                stored = await WEBHOOKS.read(connection, current.webhook_id)
                if stored is None:
                    raise ItemNotFound(current.webhook_id)
                raise VersionMismatch(stored)
            await self._db.insert_history(connection, entry)

    async def record_failing(self, webhook_id: str, failing_since: datetime | None) -> None:
        async with self._db.statement() as connection:
            await connection.execute(
                "UPDATE webhooks SET failing_since = ? WHERE webhook_id = ?",
                (_optional_iso(failing_since), webhook_id),
            )

    async def find(self, owner: str | None, limit: int, after: str | None) -> Page[Webhook]:
        clauses, params = ([], []) if owner is None else (["owner = ?"], [owner])
        async with self._db.read() as connection:
            return await WEBHOOKS.page(
                connection,
                clauses,
                params,
                ("webhook_id",),
                after,
                limit,
                lambda webhook: webhook.webhook_id,
            )


class SqliteDeliveryRepository:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def add(self, deliveries: Sequence[Delivery]) -> int:
        if not deliveries:
            return 0
        rows = [_delivery_row(delivery) for delivery in deliveries]
        columns = ", ".join(f'"{column}"' for column in rows[0])
        marks = ", ".join("?" for _ in rows[0])
        async with self._db.write() as connection:
            before = connection.total_changes
            await connection.executemany(
                f"INSERT OR IGNORE INTO deliveries ({columns}) VALUES ({marks})",
                [list(row.values()) for row in rows],
            )
            return connection.total_changes - before

    async def get(self, webhook_id: str, delivery_id: str) -> Delivery | None:
        async with self._db.read() as connection:
            rows = list(
                await connection.execute_fetchall(
                    "SELECT * FROM deliveries WHERE webhook_id = ? AND delivery_id = ?",
                    (webhook_id, delivery_id),
                )
            )
        return _delivery_from_row(rows[0]) if rows else None

    async def update(self, current: Delivery, updated: Delivery) -> None:
        row = _delivery_row(updated)
        assignments = ", ".join(f'"{column}" = ?' for column in row)
        async with self._db.write() as connection:
            cursor = await connection.execute(
                f"UPDATE deliveries SET {assignments}"
                " WHERE webhook_id = ? AND delivery_id = ? AND version = ?",
                [*row.values(), current.webhook_id, current.delivery_id, current.version],
            )
            if cursor.rowcount == 0:
                rows = list(
                    await connection.execute_fetchall(
                        "SELECT * FROM deliveries WHERE webhook_id = ? AND delivery_id = ?",
                        (current.webhook_id, current.delivery_id),
                    )
                )
                if not rows:
                    raise ItemNotFound(current.delivery_id)
                raise VersionMismatch(_delivery_from_row(rows[0]))

    async def find(self, webhook_id: str, limit: int, after: str | None) -> Page[Delivery]:
        params: list[Any] = [webhook_id, after or "", limit + 1]
        async with self._db.read() as connection:
            rows = list(
                await connection.execute_fetchall(
                    "SELECT * FROM deliveries WHERE webhook_id = ? AND delivery_id > ?"
                    " ORDER BY delivery_id LIMIT ?",
                    params,
                )
            )
        items = [_delivery_from_row(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(items, items[-1].delivery_id if more else None)

    async def find_due(self, now: datetime, limit: int) -> list[Delivery]:
        async with self._db.read() as connection:
            rows = await connection.execute_fetchall(
                f"SELECT * FROM deliveries WHERE status IN ({', '.join('?' for _ in _OPEN)})"
                " AND due_at <= ? ORDER BY due_at LIMIT ?",
                (*_OPEN, to_iso(now), limit),
            )
        return [_delivery_from_row(row) for row in rows]

    async def first_open(self, webhook_id: str, entity_key: str) -> str | None:
        async with self._db.read() as connection:
            rows = list(
                await connection.execute_fetchall(
                    "SELECT delivery_id FROM deliveries WHERE webhook_id = ? AND entity_key = ?"
                    f" AND status IN ({', '.join('?' for _ in _OPEN)})"
                    " ORDER BY delivery_id LIMIT 1",
                    (webhook_id, entity_key, *_OPEN),
                )
            )
        return str(rows[0]["delivery_id"]) if rows else None

    async def relay_position(self) -> tuple[int, str | None]:
        async with self._db.read() as connection:
            rows = list(
                await connection.execute_fetchall(
                    f"SELECT version, position FROM {CHECKPOINTS_TABLE} WHERE name = ?",
                    (RELAY_CHECKPOINT,),
                )
            )
        if not rows:
            return 0, None
        return int(rows[0]["version"]), str(rows[0]["position"])

    async def advance_relay(self, version: int, position: str) -> bool:
        now = to_iso(datetime.now().astimezone())
        async with self._db.write() as connection:
            if version == 0:
                cursor = await connection.execute(
                    f"INSERT OR IGNORE INTO {CHECKPOINTS_TABLE}"
                    " (name, version, position, updated_at) VALUES (?, 1, ?, ?)",
                    (RELAY_CHECKPOINT, position, now),
                )
            else:
                cursor = await connection.execute(
                    f"UPDATE {CHECKPOINTS_TABLE} SET version = ?, position = ?, updated_at = ?"
                    " WHERE name = ? AND version = ?",
                    (version + 1, position, now, RELAY_CHECKPOINT, version),
                )
            return cursor.rowcount == 1
