"""The SQLite outbox: triggers generated from the live schema, in the writer's transaction."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from app.feed.sqlite_outbox import SqliteOutboxFeed
from app.store.sqlite.database import SqliteDatabase
from app.store.sqlite.outbox import FEED_TABLES, install_outbox, trigger_statements
from app.store.sqlite.store import SqliteStore
from tests.support.factories import entry_for, make_bench


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    opened = await SqliteDatabase.open(str(tmp_path / "outbox.db"))
    try:
        yield opened
    finally:
        await opened.close()


async def _triggers(connection: aiosqlite.Connection) -> dict[str, str]:
    rows = await connection.execute_fetchall(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
    )
    return {str(row[0]): str(row[1]) for row in rows}


async def _outbox(connection: aiosqlite.Connection) -> list[dict[str, object]]:
    rows = await connection.execute_fetchall("SELECT * FROM outbox ORDER BY seq")
    return [dict(row) for row in rows]


async def test_three_triggers_per_feed_table_and_none_elsewhere(db: SqliteDatabase) -> None:
    async with db.read() as connection:
        triggers = await _triggers(connection)
    assert set(triggers) == {
        f"outbox_{table}_{kind}" for table in FEED_TABLES for kind in ("insert", "update", "delete")
    }
    assert not any("bench_capabilities" in name or "idempotency" in name for name in triggers)


async def test_install_is_idempotent_and_reopening_changes_nothing(
    db: SqliteDatabase, tmp_path: Path
) -> None:
    async with db.read() as connection:
        before = await _triggers(connection)
        await install_outbox(connection)
        await install_outbox(connection)
        assert await _triggers(connection) == before
    again = await SqliteDatabase.open(str(tmp_path / "outbox.db"))
    try:
        async with again.read() as connection:
            assert await _triggers(connection) == before
    finally:
        await again.close()


async def test_a_column_added_later_is_in_the_images_after_install(db: SqliteDatabase) -> None:
    async with db.read() as connection:
        await connection.execute("ALTER TABLE benches ADD COLUMN site TEXT")
        await install_outbox(connection)
    store = SqliteStore(db)
    bench = make_bench("rig-1")
    await store.benches.create(bench, entry_for(bench))
    async with db.read() as connection:
        await connection.execute("UPDATE benches SET site = 'lab-b' WHERE bench_id = 'rig-1'")
        rows = await _outbox(connection)
    modify = [row for row in rows if row["kind"] == "modify"]
    assert len(modify) == 1
    assert json.loads(str(modify[0]["old_image"]))["site"] is None
    assert json.loads(str(modify[0]["new_image"]))["site"] == "lab-b"


async def test_an_update_that_changes_nothing_is_no_event(db: SqliteDatabase) -> None:
    store = SqliteStore(db)
    bench = make_bench("rig-1")
    await store.benches.create(bench, entry_for(bench))
    async with db.read() as connection:
        count = len(await _outbox(connection))
        await connection.execute("UPDATE benches SET name = name WHERE bench_id = 'rig-1'")
        assert len(await _outbox(connection)) == count


async def test_a_rolled_back_change_leaves_no_event(db: SqliteDatabase) -> None:
    class Boom(Exception):
        pass

    # The outbox row is written by the trigger inside the writer's transaction: a failure
    # after the change rolls both back.
    with pytest.raises(Boom):
        async with db.write() as connection:
            await connection.execute(
                "INSERT INTO history (entity_type, entity_id, version, at, actor, request_id,"
                " action, changes) VALUES ('bench', 'rig-1', 1, 'now', 'root', 'r', 'c', '{}')"
            )
            assert len(await _outbox(connection)) == 1  # visible inside the transaction
            raise Boom
    async with db.read() as connection:
        assert await _outbox(connection) == []
    bench = make_bench("rig-1")
    await SqliteStore(db).benches.create(bench, entry_for(bench))
    async with db.read() as connection:
        assert [row["table_name"] for row in await _outbox(connection)] == ["benches", "history"]


async def test_a_delete_is_a_remove_event_with_the_old_image(db: SqliteDatabase) -> None:
    store = SqliteStore(db)
    bench = make_bench("rig-1")
    await store.benches.create(bench, entry_for(bench))
    async with db.write() as connection:
        await connection.execute("DELETE FROM bench_capabilities WHERE bench_id = 'rig-1'")
        await connection.execute("DELETE FROM benches WHERE bench_id = 'rig-1'")

    events = (await SqliteOutboxFeed(db).read(None, 10)).events

    removed = events[-1]
    assert (removed.table, removed.kind, removed.key) == (
        "benches",
        "remove",
        {"bench_id": "rig-1"},
    )
    assert removed.new_image is None
    assert removed.old_image is not None
    assert removed.old_image["name"] == bench.name


async def test_wide_tables_get_every_column_in_the_image(db: SqliteDatabase) -> None:
    # json_object takes at most 127 arguments: past 60 columns the image is built in parts.
    columns = ["id", *(f"c{number}" for number in range(1, 80)), "end"]
    definition = ", ".join(f'"{column}" TEXT' for column in columns)
    async with db.write() as connection:
        await connection.execute(f'CREATE TABLE wide ({definition}, PRIMARY KEY ("id"))')
        for sql in trigger_statements("wide", columns, ["id"]).values():
            await connection.execute(sql)
        marks = ", ".join("?" for _ in columns)
        await connection.execute(f"INSERT INTO wide VALUES ({marks})", columns)

    event = (await SqliteOutboxFeed(db).read(None, 10)).events[-1]

    assert event.key == {"id": "id"}
    assert event.new_image == {column: column for column in columns}
