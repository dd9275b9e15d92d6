"""The generic table helper: how one kind of item maps to one SQLite table.

Every repository reads, pages, creates and conditionally replaces its items through a
``Table``, so the SQL for "insert or AlreadyExists", "update if still at version, else
ItemNotFound or VersionMismatch(stored)" and keyset pagination is written once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiosqlite

from app.store.base import AlreadyExists, ItemNotFound, Page, VersionMismatch, Write

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Table(Generic[R]):
    """How one kind of item maps to a table, for reads, pages and change sets."""

    name: str
    key: str
    to_row: Callable[[R], dict[str, Any]]
    from_row: Callable[[sqlite3.Row], R]
    # What a read selects: the table's own columns, or more that ``from_row`` also needs
    # (benches add their capabilities from a side table).
    columns: str = "*"
    # Columns an insert writes and a replace leaves as stored (a bench's id and birth).
    insert_only: tuple[str, ...] = ()

    async def read(self, connection: aiosqlite.Connection, key: str) -> R | None:
        """The item as this connection sees it (also inside another repository's write)."""
        rows = await self.select(connection, f"{self.key} = ?", [key])
        return rows[0] if rows else None

    async def select(
        self, connection: aiosqlite.Connection, where: str, params: list[Any], tail: str = ""
    ) -> list[R]:
        """Items matching ``where``; ``tail`` orders and limits ("ORDER BY ... LIMIT ?")."""
        sql = f"SELECT {self.columns} FROM {self.name}"
        if where:
            sql += f" WHERE {where}"
        if tail:
            sql += f" {tail}"
        rows = await connection.execute_fetchall(sql, params)
        return [self.from_row(row) for row in rows]

    async def page(
        self,
        connection: aiosqlite.Connection,
        clauses: list[str],
        params: list[Any],
        order: tuple[str] | tuple[str, str],
        after: str | None,
        limit: int,
        page_key: Callable[[R], str],
    ) -> Page[R]:
        """Keyset pagination over ``order``; ``after`` is the sort key of the last row:
        the value itself for one column, "<first>|<second>" for two."""
        if after is not None:
            values = [after] if len(order) == 1 else list(after.partition("|")[::2])
            marks = ", ".join("?" for _ in order)
            clauses = [*clauses, f"({', '.join(order)}) > ({marks})"]
            params = [*params, *values]
        items = await self.select(
            connection,
            " AND ".join(clauses),
            [*params, limit + 1],
            f"ORDER BY {', '.join(order)} LIMIT ?",
        )
        more = len(items) > limit
        items = items[:limit]
        return Page(items=items, next_after=page_key(items[-1]) if more else None)

    async def insert(self, connection: aiosqlite.Connection, item: R) -> None:
        """Raises AlreadyExists on a constraint failure: in these tables, a key already taken."""
        row = self.to_row(item)
        columns = ", ".join(f'"{column}"' for column in row)
        marks = ", ".join("?" for _ in row)
        try:
            await connection.execute(
                f"INSERT INTO {self.name} ({columns}) VALUES ({marks})", list(row.values())
            )
        except sqlite3.IntegrityError as error:
            raise AlreadyExists(row[self.key]) from error

    async def write(
        self, connection: aiosqlite.Connection, key: str, write: Write[R], version: int | None
    ) -> None:
        """``version``: the version ``write.before`` was read at (None for a create)."""
        if write.before is None:
            assert write.after is not None
            await self.insert(connection, write.after)
            return
        if write.after is None:
            rows = await connection.execute_fetchall(
                f"SELECT 1 FROM {self.name} WHERE {self.key} = ? AND version = ?",
                (key, version),
            )
            changed = len(list(rows))
        else:
            row = self.to_row(write.after)
            for column in self.insert_only:
                del row[column]
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
