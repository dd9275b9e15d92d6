"""The event log: rows written by the changes that raise them, read in seq order.

A position is the seq of the last event read. Seqs are never reused (AUTOINCREMENT), so
when the oldest kept row is further on than the next one a reader expects, the ones
between were deleted by retention, and the reader is told so rather than skipping them.
"""

from __future__ import annotations

import json
from datetime import datetime

import aiosqlite

from app.events.domain import DomainEvent
from app.store.base import LoggedEvent, PositionNotKept
from app.store.sqlite.database import SqliteDatabase


class SqliteEventLog:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def read(self, after: str | None, limit: int, *, now: datetime) -> list[LoggedEvent]:
        seq = _seq(after)
        async with self._db.read() as connection:
            rows = list(
                await connection.execute_fetchall(
                    "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                    (seq, limit),
                )
            )
            if after is not None and (not rows or int(rows[0]["seq"]) != seq + 1):
                await self._check_kept(connection, seq)
        return [
            LoggedEvent(str(row["seq"]), DomainEvent.from_json(json.loads(row["body"])))
            for row in rows
        ]

    async def head(self, *, now: datetime) -> str:
        async with self._db.read() as connection:
            rows = list(await connection.execute_fetchall("SELECT max(seq) AS seq FROM events"))
        return str(rows[0]["seq"] or 0)  # "0": before the first event there will be

    @staticmethod
    async def _check_kept(connection: aiosqlite.Connection, seq: int) -> None:
        """Rows after ``seq`` are not ``seq + 1`` on: retention deleted some (or the
        position was never given: beyond the newest seq ever used)."""
        rows = list(
            await connection.execute_fetchall(
                "SELECT (SELECT min(seq) FROM events WHERE seq > ?) AS next,"
                " (SELECT seq FROM sqlite_sequence WHERE name = 'events') AS top",
                (seq,),
            )
        )
        following, top = rows[0]["next"], int(rows[0]["top"] or 0)
        if seq > top:
            raise PositionNotKept(f"position {seq} is beyond the newest event ({top})")
        if following is not None and int(following) > seq + 1:
            raise PositionNotKept(
                f"events after position {seq} are no longer kept; the oldest kept is {following}"
            )
        if following is None and top > seq:
            raise PositionNotKept(f"events after position {seq} are no longer kept")


def _seq(position: str | None) -> int:
    if position is None:
        return 0
    if not position.isdigit():
        raise PositionNotKept(f"{position!r} is not a position this store gave")
    return int(position)
