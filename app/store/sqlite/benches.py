"""Benches: their rows, their capabilities side table, and the bench repository.

A bench's capabilities live in ``bench_capabilities`` (one row per capability, so a
filter on one is an index lookup); the main row goes through the shared ``Table`` like
every other item, and reads bring the capabilities along in the same query.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

import aiosqlite

from app.benches.domain import (
    AdminState,
    Bench,
    BenchHealth,
    HealthStatus,
    Heartbeat,
    Liveness,
    MaintenanceWindow,
    Quarantine,
)
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
        "quarantine": _quarantine_json(bench.quarantine),
        "maintenance": json.dumps([window.to_json() for window in bench.maintenance]),
    }


def _quarantine_json(quarantine: Quarantine | None) -> str | None:
    if quarantine is None:
        return None
    return json.dumps(
        {
            "reason": quarantine.reason,
            "by": quarantine.by,
            "since": to_iso(quarantine.since),
            "evidence": quarantine.evidence,
        }
    )


def _quarantine_from(text: str | None) -> Quarantine | None:
    if text is None:
        return None
    value = json.loads(text)
    return Quarantine(value["reason"], value["by"], from_iso(value["since"]), value["evidence"])


def _health_from_row(row: sqlite3.Row) -> BenchHealth | None:
    if row["health_status"] is None:
        return None
    return BenchHealth(
        status=HealthStatus(row["health_status"]),
        message=row["health_message"] or "",
        at=from_iso(row["health_at"]),
        failures=row["health_failures"],
        passes=row["health_passes"],
    )


def _json_or(text: str | None, empty: Any) -> Any:
    """``text`` decoded; ``empty`` for no value or an empty one (most rows: every read
    of a bench decodes these, and the hottest paths read benches)."""
    if not text or text in ("{}", "[]"):
        return empty
    return json.loads(text)


def _bench_from_row(row: sqlite3.Row) -> Bench:
    heartbeat = None
    if row["last_heartbeat_at"] is not None:
        heartbeat = Heartbeat(
            at=from_iso(row["last_heartbeat_at"]),
            agent_version=row["agent_version"],
            details=_json_or(row["heartbeat_details"], {}),
        )
    return Bench(
        bench_id=row["bench_id"],
        name=row["name"],
        type=row["type"],
        capabilities=frozenset(_json_or(row["capabilities"], ())),
        labels=_json_or(row["labels"], {}),
        heartbeat_interval_s=row["heartbeat_interval_s"],
        admin_state=AdminState(row["admin_state"]),
        version=row["version"],
        created_at=from_iso(row["created_at"]),
        updated_at=from_iso(row["updated_at"]),
        last_heartbeat=heartbeat,
        recorded_liveness=Liveness(row["recorded_liveness"]),
        concurrency=row["concurrency"],
        liveness_changes=row["liveness_changes"],
        health=_health_from_row(row),
        infra_failures=row["infra_failures"],
        health_check_due=None
        if row["health_check_due"] is None
        else from_iso(row["health_check_due"]),
        quarantine=_quarantine_from(row["quarantine"]),
        maintenance=tuple(
            MaintenanceWindow.from_json(value) for value in _json_or(row["maintenance"], ())
        ),
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
        # Not a versioned write: only the heartbeat columns (and the health ones, when it
        # carries a report), no version, no history. A retired bench is left as it is, in
        # the same statement, which also returns the bench: one round trip, the hottest
        # path there is.
        sets = "last_heartbeat_at = ?, agent_version = ?, heartbeat_details = ?"
        params: list[Any] = [to_iso(heartbeat.at), heartbeat.agent_version]
        params.append(json.dumps(heartbeat.details))
        if heartbeat.health is not None:
            # The run of equal reports grows by one, or a new run starts (after_report).
            failing = heartbeat.health.status is HealthStatus.FAILING
            sets += (
                ", health_status = ?, health_message = ?, health_at = ?,"
                " health_failures = CASE WHEN ? THEN health_failures + 1 ELSE 0 END,"
                " health_passes = CASE WHEN ? THEN 0 ELSE health_passes + 1 END"
            )
            params += [heartbeat.health.status.value, heartbeat.health.message]
            params += [to_iso(heartbeat.at), failing, failing]
        async with self._db.statement() as connection:
            rows = await connection.execute_fetchall(
                f"UPDATE benches SET {sets} WHERE bench_id = ? AND admin_state != ?"
                f" RETURNING {_RETURNING}",
                (*params, bench_id, AdminState.RETIRED.value),
            )
            if rows:
                return _bench_from_row(next(iter(rows)))
            bench = await BENCHES.read(connection, bench_id)
        if bench is None:
            raise ItemNotFound(bench_id)
        raise BenchRetired(bench)

    async def record_run_outcome(self, bench_id: str, infrastructure_failure: bool) -> Bench:
        count = "infra_failures + 1" if infrastructure_failure else "0"
        async with self._db.statement() as connection:
            rows = await connection.execute_fetchall(
                f"UPDATE benches SET infra_failures = {count} WHERE bench_id = ?"
                f" RETURNING {_RETURNING}",
                (bench_id,),
            )
        if not rows:
            raise ItemNotFound(bench_id)
        return _bench_from_row(next(iter(rows)))

    async def restart_failure_runs(self, bench_id: str) -> None:
        async with self._db.statement() as connection:
            await connection.execute(
                "UPDATE benches SET health_failures = 0, infra_failures = 0 WHERE bench_id = ?",
                (bench_id,),
            )

    async def request_health_check(self, bench_id: str, due: datetime) -> None:
        async with self._db.statement() as connection:
            await connection.execute(
                "UPDATE benches SET health_check_due = ? WHERE bench_id = ?"
                " AND health_check_due IS NOT ?",
                (to_iso(due), bench_id, to_iso(due)),
            )

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
