"""The SQLite source of the change feed: the outbox the store's triggers fill."""

from __future__ import annotations

import json
from typing import Any

from app.feed.events import KINDS, ChangeEvent, FeedBatch
from app.store.sqlite.database import SqliteDatabase
from app.store.sqlite.outbox import OUTBOX_TABLE
from app.timeutil import from_iso


class SqliteOutboxFeed:
    """Reads outbox rows in seq order; the position is the last seq delivered."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def read(self, position: str | None, limit: int) -> FeedBatch:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        after = 0 if position is None else int(position)
        async with self._db.read() as connection:
            rows = list(
                await connection.execute_fetchall(
                    "SELECT seq, event_id, table_name, kind, key, old_image, new_image, at"
                    f" FROM {OUTBOX_TABLE} WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, limit),
                )
            )
        events = [_event(row) for row in rows]
        return FeedBatch(events, str(events[-1].seq) if events else position)


def _event(row: Any) -> ChangeEvent:
    kind = row["kind"]
    if kind not in KINDS:
        raise ValueError(f"outbox row {row['seq']}: unknown kind {kind!r}")
    return ChangeEvent(
        event_id=row["event_id"],
        table=row["table_name"],
        key=json.loads(row["key"]),
        kind=kind,
        old_image=None if row["old_image"] is None else json.loads(row["old_image"]),
        new_image=None if row["new_image"] is None else json.loads(row["new_image"]),
        at=from_iso(row["at"]),
        seq=int(row["seq"]),
    )
