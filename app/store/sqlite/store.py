"""SQLite adapter: the embedded default store, and ``:memory:`` for fast tests.

One connection per process; an asyncio lock keeps each transaction whole inside the
process, and ``BEGIN IMMEDIATE`` takes SQLite's write lock up front so that several
processes sharing one file serialise their read-decide-write steps as well.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from app.benches.domain import AdminState, Bench, Heartbeat
from app.history.domain import HistoryEntry
from app.store.base import (
    AlreadyExists,
    BenchQuery,
    ItemNotFound,
    Page,
    StoreUnavailable,
    VersionMismatch,
)
from app.timeutil import from_iso, to_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS benches (
    bench_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    labels TEXT NOT NULL,
    heartbeat_interval_s INTEGER NOT NULL,
    admin_state TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_heartbeat_at TEXT,
    agent_version TEXT,
    heartbeat_details TEXT
);
CREATE TABLE IF NOT EXISTS bench_capabilities (
    capability TEXT NOT NULL,
    bench_id TEXT NOT NULL REFERENCES benches(bench_id),
    PRIMARY KEY (capability, bench_id)
);
CREATE INDEX IF NOT EXISTS bench_capabilities_by_bench ON bench_capabilities(bench_id);
CREATE TABLE IF NOT EXISTS history (
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    request_id TEXT NOT NULL,
    action TEXT NOT NULL,
    changes TEXT NOT NULL,
    PRIMARY KEY (entity_type, entity_id, version)
);
"""


class SqliteDatabase:
    """The connection and the transaction discipline every repository shares."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> SqliteDatabase:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        connection = await aiosqlite.connect(path, isolation_level=None, timeout=30.0)
        connection.row_factory = aiosqlite.Row
        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.execute("PRAGMA foreign_keys=ON")
        await connection.execute("PRAGMA busy_timeout=30000")
        await connection.executescript(SCHEMA)
        return cls(connection)

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

    @asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            yield self._connection

    async def close(self) -> None:
        await self._connection.close()


def _bench_from_row(row: sqlite3.Row, capabilities: list[str]) -> Bench:
    heartbeat = None
    if row["last_heartbeat_at"] is not None:
        heartbeat = Heartbeat(
            at=from_iso(row["last_heartbeat_at"]),
            agent_version=row["agent_version"],
            details=json.loads(row["heartbeat_details"] or "{}"),
        )
    return Bench(
        bench_id=row["bench_id"],
        name=row["name"],
        type=row["type"],
        capabilities=frozenset(capabilities),
        labels=json.loads(row["labels"]),
        heartbeat_interval_s=row["heartbeat_interval_s"],
        admin_state=AdminState(row["admin_state"]),
        version=row["version"],
        created_at=from_iso(row["created_at"]),
        updated_at=from_iso(row["updated_at"]),
        last_heartbeat=heartbeat,
    )


async def _insert_history(connection: aiosqlite.Connection, entry: HistoryEntry) -> None:
    await connection.execute(
        "INSERT INTO history (entity_type, entity_id, version, at, actor, request_id, action,"
        " changes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            entry.entity_type,
            entry.entity_id,
            entry.version,
            to_iso(entry.at),
            entry.actor,
            entry.request_id,
            entry.action,
            json.dumps(entry.changes),
        ),
    )


class SqliteBenchRepository:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def create(self, bench: Bench, entry: HistoryEntry) -> None:
        async with self._db.write() as connection:
            try:
                await connection.execute(
                    "INSERT INTO benches (bench_id, name, type, labels, heartbeat_interval_s,"
                    " admin_state, version, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        bench.bench_id,
                        bench.name,
                        bench.type,
                        json.dumps(bench.labels),
                        bench.heartbeat_interval_s,
                        bench.admin_state.value,
                        bench.version,
                        to_iso(bench.created_at),
                        to_iso(bench.updated_at),
                    ),
                )
            except sqlite3.IntegrityError as error:
                raise AlreadyExists(bench.bench_id) from error
            await self._insert_capabilities(connection, bench.bench_id, bench.capabilities)
            await _insert_history(connection, entry)

    async def get(self, bench_id: str) -> Bench | None:
        async with self._db.read() as connection:
            return await self._get(connection, bench_id)

    async def update(self, current: Bench, bench: Bench, entry: HistoryEntry) -> None:
        async with self._db.write() as connection:
            cursor = await connection.execute(
                "UPDATE benches SET name = ?, type = ?, labels = ?, heartbeat_interval_s = ?,"
                " admin_state = ?, version = ?, updated_at = ?"
                " WHERE bench_id = ? AND version = ?",
                (
                    bench.name,
                    bench.type,
                    json.dumps(bench.labels),
                    bench.heartbeat_interval_s,
                    bench.admin_state.value,
                    bench.version,
                    to_iso(bench.updated_at),
                    bench.bench_id,
                    current.version,
                ),
            )
            if cursor.rowcount == 0:
                stored = await self._get(connection, bench.bench_id)
                if stored is None:
                    raise ItemNotFound(bench.bench_id)
                raise VersionMismatch(stored)
            await connection.execute(
                "DELETE FROM bench_capabilities WHERE bench_id = ?", (bench.bench_id,)
            )
            await self._insert_capabilities(connection, bench.bench_id, bench.capabilities)
            await _insert_history(connection, entry)

    async def record_heartbeat(self, bench_id: str, heartbeat: Heartbeat) -> Bench:
        async with self._db.write() as connection:
            cursor = await connection.execute(
                "UPDATE benches SET last_heartbeat_at = ?, agent_version = ?,"
                " heartbeat_details = ? WHERE bench_id = ?",
                (
                    to_iso(heartbeat.at),
                    heartbeat.agent_version,
                    json.dumps(heartbeat.details),
                    bench_id,
                ),
            )
            if cursor.rowcount == 0:
                raise ItemNotFound(bench_id)
            bench = await self._get(connection, bench_id)
        assert bench is not None  # updated inside this very transaction
        return bench

    async def find(self, query: BenchQuery, limit: int, after: str | None) -> Page[Bench]:
        clauses: list[str] = ["bench_id > ?"]
        params: list[Any] = [after or ""]
        for capability in sorted(query.capabilities):
            clauses.append(
                "bench_id IN (SELECT bench_id FROM bench_capabilities WHERE capability = ?)"
            )
            params.append(capability)
        if query.type is not None:
            clauses.append("type = ?")
            params.append(query.type)
        if query.admin_state is not None:
            clauses.append("admin_state = ?")
            params.append(query.admin_state)
        sql = f"SELECT * FROM benches WHERE {' AND '.join(clauses)} ORDER BY bench_id LIMIT ?"
        async with self._db.read() as connection:
            rows = list(await connection.execute_fetchall(sql, [*params, limit + 1]))
            benches = [
                _bench_from_row(row, await self._capabilities(connection, row["bench_id"]))
                for row in rows[:limit]
            ]
        next_after = benches[-1].bench_id if len(rows) > limit else None
        return Page(items=benches, next_after=next_after)

    async def _get(self, connection: aiosqlite.Connection, bench_id: str) -> Bench | None:
        rows = list(
            await connection.execute_fetchall(
                "SELECT * FROM benches WHERE bench_id = ?", (bench_id,)
            )
        )
        if not rows:
            return None
        return _bench_from_row(rows[0], await self._capabilities(connection, bench_id))

    @staticmethod
    async def _capabilities(connection: aiosqlite.Connection, bench_id: str) -> list[str]:
        rows = await connection.execute_fetchall(
            "SELECT capability FROM bench_capabilities WHERE bench_id = ?", (bench_id,)
        )
        return [row["capability"] for row in rows]

    @staticmethod
    async def _insert_capabilities(
        connection: aiosqlite.Connection, bench_id: str, capabilities: frozenset[str]
    ) -> None:
        await connection.executemany(
            "INSERT INTO bench_capabilities (capability, bench_id) VALUES (?, ?)",
            [(capability, bench_id) for capability in sorted(capabilities)],
        )


class SqliteHistoryRepository:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def find(
        self, entity_type: str, entity_id: str, limit: int, after: int | None
    ) -> Page[HistoryEntry]:
        async with self._db.read() as connection:
            rows = list(
                await connection.execute_fetchall(
                    "SELECT * FROM history WHERE entity_type = ? AND entity_id = ?"
                    " AND version > ? ORDER BY version LIMIT ?",
                    (entity_type, entity_id, after or 0, limit + 1),
                )
            )
        entries = [
            HistoryEntry(
                entity_type=row["entity_type"],
                entity_id=row["entity_id"],
                version=row["version"],
                at=from_iso(row["at"]),
                actor=row["actor"],
                request_id=row["request_id"],
                action=row["action"],
                changes=json.loads(row["changes"]),
            )
            for row in rows[:limit]
        ]
        next_after = str(entries[-1].version) if len(rows) > limit else None
        return Page(items=entries, next_after=next_after)


class SqliteStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self.benches = SqliteBenchRepository(db)
        self.history = SqliteHistoryRepository(db)

    @classmethod
    async def open(cls, path: str) -> SqliteStore:
        try:
            return cls(await SqliteDatabase.open(path))
        except (sqlite3.Error, OSError) as error:
            raise StoreUnavailable(f"cannot open SQLite store at {path}: {error}") from error

    async def ping(self) -> None:
        try:
            async with self._db.read() as connection:
                await connection.execute_fetchall("SELECT 1")
        except (sqlite3.Error, ValueError) as error:
            raise StoreUnavailable(str(error)) from error

    async def close(self) -> None:
        await self._db.close()
