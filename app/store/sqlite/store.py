"""SQLite adapter: the embedded default store, and ``:memory:`` for fast tests.

One connection per process; an asyncio lock keeps each transaction whole inside the
process, and ``BEGIN IMMEDIATE`` takes SQLite's write lock up front so that several
processes sharing one file serialise their read-decide-write steps as well.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

import aiosqlite

from app.benches.domain import AdminState, Bench, Heartbeat, Liveness
from app.executions.domain import Execution, ExecutionStatus, Task, TaskStatus
from app.history.domain import HistoryEntry
from app.idempotency import IdempotencyKeyTaken, IdempotencyRecord
from app.reservations.domain import HOLDING_STATES, Reservation, ReservationState
from app.store.base import (
    AlreadyExists,
    BenchNotBookable,
    BenchQuery,
    ExecutionQuery,
    ItemNotFound,
    Page,
    ReservationQuery,
    StoreUnavailable,
    VersionMismatch,
    WindowTaken,
    Write,
    execution_page_key,
    reservation_page_key,
)
from app.store.sqlite.outbox import OUTBOX_TABLE, install_outbox
from app.timeutil import from_iso, to_iso

R = TypeVar("R")

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
    heartbeat_details TEXT,
    recorded_liveness TEXT NOT NULL DEFAULT 'offline'
);
CREATE TABLE IF NOT EXISTS bench_capabilities (
    capability TEXT NOT NULL,
    bench_id TEXT NOT NULL REFERENCES benches(bench_id),
    PRIMARY KEY (capability, bench_id)
);
CREATE INDEX IF NOT EXISTS bench_capabilities_by_bench ON bench_capabilities(bench_id);
CREATE TABLE IF NOT EXISTS reservations (
    reservation_id TEXT PRIMARY KEY,
    bench_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    start TEXT NOT NULL,
    "end" TEXT NOT NULL,
    purpose TEXT NOT NULL,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_by_bench ON reservations(bench_id, start, reservation_id);
CREATE INDEX IF NOT EXISTS reservations_by_user ON reservations(user_id, start, reservation_id);
CREATE INDEX IF NOT EXISTS reservations_by_state_end ON reservations(state, "end");
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS executions (
    execution_id TEXT PRIMARY KEY,
    reservation_id TEXT NOT NULL,
    bench_id TEXT NOT NULL,
    created_by TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    pipeline_url TEXT,
    metadata TEXT NOT NULL,
    task_ids TEXT NOT NULL,
    time_budget_s INTEGER NOT NULL,
    status TEXT NOT NULL,
    artifacts_uri TEXT,
    summary TEXT,
    started_at TEXT,
    finished_at TEXT,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_by_reservation
    ON executions(reservation_id, created_at, execution_id);
CREATE INDEX IF NOT EXISTS executions_by_bench ON executions(bench_id, created_at, execution_id);
CREATE INDEX IF NOT EXISTS executions_by_status ON executions(status, created_at, execution_id);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    bench_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    params TEXT NOT NULL,
    timeout_s INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    lease_holder TEXT,
    lease_expires_at TEXT,
    attempt_started_at TEXT,
    result TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_lease ON tasks(status, lease_expires_at);
CREATE TABLE IF NOT EXISTS history (
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    request_id TEXT NOT NULL,
    action TEXT NOT NULL,
    changes TEXT NOT NULL,
    expires_at TEXT,
    PRIMARY KEY (entity_type, entity_id, version)
);
"""


# Columns added after a table first shipped: a store file made by an older version gains
# them on open instead of failing (CREATE TABLE IF NOT EXISTS leaves old tables as they are).
_ADDED_COLUMNS = (
    ("benches", "recorded_liveness", "TEXT NOT NULL DEFAULT 'offline'"),
    ("history", "expires_at", "TEXT"),
)


async def _add_missing_columns(connection: aiosqlite.Connection) -> None:
    for table, column, declaration in _ADDED_COLUMNS:
        rows = await connection.execute_fetchall(f"PRAGMA table_info({table})")
        if column not in {row["name"] for row in rows}:
            await connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


class SqliteDatabase:
    """The connection and the transaction discipline every repository shares."""

    def __init__(
        self, connection: aiosqlite.Connection, history_retention: timedelta | None = None
    ) -> None:
        self._connection = connection
        self._lock = asyncio.Lock()
        self.history_retention = history_retention

    @classmethod
    async def open(cls, path: str, history_retention: timedelta | None = None) -> SqliteDatabase:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        connection = await aiosqlite.connect(path, isolation_level=None, timeout=30.0)
        connection.row_factory = aiosqlite.Row
        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.execute("PRAGMA foreign_keys=ON")
        await connection.execute("PRAGMA busy_timeout=30000")
        await connection.executescript(SCHEMA)
        await _add_missing_columns(connection)
        # After every column change: the outbox triggers copy the live columns.
        await install_outbox(connection)
        return cls(connection, history_retention)

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
        recorded_liveness=Liveness(row["recorded_liveness"]),
    )


async def _claim_key(connection: aiosqlite.Connection, record: IdempotencyRecord | None) -> None:
    """Inside the creating transaction: take the key, or raise with the record holding it."""
    if record is None:
        return
    rows = list(
        await connection.execute_fetchall(
            "SELECT * FROM idempotency_keys WHERE key = ?", (record.key,)
        )
    )
    if rows:
        stored = _record_from_row(rows[0])
        if stored.expires_at > record.created_at:
            raise IdempotencyKeyTaken(stored)
        await connection.execute("DELETE FROM idempotency_keys WHERE key = ?", (record.key,))
    await connection.execute(
        "INSERT INTO idempotency_keys (key, fingerprint, resource_id, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (
            record.key,
            record.fingerprint,
            record.resource_id,
            to_iso(record.created_at),
            to_iso(record.expires_at),
        ),
    )


def _record_from_row(row: sqlite3.Row) -> IdempotencyRecord:
    return IdempotencyRecord(
        key=row["key"],
        fingerprint=row["fingerprint"],
        resource_id=row["resource_id"],
        created_at=from_iso(row["created_at"]),
        expires_at=from_iso(row["expires_at"]),
    )


def _reservation_row(reservation: Reservation) -> dict[str, Any]:
    return {
        "reservation_id": reservation.reservation_id,
        "bench_id": reservation.bench_id,
        "user_id": reservation.user_id,
        "start": to_iso(reservation.start),
        "end": to_iso(reservation.end),
        "purpose": reservation.purpose,
        "state": reservation.state.value,
        "version": reservation.version,
        "created_at": to_iso(reservation.created_at),
        "updated_at": to_iso(reservation.updated_at),
    }


def _reservation_from_row(row: sqlite3.Row) -> Reservation:
    return Reservation(
        reservation_id=row["reservation_id"],
        bench_id=row["bench_id"],
        user_id=row["user_id"],
        start=from_iso(row["start"]),
        end=from_iso(row["end"]),
        purpose=row["purpose"],
        state=ReservationState(row["state"]),
        version=row["version"],
        created_at=from_iso(row["created_at"]),
        updated_at=from_iso(row["updated_at"]),
    )


class SqliteBenchRepository:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def create(
        self, bench: Bench, entry: HistoryEntry, idempotency: IdempotencyRecord | None = None
    ) -> None:
        async with self._db.write() as connection:
            await _claim_key(connection, idempotency)
            try:
                await connection.execute(
                    "INSERT INTO benches (bench_id, name, type, labels, heartbeat_interval_s,"
                    " admin_state, version, created_at, updated_at, recorded_liveness)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        bench.recorded_liveness.value,
                    ),
                )
            except sqlite3.IntegrityError as error:
                raise AlreadyExists(bench.bench_id) from error
            await self._insert_capabilities(connection, bench.bench_id, bench.capabilities)
            await self._db.insert_history(connection, entry)

    async def get(self, bench_id: str) -> Bench | None:
        async with self._db.read() as connection:
            return await self._get(connection, bench_id)

    async def update(self, current: Bench, bench: Bench, entry: HistoryEntry) -> None:
        async with self._db.write() as connection:
            cursor = await connection.execute(
                "UPDATE benches SET name = ?, type = ?, labels = ?, heartbeat_interval_s = ?,"
                " admin_state = ?, version = ?, updated_at = ?, recorded_liveness = ?"
                " WHERE bench_id = ? AND version = ?",
                (
                    bench.name,
                    bench.type,
                    json.dumps(bench.labels),
                    bench.heartbeat_interval_s,
                    bench.admin_state.value,
                    bench.version,
                    to_iso(bench.updated_at),
                    bench.recorded_liveness.value,
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
            await self._db.insert_history(connection, entry)

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
        return await self.read(connection, bench_id)

    @classmethod
    async def read(cls, connection: aiosqlite.Connection, bench_id: str) -> Bench | None:
        """The bench as this connection sees it (inside another repository's transaction)."""
        rows = list(
            await connection.execute_fetchall(
                "SELECT * FROM benches WHERE bench_id = ?", (bench_id,)
            )
        )
        if not rows:
            return None
        return _bench_from_row(rows[0], await cls._capabilities(connection, bench_id))

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


class SqliteReservationRepository:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def create(
        self,
        reservation: Reservation,
        entry: HistoryEntry,
        idempotency: IdempotencyRecord | None = None,
    ) -> None:
        async with self._db.write() as connection:
            await _claim_key(connection, idempotency)
            rows = list(
                await connection.execute_fetchall(
                    "SELECT bench_id FROM benches WHERE bench_id = ? AND admin_state = ?",
                    (reservation.bench_id, AdminState.ACTIVE.value),
                )
            )
            if not rows:
                bench = await SqliteBenchRepository.read(connection, reservation.bench_id)
                raise BenchNotBookable(bench)
            await self._check_free(connection, reservation)
            await _RESERVATIONS.write(
                connection, reservation.reservation_id, Write(None, reservation), None
            )
            await self._db.insert_history(connection, entry)

    async def get(self, reservation_id: str) -> Reservation | None:
        async with self._db.read() as connection:
            return await _RESERVATIONS.read(connection, reservation_id)

    async def update(self, current: Reservation, updated: Reservation, entry: HistoryEntry) -> None:
        async with self._db.write() as connection:
            stored = await _RESERVATIONS.read(connection, current.reservation_id)
            if stored is None:
                raise ItemNotFound(current.reservation_id)
            if stored.version != current.version:
                raise VersionMismatch(stored)
            if updated.holds_bench:
                await self._check_free(connection, updated)
            # The write lock is held since BEGIN IMMEDIATE, so the check above still holds;
            # the write is conditioned on the version all the same.
            await _RESERVATIONS.write(
                connection, current.reservation_id, Write(current, updated), current.version
            )
            await self._db.insert_history(connection, entry)

    async def find(
        self, query: ReservationQuery, limit: int, after: str | None
    ) -> Page[Reservation]:
        clauses: list[str] = []
        params: list[Any] = []
        if query.bench_id is not None:
            clauses.append("bench_id = ?")
            params.append(query.bench_id)
        if query.user_id is not None:
            clauses.append("user_id = ?")
            params.append(query.user_id)
        if not clauses:
            raise ValueError("a reservation query needs bench_id or user_id")
        if query.ends_after is not None:
            clauses.append('"end" > ?')
            params.append(to_iso(query.ends_after))
        if query.starts_before is not None:
            clauses.append("start < ?")
            params.append(to_iso(query.starts_before))
        if query.holding_only:
            clauses.append("state IN (?, ?)")
            params += sorted(state.value for state in HOLDING_STATES)
        return await _RESERVATIONS.page(
            self._db,
            clauses,
            params,
            ("start", "reservation_id"),
            after,
            limit,
            reservation_page_key,
        )

    async def find_ended(self, before: datetime, limit: int) -> list[Reservation]:
        async with self._db.read() as connection:
            rows = await connection.execute_fetchall(
                'SELECT * FROM reservations WHERE state = ? AND "end" <= ?'
                ' ORDER BY "end", reservation_id LIMIT ?',
                (ReservationState.BOOKED.value, to_iso(before), limit),
            )
        return [_reservation_from_row(row) for row in rows]

    @staticmethod
    async def _check_free(connection: aiosqlite.Connection, reservation: Reservation) -> None:
        """Inside the write transaction, so no booking can slip in between check and insert."""
        rows = await connection.execute_fetchall(
            "SELECT * FROM reservations WHERE bench_id = ? AND state IN (?, ?) AND start < ?"
            ' AND "end" > ? AND reservation_id != ? ORDER BY start',
            (
                reservation.bench_id,
                *sorted(state.value for state in HOLDING_STATES),
                to_iso(reservation.end),
                to_iso(reservation.start),
                reservation.reservation_id,
            ),
        )
        taken = [_reservation_from_row(row).slot for row in rows]
        if taken:
            raise WindowTaken(taken)


def _opt_iso(moment: datetime | None) -> str | None:
    return None if moment is None else to_iso(moment)


def _opt_time(text: str | None) -> datetime | None:
    return None if text is None else from_iso(text)


def _execution_row(execution: Execution) -> dict[str, Any]:
    return {
        "execution_id": execution.execution_id,
        "reservation_id": execution.reservation_id,
        "bench_id": execution.bench_id,
        "created_by": execution.created_by,
        "commit_sha": execution.commit_sha,
        "pipeline_url": execution.pipeline_url,
        "metadata": json.dumps(execution.metadata),
        "task_ids": json.dumps(list(execution.task_ids)),
        "time_budget_s": execution.time_budget_s,
        "status": execution.status.value,
        "artifacts_uri": execution.artifacts_uri,
        "summary": execution.summary,
        "started_at": _opt_iso(execution.started_at),
        "finished_at": _opt_iso(execution.finished_at),
        "version": execution.version,
        "created_at": to_iso(execution.created_at),
        "updated_at": to_iso(execution.updated_at),
    }


def _execution_from_row(row: sqlite3.Row) -> Execution:
    return Execution(
        execution_id=row["execution_id"],
        reservation_id=row["reservation_id"],
        bench_id=row["bench_id"],
        created_by=row["created_by"],
        commit_sha=row["commit_sha"],
        pipeline_url=row["pipeline_url"],
        metadata=json.loads(row["metadata"]),
        task_ids=tuple(json.loads(row["task_ids"])),
        time_budget_s=row["time_budget_s"],
        status=ExecutionStatus(row["status"]),
        artifacts_uri=row["artifacts_uri"],
        summary=row["summary"],
        started_at=_opt_time(row["started_at"]),
        finished_at=_opt_time(row["finished_at"]),
        version=row["version"],
        created_at=from_iso(row["created_at"]),
        updated_at=from_iso(row["updated_at"]),
    )


def _task_row(task: Task) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "execution_id": task.execution_id,
        "bench_id": task.bench_id,
        "seq": task.seq,
        "type": task.type,
        "params": json.dumps(task.params),
        "timeout_s": task.timeout_s,
        "max_attempts": task.max_attempts,
        "status": task.status.value,
        "attempts": task.attempts,
        "version": task.version,
        "created_at": to_iso(task.created_at),
        "updated_at": to_iso(task.updated_at),
        "lease_holder": task.lease_holder,
        "lease_expires_at": _opt_iso(task.lease_expires_at),
        "attempt_started_at": _opt_iso(task.attempt_started_at),
        "result": None if task.result is None else json.dumps(task.result),
        "error": task.error,
    }


def _task_from_row(row: sqlite3.Row) -> Task:
    return Task(
        task_id=row["task_id"],
        execution_id=row["execution_id"],
        bench_id=row["bench_id"],
        seq=row["seq"],
        type=row["type"],
        params=json.loads(row["params"]),
        timeout_s=row["timeout_s"],
        max_attempts=row["max_attempts"],
        status=TaskStatus(row["status"]),
        attempts=row["attempts"],
        version=row["version"],
        created_at=from_iso(row["created_at"]),
        updated_at=from_iso(row["updated_at"]),
        lease_holder=row["lease_holder"],
        lease_expires_at=_opt_time(row["lease_expires_at"]),
        attempt_started_at=_opt_time(row["attempt_started_at"]),
        result=None if row["result"] is None else json.loads(row["result"]),
        error=row["error"],
    )


@dataclass(frozen=True, slots=True)
class _Table(Generic[R]):
    """How one kind of versioned item maps to a table, for change sets."""

    name: str
    key: str
    to_row: Callable[[R], dict[str, Any]]
    from_row: Callable[[sqlite3.Row], R]

    async def read(self, connection: aiosqlite.Connection, key: str) -> R | None:
        rows = list(
            await connection.execute_fetchall(
                f"SELECT * FROM {self.name} WHERE {self.key} = ?",
                (key,),
            )
        )
        return self.from_row(rows[0]) if rows else None

    async def page(
        self,
        db: SqliteDatabase,
        clauses: list[str],
        params: list[Any],
        order: tuple[str, str],
        after: str | None,
        limit: int,
        page_key: Callable[[R], str],
    ) -> Page[R]:
        """Keyset pagination over ``order``; ``after`` is "<first>|<second>" of the last row."""
        if after is not None:
            first, _, second = after.partition("|")
            clauses = [*clauses, f"({order[0]}, {order[1]}) > (?, ?)"]
            params = [*params, first, second]
        sql = (
            f"SELECT * FROM {self.name} WHERE {' AND '.join(clauses)}"
            f" ORDER BY {order[0]}, {order[1]} LIMIT ?"
        )
        async with db.read() as connection:
            rows = list(await connection.execute_fetchall(sql, [*params, limit + 1]))
        items = [self.from_row(row) for row in rows[:limit]]
        return Page(items=items, next_after=page_key(items[-1]) if len(rows) > limit else None)

    async def write(
        self, connection: aiosqlite.Connection, key: str, write: Write[R], version: int | None
    ) -> None:
        """``version``: the version ``write.before`` was read at (None for a create)."""
        if write.before is None:
            assert write.after is not None
            row = self.to_row(write.after)
            columns = ", ".join(f'"{column}"' for column in row)
            marks = ", ".join("?" for _ in row)
            try:
                await connection.execute(
                    f"INSERT INTO {self.name} ({columns}) VALUES ({marks})",
                    list(row.values()),
                )
            except sqlite3.IntegrityError as error:
                raise AlreadyExists(key) from error
            return
        if write.after is None:
            changed = 0
            rows = await connection.execute_fetchall(
                f"SELECT 1 FROM {self.name} WHERE {self.key} = ? AND version = ?",
                (key, version),
            )
            changed = len(list(rows))
        else:
            row = self.to_row(write.after)
            assignments = ", ".join(f'"{column}" = ?' for column in row)
            cursor = await connection.execute(
                f"UPDATE {self.name} SET {assignments} WHERE {self.key} = ? AND version = ?",
                [*row.values(), key, version],
            )
            changed = cursor.rowcount
        if changed == 0:
            stored = await self.read(connection, key)
            if stored is None:
                raise ItemNotFound(key)
            raise VersionMismatch(stored)


_EXECUTIONS: _Table[Execution] = _Table(
    "executions", "execution_id", _execution_row, _execution_from_row
)
_TASKS: _Table[Task] = _Table("tasks", "task_id", _task_row, _task_from_row)
_RESERVATIONS: _Table[Reservation] = _Table(
    "reservations", "reservation_id", _reservation_row, _reservation_from_row
)


class SqliteExecutionRepository:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def apply(
        self,
        executions: Sequence[Write[Execution]],
        tasks: Sequence[Write[Task]],
        entries: Sequence[HistoryEntry],
        idempotency: IdempotencyRecord | None = None,
    ) -> None:
        async with self._db.write() as connection:
            await _claim_key(connection, idempotency)
            for execution_write in executions:
                item = execution_write.before or execution_write.after
                assert item is not None
                version = None if execution_write.before is None else item.version
                await _EXECUTIONS.write(connection, item.execution_id, execution_write, version)
            for task_write in tasks:
                task = task_write.before or task_write.after
                assert task is not None
                version = None if task_write.before is None else task.version
                await _TASKS.write(connection, task.task_id, task_write, version)
            for entry in entries:
                await self._db.insert_history(connection, entry)

    async def get(self, execution_id: str) -> Execution | None:
        async with self._db.read() as connection:
            return await _EXECUTIONS.read(connection, execution_id)

    async def get_task(self, task_id: str) -> Task | None:
        async with self._db.read() as connection:
            return await _TASKS.read(connection, task_id)

    async def get_tasks(self, task_ids: Sequence[str]) -> list[Task]:
        async with self._db.read() as connection:
            found = [await _TASKS.read(connection, task_id) for task_id in task_ids]
        return [task for task in found if task is not None]

    async def find(self, query: ExecutionQuery, limit: int, after: str | None) -> Page[Execution]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("reservation_id", query.reservation_id),
            ("bench_id", query.bench_id),
            ("status", None if query.status is None else query.status.value),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if not clauses:
            raise ValueError("an execution query needs reservation_id, bench_id or status")
        if query.open_only:
            clauses.append("status IN (?, ?)")
            params += [ExecutionStatus.QUEUED.value, ExecutionStatus.RUNNING.value]
        return await _EXECUTIONS.page(
            self._db,
            clauses,
            params,
            ("created_at", "execution_id"),
            after,
            limit,
            execution_page_key,
        )

    async def find_expired_leases(self, now: datetime, limit: int) -> list[Task]:
        async with self._db.read() as connection:
            rows = await connection.execute_fetchall(
                "SELECT * FROM tasks WHERE status = ? AND lease_expires_at <= ?"
                " ORDER BY lease_expires_at LIMIT ?",
                (TaskStatus.LEASED.value, to_iso(now), limit),
            )
        return [_task_from_row(row) for row in rows]


class SqliteIdempotencyRepository:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def get(self, key: str) -> IdempotencyRecord | None:
        async with self._db.read() as connection:
            rows = list(
                await connection.execute_fetchall(
                    "SELECT * FROM idempotency_keys WHERE key = ?", (key,)
                )
            )
        return _record_from_row(rows[0]) if rows else None


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
                    " AND version > ? AND (expires_at IS NULL OR expires_at > ?)"
                    " ORDER BY version LIMIT ?",
                    (entity_type, entity_id, after or 0, to_iso(datetime.now(UTC)), limit + 1),
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
        self.reservations = SqliteReservationRepository(db)
        self.idempotency = SqliteIdempotencyRepository(db)
        self.executions = SqliteExecutionRepository(db)

    @classmethod
    async def open(cls, path: str, history_retention: timedelta | None = None) -> SqliteStore:
        try:
            return cls(await SqliteDatabase.open(path, history_retention))
        except (sqlite3.Error, OSError) as error:
            raise StoreUnavailable(f"cannot open SQLite store at {path}: {error}") from error

    async def ping(self) -> None:
        try:
            async with self._db.read() as connection:
                await connection.execute_fetchall("SELECT 1")
        except (sqlite3.Error, ValueError) as error:
            raise StoreUnavailable(str(error)) from error

    async def purge_expired(self, now: datetime) -> int:
        """History past its expiry, and outbox events older than the same retention."""
        retention = self._db.history_retention
        if retention is None:
            return 0
        async with self._db.write() as connection:
            history = await connection.execute(
                "DELETE FROM history WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (to_iso(now),),
            )
            events = await connection.execute(
                f"DELETE FROM {OUTBOX_TABLE} WHERE at <= ?",
                (to_iso(now - retention),),
            )
            return history.rowcount + events.rowcount

    async def close(self) -> None:
        await self._db.close()
