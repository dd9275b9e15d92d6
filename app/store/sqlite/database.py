"""The SQLite connection and the transaction discipline every repository shares.

One connection per process; an asyncio lock keeps each transaction whole inside the
process, and ``BEGIN IMMEDIATE`` takes SQLite's write lock up front so that several
processes sharing one file serialise their read-decide-write steps as well. What every
creating or changing transaction writes besides its own rows (the history entry, the
idempotency key) is written here, so each repository does it the same way.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from types import TracebackType

import aiosqlite

from app.events.domain import DomainEvent
from app.history.domain import HistoryEntry
from app.store.base import IdempotencyKeyTaken, IdempotencyRecord, StoreUnavailable
from app.store.sqlite.idempotency import KEYS
from app.store.sqlite.outbox import install_outbox
from app.store.sqlite.schema import SCHEMA, add_missing_columns
from app.timeutil import to_iso

# How long the event log keeps events unless told otherwise (settings: event_retention_h).
DEFAULT_EVENT_RETENTION = timedelta(days=7)


class _Held:
    """The connection while this process's lock is held, for one read or one statement.
    A class, not an ``asynccontextmanager``: reads and heartbeats are the hottest paths,
    and a generator-based manager costs them a generator and its wrapper each time."""

    __slots__ = ("_connection", "_lock")

    def __init__(self, lock: asyncio.Lock, connection: aiosqlite.Connection) -> None:
        self._lock = lock
        self._connection = connection

    async def __aenter__(self) -> aiosqlite.Connection:
        await self._lock.acquire()
        return self._connection

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._lock.release()
        if isinstance(error, sqlite3.OperationalError):
            raise StoreUnavailable(str(error)) from error


class SqliteDatabase:
    """The connection and the transaction discipline every repository shares."""

    def __init__(
        self,
        connection: aiosqlite.Connection,
        history_retention: timedelta | None = None,
        event_retention: timedelta = DEFAULT_EVENT_RETENTION,
    ) -> None:
        self._connection = connection
        self._lock = asyncio.Lock()
        self.history_retention = history_retention
        self.event_retention = event_retention

    @classmethod
    async def open(
        cls,
        path: str,
        history_retention: timedelta | None = None,
        event_retention: timedelta = DEFAULT_EVENT_RETENTION,
    ) -> SqliteDatabase:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        connection = await aiosqlite.connect(path, isolation_level=None, timeout=30.0)
        connection.row_factory = aiosqlite.Row
        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.execute("PRAGMA foreign_keys=ON")
        await connection.execute("PRAGMA busy_timeout=30000")
        await connection.executescript(SCHEMA)
        await add_missing_columns(connection)
        # After every column change: the outbox triggers copy the live columns.
        await install_outbox(connection)
        return cls(connection, history_retention, event_retention)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: all of it commits, or none of it."""
        async with self._lock:
            try:
                await self._connection.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:
                raise StoreUnavailable(str(error)) from error
            try:
                yield self._connection
            except BaseException:
                await self._connection.rollback()
                raise
            else:
                await self._connection.commit()

    def statement(self) -> _Held:
        """One statement on its own, which SQLite makes atomic without BEGIN/COMMIT: a
        single round trip where a transaction would take three more."""
        return _Held(self._lock, self._connection)

    def read(self) -> _Held:
        return _Held(self._lock, self._connection)

    async def close(self) -> None:
        await self._connection.close()

    async def insert_history(self, connection: aiosqlite.Connection, entry: HistoryEntry) -> None:
        """Inside the caller's write transaction, with the change it describes."""
        retention = self.history_retention
        await connection.execute(
            "INSERT INTO history (entity_type, entity_id, version, at, actor, request_id, action,"
            " changes, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.entity_type,
                entry.entity_id,
                entry.version,
                to_iso(entry.at),
                entry.actor,
                entry.request_id,
                entry.action,
                json.dumps(entry.changes),
                None if retention is None else to_iso(entry.at + retention),
            ),
        )
        if entry.event is not None:
            await self.insert_events(connection, [entry.event])

    @staticmethod
    async def insert_events(connection: aiosqlite.Connection, events: list[DomainEvent]) -> None:
        """Inside the caller's write transaction: the log gets them only if it commits."""
        await connection.executemany(
            "INSERT INTO events (event_id, at, body) VALUES (?, ?, ?)",
            [(e.event_id, to_iso(e.at), json.dumps(e.to_json())) for e in events],
        )

    @staticmethod
    async def claim_key(connection: aiosqlite.Connection, record: IdempotencyRecord | None) -> None:
        """Inside the creating transaction: take the key, or raise with the record holding it."""
        if record is None:
            return
        stored = await KEYS.read(connection, record.key)
        if stored is not None:
            if stored.expires_at > record.created_at:
                raise IdempotencyKeyTaken(stored)
            await connection.execute("DELETE FROM idempotency_keys WHERE key = ?", (record.key,))
        await KEYS.insert(connection, record)
