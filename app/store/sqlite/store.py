"""SQLite adapter: the embedded default store, and ``:memory:`` for fast tests.

This module only assembles the store from its parts: the connection and transaction
rules (database.py), the schema (schema.py), the generic table helper (table.py), and one
module per aggregate (benches, reservations, executions, history, idempotency).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

from app.store.base import StoreUnavailable
from app.store.sqlite.benches import SqliteBenchRepository
from app.store.sqlite.database import DEFAULT_EVENT_RETENTION, SqliteDatabase
from app.store.sqlite.events import SqliteEventLog
from app.store.sqlite.executions import SqliteExecutionRepository
from app.store.sqlite.history import SqliteHistoryRepository
from app.store.sqlite.idempotency import SqliteIdempotencyRepository
from app.store.sqlite.outbox import OUTBOX_TABLE
from app.store.sqlite.quotas import SqliteQuotaRepository
from app.store.sqlite.reservations import SqliteReservationRepository
from app.store.sqlite.webhooks import SqliteDeliveryRepository, SqliteWebhookRepository
from app.timeutil import to_iso


class SqliteStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self.benches = SqliteBenchRepository(db)
        self.history = SqliteHistoryRepository(db)
        self.reservations = SqliteReservationRepository(db)
        self.idempotency = SqliteIdempotencyRepository(db)
        self.executions = SqliteExecutionRepository(db)
        self.events = SqliteEventLog(db)
        self.webhooks = SqliteWebhookRepository(db)
        self.deliveries = SqliteDeliveryRepository(db)
        self.quotas = SqliteQuotaRepository(db)

    @classmethod
    async def open(
        cls,
        path: str,
        history_retention: timedelta | None = None,
        event_retention: timedelta = DEFAULT_EVENT_RETENTION,
    ) -> SqliteStore:
        try:
            return cls(await SqliteDatabase.open(path, history_retention, event_retention))
        except (sqlite3.Error, OSError) as error:
            raise StoreUnavailable(f"cannot open SQLite store at {path}: {error}") from error

    async def ping(self) -> None:
        try:
            async with self._db.read() as connection:
                await connection.execute_fetchall("SELECT 1")
        except (sqlite3.Error, ValueError) as error:
            raise StoreUnavailable(str(error)) from error

    async def purge_expired(self, now: datetime) -> int:
        """History past its expiry, outbox rows older than the same retention, and the
        event log's events older than its own."""
        async with self._db.write() as connection:
            logged = await connection.execute(
                "DELETE FROM events WHERE at < ?", (to_iso(now - self._db.event_retention),)
            )
        retention = self._db.history_retention
        if retention is None:
            return logged.rowcount
        async with self._db.write() as connection:
            history = await connection.execute(
                "DELETE FROM history WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (to_iso(now),),
            )
            events = await connection.execute(
                f"DELETE FROM {OUTBOX_TABLE} WHERE at <= ?",
                (to_iso(now - retention),),
            )
            return history.rowcount + events.rowcount + logged.rowcount

    async def close(self) -> None:
        await self._db.close()
