"""Executions and their tasks: their rows and the repository that changes them together.

An execution and its tasks move in change sets (``apply``): every write, history entry
and idempotency key of one set commits in one transaction, or none of it does.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.executions.domain import Execution, ExecutionStatus, Task, TaskStatus
from app.history.domain import HistoryEntry
from app.store.base import (
    ExecutionQuery,
    IdempotencyRecord,
    Page,
    Write,
    execution_page_key,
)
from app.store.sqlite.database import SqliteDatabase
from app.store.sqlite.table import Table
from app.timeutil import from_iso, to_iso


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


# Literal, not bound: SQLite uses the partial index executions_open only for a WHERE it
# can see implies the index's own.
_OPEN = f"status IN ('{ExecutionStatus.QUEUED.value}', '{ExecutionStatus.RUNNING.value}')"

_EXECUTIONS: Table[Execution] = Table(
    "executions", "execution_id", _execution_row, _execution_from_row
)
_TASKS: Table[Task] = Table("tasks", "task_id", _task_row, _task_from_row)


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
            await self._db.claim_key(connection, idempotency)
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
        """In one query per 500 ids (SQLite's host-parameter limit is far above that)."""
        found: list[Task] = []
        async with self._db.read() as connection:
            for first in range(0, len(task_ids), 500):
                chunk = list(task_ids[first : first + 500])
                marks = ", ".join("?" * len(chunk))
                found += await _TASKS.select(connection, f"task_id IN ({marks})", chunk)
        order = {task_id: n for n, task_id in enumerate(task_ids)}
        return sorted(found, key=lambda task: order[task.task_id])

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
            clauses.append(_OPEN)
        async with self._db.read() as connection:
            return await _EXECUTIONS.page(
                connection,
                clauses,
                params,
                ("created_at", "execution_id"),
                after,
                limit,
                execution_page_key,
            )

    async def find_claim_candidates(self, reservation_id: str, first: int) -> list[Execution]:
        # Both halves are index ranges however long the queue or the past: the running
        # runs (executions_by_reservation_status), and the first open ones (the partial
        # index executions_open, which holds queued and running runs only).
        async with self._db.read() as connection:
            return await _EXECUTIONS.select(
                connection,
                f"execution_id IN (SELECT execution_id FROM executions"
                f" WHERE reservation_id = ? AND status = '{ExecutionStatus.RUNNING.value}'"
                f" UNION SELECT execution_id FROM (SELECT execution_id FROM executions"
                f" WHERE reservation_id = ? AND {_OPEN} ORDER BY created_at, execution_id"
                " LIMIT ?))",
                [reservation_id, reservation_id, first],
                "ORDER BY created_at, execution_id",
            )

    async def find_expired_leases(self, now: datetime, limit: int) -> list[Task]:
        async with self._db.read() as connection:
            return await _TASKS.select(
                connection,
                "status = ? AND lease_expires_at <= ?",
                [TaskStatus.LEASED.value, to_iso(now), limit],
                "ORDER BY lease_expires_at LIMIT ?",
            )
