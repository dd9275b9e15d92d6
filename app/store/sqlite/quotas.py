"""Quotas of users and teams: one row each, replaced only at the version read."""

from __future__ import annotations

import sqlite3

from app.history.domain import HistoryEntry
from app.quotas.domain import Limits, Quota, QuotaKind
from app.store.base import AlreadyExists, VersionMismatch
from app.store.sqlite.database import SqliteDatabase
from app.timeutil import from_iso, to_iso


def _quota(row: sqlite3.Row) -> Quota:
    return Quota(
        kind=QuotaKind(row["kind"]),
        name=row["name"],
        limits=Limits(
            max_booked_hours_7d=row["max_booked_hours_7d"],
            max_concurrent=row["max_concurrent"],
            max_window_hours=row["max_window_hours"],
        ),
        version=row["version"],
        updated_at=from_iso(row["updated_at"]),
    )


class SqliteQuotaRepository:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def get(self, kind: QuotaKind, name: str) -> Quota | None:
        async with self._db.read() as connection:
            rows = list(
                await connection.execute_fetchall(
                    "SELECT * FROM quotas WHERE kind = ? AND name = ?", (kind.value, name)
                )
            )
        return _quota(rows[0]) if rows else None

    async def put(self, current: Quota | None, quota: Quota, entry: HistoryEntry) -> None:
        limits = quota.limits
        values = (
            limits.max_booked_hours_7d,
            limits.max_concurrent,
            limits.max_window_hours,
            quota.version,
            to_iso(quota.updated_at),
        )
        async with self._db.write() as connection:
            if current is None:
                try:
                    await connection.execute(
                        "INSERT INTO quotas (max_booked_hours_7d, max_concurrent,"
                        " max_window_hours, version, updated_at, kind, name)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (*values, quota.kind.value, quota.name),
                    )
                except sqlite3.IntegrityError as error:
                    raise AlreadyExists(f"{quota.kind.value}:{quota.name}") from error
            else:
                cursor = await connection.execute(
                    "UPDATE quotas SET max_booked_hours_7d = ?, max_concurrent = ?,"
                    " max_window_hours = ?, version = ?, updated_at = ?"
                    " WHERE kind = ? AND name = ? AND version = ?",
                    (*values, quota.kind.value, quota.name, current.version),
                )
                if cursor.rowcount == 0:
                    rows = list(
                        await connection.execute_fetchall(
                            "SELECT * FROM quotas WHERE kind = ? AND name = ?",
                            (quota.kind.value, quota.name),
                        )
                    )
                    if not rows:
                        raise AlreadyExists(f"{quota.kind.value}:{quota.name} is gone")
                    raise VersionMismatch(_quota(rows[0]))
            await self._db.insert_history(connection, entry)
