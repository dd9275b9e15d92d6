"""A bench's concurrency in the store (kept, changed, read from what older versions wrote),
and claims that stay within it on every adapter, racing or not."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from app.benches.domain import Liveness
from app.clock import ManualClock
from app.executions.domain import Execution, Task, TaskStatus, claim
from app.executions.service import ExecutionService
from app.history.domain import HistoryEntry
from app.identity import Actor, Principal, Role
from app.store.base import IdempotencyRecord, Store, Write
from app.store.dynamodb.codec import encode_bench
from app.store.dynamodb.store import DynamoStore
from app.store.dynamodb.tables import BENCHES
from app.store.sqlite.store import SqliteStore
from tests.support.factories import at, book, booking, entry_for, make_bench, make_run, next_version

LEASE = timedelta(seconds=60)
AGENT = Actor(Principal("agent-rig-1", Role.AGENT, "rig-1"), "req-agent")


async def test_concurrency_is_kept_and_changed(store: Store) -> None:
    bench = replace(make_bench("rig-1"), concurrency=4)
    await store.benches.create(bench, entry_for(bench))
    assert await store.benches.get("rig-1") == bench
    lowered = next_version(bench, concurrency=2)
    await store.benches.update(bench, lowered, entry_for(lowered, "updated"))
    assert await store.benches.get("rig-1") == lowered
    assert make_bench("rig-2").concurrency == 1


# The benches table as it was before benches had a concurrency.
OLD_BENCHES = """
CREATE TABLE benches (
    bench_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    labels TEXT NOT NULL,
    heartbeat_interval_s INTEGER NOT NULL,
    admin_state TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_heartbeat_at TEXT,
    agent_version TEXT,
    heartbeat_details TEXT,
    recorded_liveness TEXT NOT NULL DEFAULT 'offline'
);
INSERT INTO benches VALUES (
    'rig-1', 'Rig 1', 'hil', '{}', 30, 'active', 1,
    '2026-11-25T08:00:00.000000Z', '2026-11-25T08:00:00.000000Z', NULL, NULL, NULL, 'offline'
);
"""


async def test_an_older_sqlite_file_gains_the_column_and_its_benches_run_one_task(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as old:
        old.executescript(OLD_BENCHES)
    store = await SqliteStore.open(str(path))
    try:
        bench = await store.benches.get("rig-1")
        assert bench is not None and bench.concurrency == 1
        # Nor did it count liveness transitions: it has none in the liveness log yet.
        assert bench.liveness_changes == 0
        raised = next_version(bench, concurrency=3)
        await store.benches.update(bench, raised, entry_for(raised, "updated"))
        assert await store.benches.get("rig-1") == raised
        entry = HistoryEntry(
            entity_type="bench_liveness",
            entity_id="rig-1",
            version=1,
            at=raised.updated_at,
            actor="housekeeping",
            request_id="hk",
            action="came_online",
            changes={"liveness": {"from": "offline", "to": "online"}},
        )
        await store.benches.record_liveness(raised, Liveness.ONLINE, entry)
        assert await store.benches.get("rig-1") == replace(
            raised, recorded_liveness=Liveness.ONLINE, liveness_changes=1
        )
    finally:
        await store.close()


async def test_a_dynamodb_bench_item_written_before_concurrency_reads_as_one(
    dynamodb_client: Any, dynamodb_prefix: str
) -> None:
    store = DynamoStore(dynamodb_client, dynamodb_prefix)
    bench = replace(make_bench("rig-1"), concurrency=5)
    item = encode_bench(bench)
    assert item["concurrency"] == {"N": "5"}
    del item["concurrency"]
    await dynamodb_client.put_item(TableName=BENCHES.table_name(dynamodb_prefix), Item=item)
    old = await store.benches.get("rig-1")
    assert old == replace(bench, concurrency=1)
    assert old is not None
    raised = next_version(old, concurrency=2)
    await store.benches.update(old, raised, entry_for(raised, "updated"))
    assert await store.benches.get("rig-1") == raised


async def bench_with_runs(
    store: Store, clock: ManualClock, concurrency: int, runs: int
) -> list[tuple[Execution, list[Task]]]:
    """rig-1 of that concurrency, a reservation active now, and its runs, all queued."""
    bench = replace(make_bench("rig-1"), concurrency=concurrency)
    await store.benches.create(bench, entry_for(bench))
    reservation = await book(store, booking("rig-1", 0, 2))
    clock.set(at(0.5))
    made = [make_run(reservation.reservation_id, tasks=2, minutes=n) for n in range(runs)]
    for execution, tasks in made:
        await store.executions.apply([Write(None, execution)], [Write(None, t) for t in tasks], [])
    return made


@pytest.mark.parametrize(("concurrency", "runs"), [(1, 1), (1, 3), (3, 3), (2, 4)])
async def test_twenty_racing_claims_lease_exactly_the_claimable_tasks(
    store: Store, clock: ManualClock, concurrency: int, runs: int
) -> None:
    made = await bench_with_runs(store, clock, concurrency, runs)
    service = ExecutionService(store, clock, LEASE)
    claims = await asyncio.gather(*(service.claim_next("rig-1", AGENT) for _ in range(20)))
    leased = sorted(task.task_id for task in claims if task is not None)
    firsts = [tasks[0].task_id for _, tasks in made]
    assert leased == sorted(firsts[:concurrency])
    stored = await store.executions.get_tasks([t.task_id for _, tasks in made for t in tasks])
    assert sum(task.status is TaskStatus.LEASED for task in stored) == min(concurrency, runs)
    assert await service.claim_next("rig-1", AGENT) is None


async def test_a_claim_is_sent_back_when_a_task_it_could_have_leased_moves(
    store: Store, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    (_, first_tasks), (_, second_tasks) = await bench_with_runs(store, clock, 2, 2)
    service = ExecutionService(store, clock, LEASE)
    apply = store.executions.apply
    sent: list[Sequence[Write[Task]]] = []

    async def racing_apply(
        executions: Sequence[Write[Execution]],
        tasks: Sequence[Write[Task]],
        entries: Sequence[HistoryEntry],
        idempotency: IdempotencyRecord | None = None,
    ) -> None:
        sent.append(tasks)
        if len(sent) == 1:
            # Another claim, between this one's reads and its write, leases the second
            # run's first task: the task this claim's decision counted as still free.
            theirs = claim(second_tasks[0], "agent-rig-1", clock.now(), LEASE)
            await apply([], [Write(second_tasks[0], theirs)], [])
        await apply(executions, tasks, entries, idempotency)

    monkeypatch.setattr(store.executions, "apply", racing_apply)
    mine = await service.claim_next("rig-1", AGENT)
    assert mine is not None and mine.task_id == first_tasks[0].task_id
    # The first change set pinned the other claimable task; it moved, so the claim
    # decided again (the bench then had one slot left, and one task to fill it).
    assert Write(second_tasks[0], None) in sent[0]
    assert len(sent) == 2 and all(write.after is not None for write in sent[1])
    stored = await store.executions.get_tasks([first_tasks[0].task_id, second_tasks[0].task_id])
    assert [task.status for task in stored] == [TaskStatus.LEASED] * 2
    assert await service.claim_next("rig-1", AGENT) is None
