"""PostgreSQL analytics sink: one table per entity kept current, and every event kept.

Each batch is one transaction. ``events`` is append-only (a trigger refuses UPDATE and
DELETE) and keyed by event id, so a replayed event is dropped (ON CONFLICT DO NOTHING).
Entity rows are upserted only by a later change of the same item (``source_seq``), so
replaying a batch, or delivering an old event after a new one, leaves the rows as they were.

Typed columns hold the fields analytics asks about; ``data`` holds the whole image as the
store has it, so a field added later is there for queries before it earns a column.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from app.feed.events import ChangeEvent
from app.timeutil import from_iso

DEFAULT_SCHEMA = "analytics"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

ColumnType = Literal["text", "bigint", "timestamptz"]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: ColumnType = "text"
    # The image attribute it comes from, when it is not ``name``.
    source: str | None = None

    @property
    def field(self) -> str:
        return self.source or self.name


def _bench_item(image: dict[str, Any]) -> bool:
    # DynamoDB's Benches table also holds one guard item per capability (sk "CAP#...").
    return bool(image.get("sk", "BENCH") == "BENCH")


@dataclass(frozen=True, slots=True)
class Entity:
    table: str
    key: tuple[Column, ...]
    columns: tuple[Column, ...]
    accepts: Callable[[dict[str, Any]], bool] = field(default=lambda image: True)

    @property
    def all_columns(self) -> tuple[Column, ...]:
        return self.key + self.columns


_TS: ColumnType = "timestamptz"
_INT: ColumnType = "bigint"
_STAMPS = (Column("version", _INT), Column("created_at", _TS), Column("updated_at", _TS))

ENTITIES: tuple[Entity, ...] = (
    Entity(
        "benches",
        key=(Column("bench_id"),),
        columns=(
            Column("name"),
            Column("type"),
            Column("admin_state"),
            Column("heartbeat_interval_s", _INT),
            Column("last_heartbeat_at", _TS),
            *_STAMPS,
        ),
        accepts=_bench_item,
    ),
    Entity(
        "reservations",
        key=(Column("reservation_id"),),
        columns=(
            Column("bench_id"),
            Column("user_id"),
            # "end" is a reserved word in SQL: the columns say what they are instead.
            Column("start_at", _TS, "start"),
            Column("end_at", _TS, "end"),
            Column("purpose"),
            Column("status"),
            *_STAMPS,
        ),
    ),
    Entity(
        "executions",
        key=(Column("execution_id"),),
        columns=(
            Column("reservation_id"),
            Column("bench_id"),
            Column("created_by"),
            Column("commit_sha"),
            Column("status"),
            Column("time_budget_s", _INT),
            Column("started_at", _TS),
            Column("finished_at", _TS),
            *_STAMPS,
        ),
    ),
    Entity(
        "tasks",
        key=(Column("task_id"),),
        columns=(
            Column("execution_id"),
            Column("bench_id"),
            Column("seq", _INT),
            Column("type"),
            Column("status"),
            Column("attempts", _INT),
            Column("max_attempts", _INT),
            Column("attempt_started_at", _TS),
            *_STAMPS,
        ),
    ),
    Entity(
        "history",
        key=(Column("entity_type"), Column("entity_id"), Column("version", _INT)),
        columns=(Column("at", _TS), Column("actor"), Column("request_id"), Column("action")),
    ),
)

_META = (
    ("data", "jsonb NOT NULL"),
    ("deleted", "boolean NOT NULL"),
    ("source_seq", "numeric NOT NULL"),
    ("last_event_id", "text NOT NULL"),
    ("changed_at", "timestamptz NOT NULL"),
)


def split_url(url: str) -> tuple[str, str]:
    """(DSN for asyncpg, schema): ``?schema=`` is ours, not a server setting."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for name, value in query if name == "schema"), DEFAULT_SCHEMA)
    if not _IDENTIFIER.match(schema):
        raise ValueError(f"schema {schema!r} is not a plain SQL identifier")
    rest = urlencode([(name, value) for name, value in query if name != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def schema_statements(schema: str) -> list[str]:
    s = _quote(schema)
    statements = [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"""CREATE TABLE IF NOT EXISTS {s}.events (
            event_id text PRIMARY KEY,
            source_table text NOT NULL,
            kind text NOT NULL CHECK (kind IN ('insert', 'modify', 'remove')),
            key jsonb NOT NULL,
            old_image jsonb,
            new_image jsonb,
            at timestamptz NOT NULL,
            seq numeric NOT NULL,
            loaded_at timestamptz NOT NULL DEFAULT now()
        )""",
        f"CREATE INDEX IF NOT EXISTS events_by_table_at ON {s}.events (source_table, at)",
        f"""CREATE OR REPLACE FUNCTION {s}.refuse_change() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'table %.% is append-only', TG_TABLE_SCHEMA, TG_TABLE_NAME;
            END $$""",
        f"""CREATE OR REPLACE TRIGGER events_append_only BEFORE UPDATE OR DELETE
            ON {s}.events FOR EACH ROW EXECUTE FUNCTION {s}.refuse_change()""",
    ]
    for entity in ENTITIES:
        table = f"{s}.{_quote(entity.table)}"
        key = ", ".join(_quote(column.name) for column in entity.key)
        definitions = [f"{_quote(column.name)} {column.type} NOT NULL" for column in entity.key]
        definitions += [f"{_quote(column.name)} {column.type}" for column in entity.columns]
        definitions += [f"{name} {declaration}" for name, declaration in _META]
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(definitions)}, PRIMARY KEY ({key}))"
        )
        # A column added to ENTITIES later reaches tables made before it.
        statements += [
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {_quote(column.name)} {column.type}"
            for column in entity.columns
        ]
    return statements


def upsert_statement(schema: str, entity: Entity) -> str:
    names = [_quote(column.name) for column in entity.all_columns] + [name for name, _ in _META]
    marks = ", ".join(f"${index}" for index in range(1, len(names) + 1))
    key = ", ".join(_quote(column.name) for column in entity.key)
    keys = {_quote(column.name) for column in entity.key}
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in names if name not in keys)
    table = f"{_quote(schema)}.{_quote(entity.table)}"
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})"
        f" ON CONFLICT ({key}) DO UPDATE SET {updates}"
        # Only a later change moves a row: replays and late old events change nothing.
        f" WHERE {table}.source_seq < EXCLUDED.source_seq"
    )


def entity_row(entity: Entity, event: ChangeEvent) -> tuple[Any, ...] | None:
    """The upsert's arguments, or None when the event is not about one of these rows."""
    image = event.new_image if event.kind != "remove" else event.old_image
    if image is None or not entity.accepts(image):
        return None
    values = [_convert(column.type, image.get(column.field)) for column in entity.all_columns]
    if any(value is None for value in values[: len(entity.key)]):
        return None
    return (
        *values,
        json.dumps(image),
        event.kind == "remove",
        Decimal(event.seq),
        event.event_id,
        event.at,
    )


def _convert(type_: ColumnType, value: Any) -> Any:
    # A value that does not fit its column stays in ``data`` only: one odd item must not
    # wedge the export of every event after it.
    if value is None:
        return None
    try:
        if type_ == "bigint":
            return int(value)
        if type_ == "timestamptz":
            return value if isinstance(value, datetime) else from_iso(str(value))
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _event_row(event: ChangeEvent) -> tuple[Any, ...]:
    return (
        event.event_id,
        event.table,
        event.kind,
        json.dumps(event.key),
        None if event.old_image is None else json.dumps(event.old_image),
        None if event.new_image is None else json.dumps(event.new_image),
        event.at,
        Decimal(event.seq),
    )


class PostgresSink:
    def __init__(self, connection: asyncpg.Connection, schema: str) -> None:
        self._connection = connection
        self.schema = schema
        s = _quote(schema)
        self._insert_event = (
            f"INSERT INTO {s}.events"
            " (event_id, source_table, kind, key, old_image, new_image, at, seq)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING"
        )
        self._upserts = {entity.table: upsert_statement(schema, entity) for entity in ENTITIES}
        self._entities = {entity.table: entity for entity in ENTITIES}

    @classmethod
    async def open(cls, url: str) -> PostgresSink:
        dsn, schema = split_url(url)
        connection = await asyncpg.connect(dsn)
        try:
            sink = cls(connection, schema)
            await sink.create_schema()
        except BaseException:
            await connection.close()
            raise
        return sink

    async def create_schema(self) -> None:
        async with self._connection.transaction():
            # Two exporters starting together would race on CREATE ... IF NOT EXISTS.
            await self._connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"feed-schema:{self.schema}"
            )
            for statement in schema_statements(self.schema):
                await self._connection.execute(statement)

    async def write(self, events: Sequence[ChangeEvent]) -> None:
        rows: dict[str, list[tuple[Any, ...]]] = {}
        for event in events:
            entity = self._entities.get(event.table)
            row = None if entity is None else entity_row(entity, event)
            if row is not None:
                rows.setdefault(event.table, []).append(row)
        async with self._connection.transaction():
            await self._connection.executemany(
                self._insert_event, [_event_row(event) for event in events]
            )
            for table, table_rows in rows.items():
                await self._connection.executemany(self._upserts[table], table_rows)

    async def close(self) -> None:
        await self._connection.close()


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
