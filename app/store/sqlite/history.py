"""History: how stored entries read back, and the repository that pages through them.

Entries are written by ``SqliteDatabase.insert_history`` inside the transaction of the
change they describe; this module only reads them.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from app.history.domain import HistoryEntry
from app.store.base import Page
from app.store.sqlite.database import SqliteDatabase
from app.timeutil import from_iso, to_iso


def _entry_from_row(row: sqlite3.Row) -> HistoryEntry:
    return HistoryEntry(
        entity_type=row["entity_type"],
        entity_id=row["entity_id"],
        version=row["version"],
        at=from_iso(row["at"]),
        actor=row["actor"],
        request_id=row["request_id"],
        action=row["action"],
        changes=json.loads(row["changes"]),
    )


class SqliteHistoryRepository:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def find(
        self, entity_type: str, entity_id: str, limit: int, after: int | None, *, now: datetime
    ) -> Page[HistoryEntry]:
        # Expired entries are hidden at ``now`` even before purge_expired deletes them.
        async with self._db.read() as connection:
            rows = list(
                await connection.execute_fetchall(
                    "SELECT * FROM history WHERE entity_type = ? AND entity_id = ?"
                    " AND version > ? AND (expires_at IS NULL OR expires_at > ?)"
                    " ORDER BY version LIMIT ?",
                    (entity_type, entity_id, after or 0, to_iso(now), limit + 1),
                )
            )
        entries = [_entry_from_row(row) for row in rows[:limit]]
        next_after = str(entries[-1].version) if len(rows) > limit else None
        return Page(items=entries, next_after=next_after)
