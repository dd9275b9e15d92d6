"""Where each exporter has delivered up to, moved only by a conditional write.

Every advance names the version it read; a store that holds another version refuses it.
So two exporters sharing a checkpoint name cannot both move it: the second finds that
someone else did, and stops instead of moving it back.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import aiosqlite
from botocore.exceptions import ClientError

from app.store.dynamodb.tables import DynamoClient
from app.store.sqlite.database import SqliteDatabase
from app.store.sqlite.outbox import CHECKPOINTS_TABLE
from app.timeutil import to_iso


@dataclass(frozen=True, slots=True)
class Checkpoint:
    name: str
    # 0: never written. Each advance adds one.
    version: int
    position: str | None


class CheckpointConflict(Exception):
    def __init__(self, name: str, expected: int, found: int | None) -> None:
        now = "is gone" if found is None else f"is at version {found}"
        super().__init__(
            f"checkpoint {name!r} was moved by someone else: expected version {expected},"
            f" it {now}. Another exporter with this --name is running (or ran meanwhile);"
            " run one exporter per checkpoint name."
        )
        self.name = name
        self.expected = expected
        self.found = found


class CheckpointStore(Protocol):
    async def load(self, name: str) -> Checkpoint:
        """The stored checkpoint, or version 0 at no position if there is none."""
        ...

    async def advance(self, current: Checkpoint, position: str) -> Checkpoint:
        """Store ``position`` if the checkpoint is still at ``current.version``.

        Raises CheckpointConflict otherwise.
        """
        ...


class SqliteCheckpoints:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def load(self, name: str) -> Checkpoint:
        async with self._db.read() as connection:
            rows = list(
                await connection.execute_fetchall(
                    f"SELECT version, position FROM {CHECKPOINTS_TABLE} WHERE name = ?", (name,)
                )
            )
        if not rows:
            return Checkpoint(name, 0, None)
        return Checkpoint(name, int(rows[0]["version"]), str(rows[0]["position"]))

    async def advance(self, current: Checkpoint, position: str) -> Checkpoint:
        now = to_iso(datetime.now(UTC))
        version = current.version + 1
        async with self._db.write() as connection:
            if current.version == 0:
                try:
                    await connection.execute(
                        f"INSERT INTO {CHECKPOINTS_TABLE} (name, version, position, updated_at)"
                        " VALUES (?, ?, ?, ?)",
                        (current.name, version, position, now),
                    )
                except sqlite3.IntegrityError:
                    found = await self._version(connection, current.name)
                    raise CheckpointConflict(current.name, 0, found) from None
            else:
                cursor = await connection.execute(
                    f"UPDATE {CHECKPOINTS_TABLE} SET version = ?, position = ?, updated_at = ?"
                    " WHERE name = ? AND version = ?",
                    (version, position, now, current.name, current.version),
                )
                if cursor.rowcount != 1:
                    found = await self._version(connection, current.name)
                    raise CheckpointConflict(current.name, current.version, found)
        return Checkpoint(current.name, version, position)

    @staticmethod
    async def _version(connection: aiosqlite.Connection, name: str) -> int | None:
        rows = list(
            await connection.execute_fetchall(
                f"SELECT version FROM {CHECKPOINTS_TABLE} WHERE name = ?", (name,)
            )
        )
        return int(rows[0]["version"]) if rows else None


class DynamoCheckpoints:
    def __init__(self, client: DynamoClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    async def load(self, name: str) -> Checkpoint:
        response = await self._client.get_item(
            TableName=self._table, Key={"name": {"S": name}}, ConsistentRead=True
        )
        item = response.get("Item")
        if item is None:
            return Checkpoint(name, 0, None)
        return Checkpoint(name, int(item["version"]["N"]), item["position"]["S"])

    async def advance(self, current: Checkpoint, position: str) -> Checkpoint:
        version = current.version + 1
        condition: dict[str, object]
        if current.version == 0:
            condition = {
                "ConditionExpression": "attribute_not_exists(#name)",
                "ExpressionAttributeNames": {"#name": "name"},
            }
        else:
            condition = {
                "ConditionExpression": "#version = :seen",
                "ExpressionAttributeNames": {"#version": "version"},
                "ExpressionAttributeValues": {":seen": {"N": str(current.version)}},
            }
        try:
            await self._client.put_item(
                TableName=self._table,
                Item={
                    "name": {"S": current.name},
                    "version": {"N": str(version)},
                    "position": {"S": position},
                    "updated_at": {"S": to_iso(datetime.now(UTC))},
                },
                # The failed check returns the stored item: the message names its version.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **condition,
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            stored = error.response.get("Item")
            found = None if stored is None else int(stored["version"]["N"])
            raise CheckpointConflict(current.name, current.version, found) from None
        return Checkpoint(current.name, version, position)
