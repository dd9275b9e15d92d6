"""Idempotency keys: their rows, and the repository a create consults before it runs.

Keys are written only inside the creating transaction (``SqliteDatabase.claim_key``), so
this module holds the mapping both that claim and the repository read through.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from app.store.base import IdempotencyRecord
from app.store.sqlite.table import Table
from app.timeutil import from_iso, to_iso

if TYPE_CHECKING:
    # Type only: database.py imports KEYS from here to claim keys.
    from app.store.sqlite.database import SqliteDatabase


def _record_row(record: IdempotencyRecord) -> dict[str, Any]:
    return {
        "key": record.key,
        "fingerprint": record.fingerprint,
        "resource_id": record.resource_id,
        "created_at": to_iso(record.created_at),
        "expires_at": to_iso(record.expires_at),
    }


def _record_from_row(row: sqlite3.Row) -> IdempotencyRecord:
    return IdempotencyRecord(
        key=row["key"],
        fingerprint=row["fingerprint"],
        resource_id=row["resource_id"],
        created_at=from_iso(row["created_at"]),
        expires_at=from_iso(row["expires_at"]),
    )


KEYS: Table[IdempotencyRecord] = Table("idempotency_keys", "key", _record_row, _record_from_row)


class SqliteIdempotencyRepository:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def get(self, key: str) -> IdempotencyRecord | None:
        async with self._db.read() as connection:
            return await KEYS.read(connection, key)
