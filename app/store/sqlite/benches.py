"""Benches: their rows, their capabilities side table, and the bench repository.

A bench's capabilities live in ``bench_capabilities`` (one row per capability, so a
filter on one is an index lookup); the main row goes through the shared ``Table`` like
every other item, and reads bring the capabilities along in the same query.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import aiosqlite

from app.benches.domain import AdminState, Bench, Heartbeat, Liveness
from app.history.domain import HistoryEntry
from app.store.base import (
    BenchQuery,
    BenchRetired,
    IdempotencyRecord,
    ItemNotFound,
    Page,
    VersionMismatch,
    Write,
)
from app.store.sqlite.database import SqliteDatabase
from app.store.sqlite.table import Table
from app.timeutil import from_iso, to_iso


def _bench_row(bench: Bench) -> dict[str, Any]:
    """The configuration columns. Not the heartbeat ones (only record_heartbeat writes
    those) nor the liveness ones (only record_liveness does; a new bench takes the
    columns' defaults), so an update never moves them."""
    return {
        "bench_id": bench.bench_id,
        "name": bench.name,
        "type": bench.type,
        "labels": json.dumps(bench.labels),
        "heartbeat_interval_s": bench.heartbeat_interval_s,
        "admin_state": bench.admin_state.value,
        "version": bench.version,
        "created_at": to_iso(bench.created_at),
        "updated_at": to_iso(bench.updated_at),
        "concurrency": bench.concurrency,
    }


def _bench_from_row(row: sqlite3.Row) -> Bench:
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
        capabilities=frozenset(json.loads(row["capabilities"])),
        labels=json.loads(row["labels"]),
        heartbeat_interval_s=row["heartbeat_interval_s"],
        admin_state=AdminState(row["admin_state"]),
        version=row["version"],
        created_at=from_iso(row["created_at"]),
        updated_at=from_iso(row["updated_at"]),
        last_heartbeat=heartbeat,
        recorded_liveness=Liveness(row["recorded_liveness"]),
        concurrency=row["concurrency"],
        liveness_changes=row["liveness_changes"],
    )


def _bench_page_key(bench: Bench) -> str:
    return bench.bench_id


# The capabilities as a JSON array beside each row (an empty one when there are none):
# one query per read or page, where a query per bench used to follow.
_COLUMNS = (
    "benches.*, (SELECT json_group_array(capability) FROM bench_capabilities"
    " WHERE bench_capabilities.bench_id = benches.bench_id) AS capabilities"
)

# RETURNING takes no "benches.*" wildcard.
_RETURNING = _COLUMNS.replace("benches.*", "*", 1)

BENCHES: Table[Bench] = Table(
    "benches",
    "bench_id",
    _bench_row,
    _bench_from_row,
    columns=_COLUMNS,
    insert_only=("bench_id", "created_at"),
)


class SqliteBenchRepository:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def create(
        self, bench: Bench, entry: HistoryEntry, idempotency: IdempotencyRecord | None = None
    ) -> None:
        async with self._db.write() as connection:
            await self._db.claim_key(connection, idempotency)
            await BENCHES.write(connection, bench.bench_id, Write(None, bench), None)
            await _insert_capabilities(connection, bench.bench_id, bench.capabilities)
            await self._db.insert_history(connection, entry)

    async def get(self, bench_id: str) -> Bench | None:
        async with self._db.read() as connection:
            return await BENCHES.read(connection, bench_id)

    async def update(self, current: Bench, bench: Bench, entry: HistoryEntry) -> None:
        async with self._db.write() as connection:
            # ItemNotFound, or VersionMismatch with the stored bench, capabilities and all.
            await BENCHES.write(connection, bench.bench_id, Write(current, bench), current.version)
            await connection.execute(
                "DELETE FROM bench_capabilities WHERE bench_id = ?", (bench.bench_id,)
            )
            await _insert_capabilities(connection, bench.bench_id, bench.capabilities)
            await self._db.insert_history(connection, entry)

    async def record_liveness(
        self, current: Bench, liveness: Liveness, entry: HistoryEntry
    ) -> None:
        # Conditioned on the transition count, not the version: configuration and
        # liveness are changed independently, and neither undoes the other.
        async with self._db.write() as connection:
            cursor = await connection.execute(
                "UPDATE benches SET recorded_liveness = ?, liveness_changes = ?"
                " WHERE bench_id = ? AND liveness_changes = ?",
                (
                    liveness.value,
                    current.liveness_changes + 1,
                    current.bench_id,
                    current.liveness_changes,
                ),
            )
            if cursor.rowcount == 0:
                stored = await BENCHES.read(connection, current.bench_id)
                if stored is None:
                    raise ItemNotFound(current.bench_id)
                raise VersionMismatch(stored)
            await self._db.insert_history(connection, entry)

    async def record_heartbeat(self, bench_id: str, heartbeat: Heartbeat) -> Bench:
        # Not a versioned write: only the heartbeat columns, no version, no history. A
        # retired bench is left as it is, in the same statement, which also returns the
        # bench: one round trip, the hottest path there is.
        async with self._db.statement() as connection:
            rows = await connection.execute_fetchall(
                "UPDATE benches SET last_heartbeat_at = ?, agent_version = ?,"
                " heartbeat_details = ? WHERE bench_id = ? AND admin_state != ?"
                f" RETURNING {_RETURNING}",
                (
                    to_iso(heartbeat.at),
                    heartbeat.agent_version,
                    json.dumps(heartbeat.details),
                    bench_id,
                    AdminState.RETIRED.value,
                ),
            )
            if rows:
                return _bench_from_row(next(iter(rows)))
            bench = await BENCHES.read(connection, bench_id)
        if bench is None:
            raise ItemNotFound(bench_id)
        raise BenchRetired(bench)

    async def find(self, query: BenchQuery, limit: int, after: str | None) -> Page[Bench]:
        clauses: list[str] = []
        params: list[Any] = []
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
        async with self._db.read() as connection:
            return await BENCHES.page(
                connection, clauses, params, ("bench_id",), after, limit, _bench_page_key
            )


async def _insert_capabilities(
    connection: aiosqlite.Connection, bench_id: str, capabilities: frozenset[str]
) -> None:
    await connection.executemany(
        "INSERT INTO bench_capabilities (capability, bench_id) VALUES (?, ?)",
        [(capability, bench_id) for capability in sorted(capabilities)],
    )
