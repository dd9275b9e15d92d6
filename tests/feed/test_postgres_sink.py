"""The PostgreSQL sink: idempotent upserts, an append-only events table, and the queries
of docs/analytics.md run against data exported from each store.

Needs the PostgreSQL server on 127.0.0.1:5432 (or ORCH_TEST_POSTGRES_DSN); without one
these tests skip, saying so. Each test works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.clock import ManualClock
from app.executions.domain import ExecutionStatus, TaskSpec, new_execution, transition
from app.feed.events import ChangeEvent
from app.feed.exporter import Exporter
from app.feed.factory import FeedSource
from app.feed.postgres import ENTITIES, PostgresSink, split_url
from app.feed.sinks import open_sink
from app.history.domain import HistoryEntry
from app.reservations.domain import Reservation
from app.store.base import Store, Write
from tests.conftest import START
from tests.feed.conftest import (
    ADMIN,
    ALICE,
    BOB,
    benches,
    booking,
    new_bench,
    read_all,
    reservations,
)

DSN_ENV = "ORCH_TEST_POSTGRES_DSN"
DSN = os.environ.get(DSN_ENV, "postgresql://postgres@127.0.0.1:5432/test")
DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
RUN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
async def postgres_dsn() -> str:
    try:
        connection = await asyncpg.connect(DSN, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        pytest.skip(
            f"POSTGRESQL NOT REACHABLE at {DSN} ({type(error).__name__}: {error}):"
            f" PostgreSQL sink tests NOT RUN. Start one, or set {DSN_ENV}."
        )
    await connection.close()
    return DSN


@pytest.fixture
async def schema(postgres_dsn: str) -> AsyncIterator[str]:
    name = f"feed_test_{RUN}_{uuid.uuid4().hex[:8]}"
    yield name
    connection = await asyncpg.connect(postgres_dsn)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture
async def pg(postgres_dsn: str, schema: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(postgres_dsn)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def sink(postgres_dsn: str, schema: str) -> AsyncIterator[PostgresSink]:
    opened = await PostgresSink.open(f"{postgres_dsn}?schema={schema}")
    try:
        yield opened
    finally:
        await opened.close()


def at(hours: float) -> Any:
    return START + timedelta(hours=hours)


async def run_execution(
    store: Store,
    reservation: Reservation,
    number: int,
    *,
    queued_h: float,
    started_h: float | None,
    finished_h: float,
    status: ExecutionStatus,
) -> None:
    """An execution through its states, written with the store port as the service does."""
    execution, tasks = new_execution(
        execution_id=f"{reservation.reservation_id}-x{number}",
        reservation_id=reservation.reservation_id,
        bench_id=reservation.bench_id,
        created_by=reservation.user_id,
        commit_sha="0123abcd",
        pipeline_url=None,
        metadata={},
        tasks=[TaskSpec(type="flash", params={}, timeout_s=600)],
        now=at(queued_h),
    )

    def entry(version: int, action: str, moment: Any) -> HistoryEntry:
        return HistoryEntry(
            entity_type="execution",
            entity_id=execution.execution_id,
            version=version,
            at=moment,
            actor=reservation.user_id,
            request_id=f"req-{number}-{version}",
            action=action,
        )

    await store.executions.apply(
        [Write(None, execution)],
        [Write(None, task) for task in tasks],
        [entry(1, "created", at(queued_h))],
    )
    current = execution
    steps = [] if started_h is None else [(ExecutionStatus.RUNNING, started_h)]
    for target, hours in [*steps, (status, finished_h)]:
        after = transition(current, target, at(hours))
        await store.executions.apply(
            [Write(current, after)], [], [entry(after.version, target.value, at(hours))]
        )
        current = after


async def make_lab(store: Store, clock: ManualClock) -> None:
    """Two benches, two users; START is 2026-11-25 08:00 UTC.

    rig-1: alice 10:00-18:00 (two runs: passed in 40 min, failed in 20 min) and alice on
    the 26th 10:00-14:00, never used. rig-2: bob 10:00-12:00 (passed in 90 min, one run
    cancelled while queued), bob 12:00-13:00 cancelled, bob 22:00-02:00 across midnight.
    """
    bench_service = benches(store, clock)
    await bench_service.create(new_bench("rig-1", "can-bus"), ADMIN)
    await bench_service.create(new_bench("rig-2"), ADMIN)
    booking_service = reservations(store, clock)
    alice_day, _ = await booking_service.book(booking("rig-1", 2, 8), ALICE, None)
    await booking_service.book(booking("rig-1", 26, 4), ALICE, None)
    bob_day, _ = await booking_service.book(booking("rig-2", 2, 2), BOB, None)
    bob_cancelled, _ = await booking_service.book(booking("rig-2", 4, 1), BOB, None)
    await booking_service.cancel(bob_cancelled.reservation_id, None, BOB)
    await booking_service.book(booking("rig-2", 14, 4), BOB, None)

    passed, failed, cancelled = (
        ExecutionStatus.PASSED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,
    )
    await run_execution(
        store,
        alice_day,
        1,
        queued_h=2,
        started_h=2 + 10 / 60,
        finished_h=2 + 40 / 60,
        status=passed,
    )
    await run_execution(
        store, alice_day, 2, queued_h=3, started_h=3, finished_h=3 + 20 / 60, status=failed
    )
    await run_execution(store, bob_day, 1, queued_h=2, started_h=2.5, finished_h=3.5, status=passed)
    await run_execution(
        store, bob_day, 2, queued_h=3.75, started_h=None, finished_h=3 + 50 / 60, status=cancelled
    )


def doc_queries() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


async def snapshot(pg: asyncpg.Connection, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    tables = [entity.table for entity in ENTITIES] + ["events"]
    found = {}
    for table in tables:
        order = "event_id" if table == "events" else "1, 2, 3"
        columns = "*" if table != "events" else "event_id, seq, key, old_image, new_image"
        rows = await pg.fetch(f'SELECT {columns} FROM "{schema}"."{table}" ORDER BY {order}')
        found[table] = [tuple(row.values()) for row in rows]
    return found


async def test_replays_and_late_events_leave_the_same_rows(
    feed_store: Store,
    source: FeedSource,
    clock: ManualClock,
    sink: PostgresSink,
    pg: asyncpg.Connection,
    schema: str,
) -> None:
    await make_lab(feed_store, clock)
    events, _ = await read_all(source.feed)
    await sink.write(events)
    first = await snapshot(pg, schema)

    await sink.write(events)  # a crash-and-resume replay
    await sink.write(list(reversed(events)))  # old events after new ones
    for event in events[:5]:
        await sink.write([event])

    assert await snapshot(pg, schema) == first
    assert len(first["events"]) == len({event.event_id for event in events}) == len(events)
    assert len(first["executions"]) == 4
    assert len(first["reservations"]) == 5
    assert [row[0] for row in first["benches"]] == ["rig-1", "rig-2"]
    rows = await pg.fetch(f'SELECT execution_id, status, version FROM "{schema}".executions')
    assert sorted((row["status"], row["version"]) for row in rows) == [
        ("cancelled", 2),
        ("failed", 3),
        ("passed", 3),
        ("passed", 3),
    ]


async def test_events_are_append_only(
    sink: PostgresSink, pg: asyncpg.Connection, schema: str
) -> None:
    event = ChangeEvent(
        event_id="e-1",
        table="benches",
        key={"bench_id": "rig-9"},
        kind="insert",
        old_image=None,
        new_image={"bench_id": "rig-9", "name": "n", "version": 1},
        at=START,
        seq=7,
    )
    await sink.write([event])
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pg.execute(f"UPDATE \"{schema}\".events SET kind = 'modify'")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pg.execute(f'DELETE FROM "{schema}".events')
    stored = await pg.fetchrow(
        f'SELECT kind, seq FROM "{schema}".events WHERE event_id = $1', "e-1"
    )
    assert stored is not None
    assert (stored["kind"], stored["seq"]) == ("insert", Decimal(7))

    removed = replace(
        event,
        event_id="e-2",
        kind="remove",
        old_image=event.new_image,
        new_image=None,
        seq=8,
    )
    await sink.write([removed])
    row = await pg.fetchrow(f'SELECT deleted, name, last_event_id FROM "{schema}".benches')
    assert row is not None
    assert (row["deleted"], row["name"], row["last_event_id"]) == (True, "n", "e-2")


def test_the_schema_parameter_is_ours_and_checked() -> None:
    assert split_url("postgresql://u@h:5432/db?schema=lab&sslmode=disable") == (
        "postgresql://u@h:5432/db?sslmode=disable",
        "lab",
    )
    assert split_url("postgresql://u@h/db")[1] == "analytics"
    with pytest.raises(ValueError, match="identifier"):
        split_url("postgresql://u@h/db?schema=x;drop")


async def test_the_analytics_queries_answer_lab_questions(
    feed_store: Store,
    source: FeedSource,
    clock: ManualClock,
    postgres_dsn: str,
    pg: asyncpg.Connection,
    schema: str,
) -> None:
    await make_lab(feed_store, clock)
    async with open_sink(f"{postgres_dsn}?schema={schema}") as sink:
        stats = await Exporter(source.feed, source.checkpoints, sink, name="pg").run()
    assert stats.events > 0

    queries = doc_queries()
    assert len(queries) == 5
    await pg.execute(f'SET search_path TO "{schema}"')
    utilisation, pass_rate, latency, users, volume = [await pg.fetch(q) for q in queries]

    assert [
        (row["bench_id"], str(row["day"]), row["reserved_share"], row["running_share"])
        for row in utilisation
    ] == [
        ("rig-1", "2026-11-25", Decimal("0.333"), Decimal("0.035")),
        ("rig-2", "2026-11-25", Decimal("0.167"), Decimal("0.042")),
        ("rig-1", "2026-11-26", Decimal("0.167"), Decimal("0.000")),
        ("rig-2", "2026-11-26", Decimal("0.083"), Decimal("0.000")),
    ]
    assert [(row["bench_id"], row["verdicts"], row["pass_rate"]) for row in pass_rate] == [
        ("rig-1", 2, Decimal("0.500")),
        ("rig-2", 1, Decimal("1.000")),
    ]
    assert [
        (row["bench"], row["verdicts"], row["mean_s_queued_to_verdict"], row["mean_s_waiting"])
        for row in latency
    ] == [
        ("rig-1", 2, Decimal("1800.0"), Decimal("300.0")),
        ("rig-2", 1, Decimal("5400.0"), Decimal("1800.0")),
        ("all benches", 3, Decimal("3000.0"), Decimal("800.0")),
    ]
    assert [
        (
            row["user_id"],
            row["bookings"],
            row["cancelled"],
            row["unused_bookings"],
            row["booked_hours"],
            row["used_hours"],
            row["idle_hours"],
        )
        for row in users
    ] == [
        ("alice", 2, 0, 1, Decimal("12.0"), Decimal("0.8"), Decimal("11.2")),
        ("bob", 2, 1, 1, Decimal("6.0"), Decimal("1.0"), Decimal("5.0")),
    ]
    tables = {row["source_table"] for row in volume}
    assert {"benches", "reservations", "executions", "tasks", "history"} <= tables
