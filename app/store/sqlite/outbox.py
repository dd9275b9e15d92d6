"""The SQLite change outbox: one row per committed change of a state or history row.

Triggers write the outbox row, so it is part of the very transaction that makes the change:
both commit or neither does, whichever code path wrote. The triggers are generated from
``PRAGMA table_info`` each time the database is opened, so a column added to a table later
is in the images from the next start on; installing is idempotent and does nothing when the
triggers in the file are already the ones wanted.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite

OUTBOX_TABLE = "outbox"
CHECKPOINTS_TABLE = "feed_checkpoints"

# The tables whose changes are events: state and history. Not bench_capabilities (derived
# from benches), idempotency_keys (request bookkeeping), nor the feed's own tables.
FEED_TABLES = ("benches", "reservations", "executions", "tasks", "history")

_TRIGGER_PREFIX = "outbox_"

# AUTOINCREMENT: a seq is never reused, even after the newest rows are pruned, so a reader
# resuming "after seq N" can never skip a row. Writers are serialised by SQLite's write
# lock, so seqs commit in order and a reader never sees a gap that fills in later.
_DDL = (
    f"""CREATE TABLE IF NOT EXISTS {OUTBOX_TABLE} (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    table_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    old_image TEXT,
    new_image TEXT,
    at TEXT NOT NULL
)""",
    f"""CREATE TABLE IF NOT EXISTS {CHECKPOINTS_TABLE} (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    position TEXT NOT NULL,
    updated_at TEXT NOT NULL
)""",
)

# Millisecond UTC text; from_iso reads it like every other stored instant.
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
# json_object takes at most 127 arguments by default: wider tables are built in chunks.
_PAIRS_PER_CALL = 60


async def install_outbox(connection: aiosqlite.Connection) -> None:
    """Create the outbox and checkpoint tables and (re)generate the triggers.

    Runs in one ``BEGIN IMMEDIATE`` transaction, so another process writing the same file
    never sees a table between the DROP and the CREATE of its trigger.
    """
    wanted: dict[str, str] = {}
    for table in FEED_TABLES:
        columns, key = await _columns(connection, table)
        wanted.update(trigger_statements(table, columns, key))
    existing = {
        str(row[0]): str(row[1])
        for row in await connection.execute_fetchall(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND substr(name, 1, ?) = ?",
            (len(_TRIGGER_PREFIX), _TRIGGER_PREFIX),
        )
    }
    tables = {
        str(row[0])
        for row in await connection.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)",
            (OUTBOX_TABLE, CHECKPOINTS_TABLE),
        )
    }
    if existing == wanted and tables == {OUTBOX_TABLE, CHECKPOINTS_TABLE}:
        return  # the usual start: nothing to change, so no write lock taken
    await connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in _DDL:
            await connection.execute(statement)
        for name in existing.keys() - wanted.keys():
            await connection.execute(f"DROP TRIGGER IF EXISTS {_quote(name)}")
        for name, sql in wanted.items():
            await connection.execute(f"DROP TRIGGER IF EXISTS {_quote(name)}")
            await connection.execute(sql)
    except BaseException:
        await connection.rollback()
        raise
    await connection.commit()


async def _columns(connection: aiosqlite.Connection, table: str) -> tuple[list[str], list[str]]:
    rows = list(await connection.execute_fetchall(f"PRAGMA table_info({_quote(table)})"))
    if not rows:
        raise RuntimeError(f"outbox: table {table!r} does not exist; create the schema first")
    # table_info rows: (cid, name, type, notnull, dflt_value, pk); pk is the 1-based
    # position in the primary key, 0 for other columns.
    columns = [str(row[1]) for row in rows]
    key = [str(row[1]) for row in sorted(rows, key=lambda row: int(row[5])) if int(row[5]) > 0]
    return columns, key or columns


def trigger_statements(table: str, columns: Sequence[str], key: Sequence[str]) -> dict[str, str]:
    """CREATE TRIGGER statements (by trigger name) that copy each change into the outbox."""
    quoted = _quote(table)
    # An UPDATE that changes nothing is no change: DynamoDB Streams also emits no record.
    changed = " OR ".join(f"OLD.{_quote(column)} IS NOT NEW.{_quote(column)}" for column in columns)

    def insert(kind: str, row: str, old: str, new: str) -> str:
        return (
            f"INSERT INTO {OUTBOX_TABLE} (table_name, kind, key, old_image, new_image, at)"
            f" VALUES ({_literal(table)}, {_literal(kind)}, {_image(row, key)}, {old}, {new},"
            f" {_NOW})"
        )

    old, new = _image("OLD", columns), _image("NEW", columns)
    name = f"{_TRIGGER_PREFIX}{table}"
    return {
        f"{name}_insert": (
            f"CREATE TRIGGER {_quote(name + '_insert')} AFTER INSERT ON {quoted}"
            f" BEGIN {insert('insert', 'NEW', 'NULL', new)}; END"
        ),
        f"{name}_update": (
            f"CREATE TRIGGER {_quote(name + '_update')} AFTER UPDATE ON {quoted}"
            f" WHEN {changed} BEGIN {insert('modify', 'NEW', old, new)}; END"
        ),
        f"{name}_delete": (
            f"CREATE TRIGGER {_quote(name + '_delete')} AFTER DELETE ON {quoted}"
            f" BEGIN {insert('remove', 'OLD', old, 'NULL')}; END"
        ),
    }


def _image(row: str, columns: Sequence[str]) -> str:
    """A JSON object of the row's columns; json_insert extends it past one call's limit."""
    chunks = [
        columns[start : start + _PAIRS_PER_CALL]
        for start in range(0, len(columns), _PAIRS_PER_CALL)
    ]
    pairs = ", ".join(f"{_literal(column)}, {row}.{_quote(column)}" for column in chunks[0])
    expression = f"json_object({pairs})"
    for chunk in chunks[1:]:
        paths = ", ".join(
            f"{_literal('$.' + _quote(column))}, {row}.{_quote(column)}" for column in chunk
        )
        expression = f"json_insert({expression}, {paths})"
    return expression


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
