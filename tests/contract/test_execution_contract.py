"""Executions and tasks in the store port: change sets are all-or-nothing, on every adapter."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from app.executions.domain import Execution, ExecutionStatus, Task, TaskStatus, claim, transition
from app.kit.idempotency import IdempotencyClaim
from app.store.base import (
    AlreadyExists,
    ExecutionQuery,
    IdempotencyKeyTaken,
    ItemNotFound,
    Store,
    VersionMismatch,
    Write,
)
from tests.conftest import START
from tests.support.factories import make_run, run_entry

LEASE = timedelta(seconds=60)


async def store_run(store: Store, run: tuple[Execution, list[Task]]) -> None:
    execution, tasks = run
    await store.executions.apply(
        [Write(None, execution)],
        [Write(None, task) for task in tasks],
        [run_entry(execution, "created")],
    )


async def test_create_then_read_everything_back(store: Store) -> None:
    execution, tasks = make_run()
    await store_run(store, (execution, tasks))
    assert await store.executions.get(execution.execution_id) == execution
    assert await store.executions.get_task(tasks[1].task_id) == tasks[1]
    wanted = [tasks[2].task_id, "missing", tasks[0].task_id]
    assert await store.executions.get_tasks(wanted) == [tasks[2], tasks[0]]
    assert await store.executions.get("nope") is None
    history = await store.history.find(
        "execution", execution.execution_id, 10, None, now=datetime.now(UTC)
    )
    assert history.items == [run_entry(execution, "created")]


async def test_creating_an_existing_item_fails_whole(store: Store) -> None:
    run = make_run()
    await store_run(store, run)
    execution = run[0]
    again = replace(execution, summary="second")
    with pytest.raises(AlreadyExists):
        await store.executions.apply([Write(None, again)], [], [run_entry(again, "created")])
    assert await store.executions.get(execution.execution_id) == execution


async def test_a_change_set_commits_every_write_or_none(store: Store) -> None:
    execution, tasks = make_run()
    await store_run(store, (execution, tasks))
    now = START + timedelta(seconds=5)
    leased = claim(tasks[0], "agent", now, LEASE)
    started = transition(execution, ExecutionStatus.RUNNING, now)
    await store.executions.apply(
        [Write(execution, started)],
        [Write(tasks[0], leased), Write(tasks[1], None)],
        [run_entry(started, "started"), run_entry(leased, "claimed")],
    )
    assert await store.executions.get(execution.execution_id) == started
    assert await store.executions.get_task(tasks[0].task_id) == leased

    # A stale check on one task sinks the whole set: nothing below is written.
    moved = replace(tasks[2], status=TaskStatus.CANCELLED, version=2)
    await store.executions.apply([], [Write(tasks[2], moved)], [])
    finished = transition(started, ExecutionStatus.PASSED, now)
    with pytest.raises(VersionMismatch) as caught:
        await store.executions.apply(
            [Write(started, finished)],
            [Write(tasks[2], None)],
            [run_entry(finished, "verdict")],
        )
    assert caught.value.current == moved
    assert await store.executions.get(execution.execution_id) == started
    history = await store.history.find(
        "execution", execution.execution_id, 10, None, now=datetime.now(UTC)
    )
    assert [e.version for e in history.items] == [1, 2]


async def test_stale_replace_reports_the_stored_item(store: Store) -> None:
    execution, tasks = make_run()
    await store_run(store, (execution, tasks))
    first = claim(tasks[0], "agent-a", START, LEASE)
    await store.executions.apply([], [Write(tasks[0], first)], [])
    second = claim(tasks[0], "agent-b", START, LEASE)
    with pytest.raises(VersionMismatch) as caught:
        await store.executions.apply([], [Write(tasks[0], second)], [run_entry(second, "claimed")])
    assert caught.value.current == first
    assert (
        await store.history.find("task", tasks[0].task_id, 10, None, now=datetime.now(UTC))
    ).items == []


async def test_missing_items_are_not_found(store: Store) -> None:
    execution, tasks = make_run()
    with pytest.raises(ItemNotFound):
        await store.executions.apply([Write(execution, execution)], [], [])
    with pytest.raises(ItemNotFound):
        await store.executions.apply([], [Write(tasks[0], None)], [])


async def test_find_by_reservation_bench_and_status_in_creation_order(store: Store) -> None:
    a = make_run("res-1", "rig-1", tasks=1, minutes=1)
    b = make_run("res-1", "rig-1", tasks=1, minutes=2)
    c = make_run("res-2", "rig-2", tasks=1, minutes=3)
    d = make_run("res-3", "rig-1", tasks=1, minutes=4)
    for run in (c, a, d, b):
        await store_run(store, run)
    running = transition(b[0], ExecutionStatus.RUNNING, START)
    await store.executions.apply([Write(b[0], running)], [], [])

    async def ids(query: ExecutionQuery) -> list[str]:
        page = await store.executions.find(query, 50, None)
        return [e.execution_id for e in page.items]

    assert await ids(ExecutionQuery(reservation_id="res-1")) == [
        a[0].execution_id,
        b[0].execution_id,
    ]
    assert await ids(ExecutionQuery(bench_id="rig-1")) == [
        a[0].execution_id,
        b[0].execution_id,
        d[0].execution_id,
    ]
    assert await ids(ExecutionQuery(status=ExecutionStatus.QUEUED)) == [
        a[0].execution_id,
        c[0].execution_id,
        d[0].execution_id,
    ]
    assert await ids(ExecutionQuery(bench_id="rig-1", status=ExecutionStatus.RUNNING)) == [
        b[0].execution_id
    ]
    with pytest.raises(ValueError):
        await store.executions.find(ExecutionQuery(), 10, None)


async def test_find_pages(store: Store) -> None:
    runs = [make_run(tasks=1, minutes=n) for n in range(7)]
    for run in runs:
        await store_run(store, run)
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await store.executions.find(ExecutionQuery(reservation_id="res-1"), 3, after)
        assert len(page.items) <= 3
        seen += [e.execution_id for e in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [run[0].execution_id for run in runs]


async def test_expired_leases_are_found_soonest_first(store: Store) -> None:
    execution, tasks = make_run(tasks=3)
    await store_run(store, (execution, tasks))
    late = claim(tasks[0], "agent", START + timedelta(seconds=30), LEASE)
    early = claim(tasks[1], "agent", START, LEASE)
    await store.executions.apply([], [Write(tasks[0], late), Write(tasks[1], early)], [])
    assert await store.executions.find_expired_leases(START + timedelta(seconds=59), 10) == []
    expired = await store.executions.find_expired_leases(START + timedelta(seconds=60), 10)
    assert expired == [early]
    both = await store.executions.find_expired_leases(START + timedelta(minutes=5), 10)
    assert both == [early, late]
    assert await store.executions.find_expired_leases(START + timedelta(minutes=5), 1) == [early]


async def test_creation_takes_its_idempotency_key(store: Store) -> None:
    key = IdempotencyClaim(key="ci-bot\ncreate_execution\nk", fingerprint="f")
    first = make_run()
    await store.executions.apply(
        [Write(None, first[0])], [], [], key.record(first[0].execution_id, START)
    )
    second = make_run()
    with pytest.raises(IdempotencyKeyTaken) as caught:
        await store.executions.apply(
            [Write(None, second[0])], [], [], key.record(second[0].execution_id, START)
        )
    assert caught.value.record.resource_id == first[0].execution_id
    assert await store.executions.get(second[0].execution_id) is None


async def test_racing_claims_of_one_task_have_one_winner(store: Store) -> None:
    execution, tasks = make_run(tasks=1)
    await store_run(store, (execution, tasks))

    async def attempt(n: int) -> bool:
        leased = claim(tasks[0], f"agent-{n}", START, LEASE)
        try:
            await store.executions.apply(
                [], [Write(tasks[0], leased)], [run_entry(leased, "claimed")]
            )
        except VersionMismatch:
            return False
        return True

    outcomes = await asyncio.gather(*(attempt(n) for n in range(20)))
    assert outcomes.count(True) == 1
    stored = await store.executions.get_task(tasks[0].task_id)
    assert stored is not None and stored.lease_holder == f"agent-{outcomes.index(True)}"


async def test_open_only_finds_the_unfinished_runs_of_a_reservation(store: Store) -> None:
    runs = [make_run("res-1", tasks=1, minutes=n) for n in range(4)]
    for run in runs:
        await store_run(store, run)
    running = transition(runs[1][0], ExecutionStatus.RUNNING, START)
    await store.executions.apply([Write(runs[1][0], running)], [], [])
    passed = transition(running, ExecutionStatus.PASSED, START)
    cancelled = transition(runs[2][0], ExecutionStatus.CANCELLED, START)
    await store.executions.apply([Write(running, passed), Write(runs[2][0], cancelled)], [], [])
    await store_run(store, make_run("res-2", tasks=1, minutes=9))

    page = await store.executions.find(
        ExecutionQuery(reservation_id="res-1", open_only=True), 50, None
    )
    assert [e.execution_id for e in page.items] == [
        runs[0][0].execution_id,
        runs[3][0].execution_id,
    ]
    reopened = await store.executions.find(
        ExecutionQuery(reservation_id="res-1", open_only=True), 1, None
    )
    assert reopened.next_after is not None
    rest = await store.executions.find(
        ExecutionQuery(reservation_id="res-1", open_only=True), 1, reopened.next_after
    )
    assert [e.execution_id for e in rest.items] == [runs[3][0].execution_id]
    by_bench = await store.executions.find(
        ExecutionQuery(bench_id="rig-1", open_only=True), 50, None
    )
    assert {e.reservation_id for e in by_bench.items} == {"res-1", "res-2"}
    assert all(not e.status.is_terminal for e in by_bench.items)
