"""The floor app's SQLite store, and what both floor stores share: the bench documents
they are seeded with (see ``bench/floor.py``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import aiosqlite

CAPABILITIES = ("can", "lin", "jtag")


def bench_doc(n: int) -> dict[str, Any]:
    """A bench as the service would render it: the same fields, the same size."""
    return {
        "bench_id": f"b-{n:04d}",
        "name": f"bench {n}",
        "type": "hil",
        "capabilities": [CAPABILITIES[n % len(CAPABILITIES)]],
        "labels": {"room": "lab-1"},
        "heartbeat_interval_s": 30,
        "admin_state": "active",
        "concurrency": 1,
        "status": "online",
        "last_heartbeat_at": None,
        "agent_version": None,
        "version": 1,
        "created_at": "2026-12-01T00:00:00Z",
        "updated_at": "2026-12-01T00:00:00Z",
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS benches (bench_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS capabilities (capability TEXT, bench_id TEXT,
    PRIMARY KEY (capability, bench_id));
CREATE TABLE IF NOT EXISTS reservations (reservation_id TEXT PRIMARY KEY, bench_id TEXT,
    start TEXT, "end" TEXT);
CREATE INDEX IF NOT EXISTS reservations_by_bench ON reservations (bench_id, start);
CREATE TABLE IF NOT EXISTS history (entity_id TEXT, version INTEGER, doc TEXT,
    PRIMARY KEY (entity_id, version));
CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, bench_id TEXT, status TEXT);
CREATE INDEX IF NOT EXISTS tasks_ready ON tasks (bench_id, status, task_id);
"""


class SqliteFloor:
    """One connection, as the service has, so one lock: a statement sent while another
    request's transaction is open would run inside it."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> SqliteFloor:
        connection = await aiosqlite.connect(path, isolation_level=None)
        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.executescript(_SQLITE_SCHEMA)
        return cls(connection)

    async def seed(
        self, benches: int, history: int, claim_benches: int, tasks_per_bench: int
    ) -> None:
        await self._db.execute("BEGIN")
        for n in range(benches):
            doc = bench_doc(n)
            await self._db.execute(
                "INSERT OR REPLACE INTO benches VALUES (?, ?)", (doc["bench_id"], json.dumps(doc))
            )
            await self._db.execute(
                "INSERT OR REPLACE INTO capabilities VALUES (?, ?)",
                (doc["capabilities"][0], doc["bench_id"]),
            )
        await self._db.executemany(
            "INSERT OR REPLACE INTO history VALUES ('b-0000', ?, ?)",
            [
                (v, json.dumps({"version": v, "action": "update", "at": now_iso()}))
                for v in range(history)
            ],
        )
        await self._db.executemany(
            "INSERT OR REPLACE INTO tasks VALUES (?, ?, 'ready')",
            [
                (f"c-{b:04d}.{t:06d}", f"c-{b:04d}")
                for b in range(claim_benches)
                for t in range(tasks_per_bench)
            ],
        )
        await self._db.execute("COMMIT")

    async def get(self, bench_id: str) -> dict[str, Any] | None:
        async with self._lock:
            rows = await self._db.execute_fetchall(
                "SELECT doc FROM benches WHERE bench_id = ?", (bench_id,)
            )
            return next((json.loads(row[0]) for row in rows), None)

    async def heartbeat(self, bench_id: str, at: str, version: str) -> dict[str, Any] | None:
        async with self._lock:
            rows = await self._db.execute_fetchall(
                "UPDATE benches SET doc = json_set(doc, '$.last_heartbeat_at', ?,"
                " '$.agent_version', ?) WHERE bench_id = ? RETURNING doc",
                (at, version, bench_id),
            )
            return next((json.loads(row[0]) for row in rows), None)

    async def book(self, bench_id: str, start: str, end: str) -> dict[str, Any] | None:
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                overlap = await self._db.execute_fetchall(
                    'SELECT 1 FROM reservations WHERE bench_id = ? AND start < ? AND "end" > ?'
                    " LIMIT 1",
                    (bench_id, end, start),
                )
                if overlap:
                    await self._db.execute("ROLLBACK")
                    return None
                reservation = {
                    "reservation_id": str(uuid.uuid4()),
                    "bench_id": bench_id,
                    "start": start,
                    "end": end,
                }
                await self._db.execute(
                    "INSERT INTO reservations VALUES (?, ?, ?, ?)",
                    (reservation["reservation_id"], bench_id, start, end),
                )
                await self._db.execute("COMMIT")
                return reservation
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise

    async def by_capability(self, capability: str, limit: int) -> list[dict[str, Any]]:
        async with self._lock:
            rows = await self._db.execute_fetchall(
                "SELECT doc FROM benches WHERE bench_id IN"
                " (SELECT bench_id FROM capabilities WHERE capability = ?)"
                " ORDER BY bench_id LIMIT ?",
                (capability, limit),
            )
            return [json.loads(row[0]) for row in rows]

    async def calendar(self, bench_id: str, start: str, end: str) -> list[dict[str, Any]]:
        async with self._lock:
            rows = await self._db.execute_fetchall(
                'SELECT reservation_id, start, "end" FROM reservations WHERE bench_id = ?'
                ' AND start < ? AND "end" > ? ORDER BY start',
                (bench_id, end, start),
            )
            return [{"reservation_id": r[0], "start": r[1], "end": r[2]} for r in rows]

    async def history(self, bench_id: str, limit: int) -> list[dict[str, Any]]:
        async with self._lock:
            rows = await self._db.execute_fetchall(
                "SELECT doc FROM history WHERE entity_id = ? ORDER BY version LIMIT ?",
                (bench_id, limit),
            )
            return [json.loads(row[0]) for row in rows]

    async def claim(self, bench_id: str) -> dict[str, Any] | None:
        async with self._lock:
            rows = await self._db.execute_fetchall(
                "UPDATE tasks SET status = 'leased' WHERE task_id = (SELECT task_id FROM tasks"
                " WHERE bench_id = ? AND status = 'ready' ORDER BY task_id LIMIT 1)"
                " RETURNING task_id, bench_id",
                (bench_id,),
            )
            return next(
                ({"task_id": r[0], "bench_id": r[1], "status": "leased"} for r in rows), None
            )

    async def complete(self, task_id: str) -> bool:
        async with self._lock:
            cursor = await self._db.execute(
                "UPDATE tasks SET status = 'succeeded' WHERE task_id = ? AND status = 'leased'",
                (task_id,),
            )
            return cursor.rowcount == 1

    async def close(self) -> None:
        await self._db.close()
