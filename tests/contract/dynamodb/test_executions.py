"""Executions and tasks on DynamoDB: item layout, one transaction per change set,
batched consistent reads, the indexes, a lagging lease index, races, and capacity.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from app.executions.changes import ChangeSet, settle
from app.executions.domain import (
    MAX_TASKS,
    Execution,
    ExecutionStatus,
    Task,
    claim,
    complete,
    extend,
    transition,
)
from app.identity import Actor, Principal, Role
from app.store.base import (
    AlreadyExists,
    ExecutionQuery,
    IdempotencyKeyTaken,
    IdempotencyRecord,
    ItemNotFound,
    VersionMismatch,
    Write,
    execution_page_key,
)
from app.store.dynamodb.codec import encode_execution, encode_task
from app.store.dynamodb.store import DynamoStore
from app.store.dynamodb.tables import TASKS
from app.timeutil import to_iso
from tests.conftest import START
from tests.contract.dynamodb.support import (
    RaceBeforeTransaction,
    RecordingClient,
    item_size,
    transaction_write_units,
    transactions,
)
from tests.support.dynamodb_tables import new_prefix
from tests.support.factories import creation_entries, key_record, make_ci_run
from tests.support.no_scan import NoScanClient

LEASE = timedelta(seconds=60)
AGENT_ACTOR = Actor(Principal("agent-rig-1", Role.AGENT, "rig-1"), "req-agent")


async def create_run(
    store: DynamoStore, run: tuple[Execution, list[Task]], record: IdempotencyRecord | None = None
) -> None:
    execution, tasks = run
    await store.executions.apply(
        [Write(None, execution)],
        [Write(None, task) for task in tasks],
        creation_entries(execution, tasks),
        record,
    )


def claim_changes(execution: Execution, task: Task, now: datetime) -> ChangeSet:
    """What the service's claim writes: the task leased, and a queued execution started."""
    changes = ChangeSet()
    changes.change_task(task, claim(task, AGENT_ACTOR.subject, now, LEASE), AGENT_ACTOR, "claimed")
    if execution.status is ExecutionStatus.QUEUED:
        started = transition(execution, ExecutionStatus.RUNNING, now)
        changes.change_execution(execution, started, AGENT_ACTOR, "started")
    return changes


def written(changes: ChangeSet) -> tuple[Execution | None, Task]:
    """The execution (if changed) and the first task as a change set leaves them."""
    execution = changes.executions[0].after if changes.executions else None
    task = changes.tasks[0].after
    assert task is not None
    return execution, task


async def apply_changes(store: DynamoStore, changes: ChangeSet) -> None:
    await store.executions.apply(changes.executions, changes.tasks, changes.entries)


async def claim_all(store: DynamoStore, execution: Execution, tasks: list[Task]) -> list[Task]:
    """Lease every task, one second apart from START; returns them as leased."""
    leased = []
    for seq, task in enumerate(tasks):
        changes = claim_changes(execution, task, START + timedelta(seconds=seq))
        await apply_changes(store, changes)
        started, claimed = written(changes)
        execution = started or execution
        leased.append(claimed)
    return leased


async def test_execution_and_task_items_hold_text_json_and_a_sparse_lease_key(
    dynamo: DynamoStore, raw_client: Any, prefix: str
) -> None:
    execution, tasks = make_ci_run()
    await create_run(dynamo, (execution, tasks))

    async def stored(table: str, key: dict[str, Any]) -> dict[str, Any]:
        response = await raw_client.get_item(
            TableName=f"{prefix}{table}", Key=key, ConsistentRead=True
        )
        item: dict[str, Any] = response["Item"]
        return item

    item = await stored("Executions", {"execution_id": {"S": execution.execution_id}})
    assert item["created_key"] == {"S": execution_page_key(execution)}
    assert item["created_key"]["S"] == f"2026-11-25T08:00:00.000000Z|{execution.execution_id}"
    assert item["task_ids"] == {"L": [{"S": task.task_id} for task in tasks]}
    assert item["metadata"] == {"S": '{"branch": "main", "pipeline": 81234, "trigger": "merge"}'}
    assert item["version"] == {"N": "1"}
    # Unset optional fields are absent, not NULL.
    assert not {"artifacts_uri", "summary", "started_at", "finished_at"} & set(item)

    changes = claim_changes(execution, tasks[0], START)
    await apply_changes(dynamo, changes)
    _, leased = written(changes)
    task_item = await stored("Tasks", {"task_id": {"S": tasks[0].task_id}})
    assert task_item["lease_pk"] == {"S": "LEASED"}
    assert task_item["lease_expires_at"] == {"S": to_iso(START + LEASE)}
    pending = await stored("Tasks", {"task_id": {"S": tasks[1].task_id}})
    assert not {"lease_pk", "lease_expires_at", "lease_holder", "result", "error"} & set(pending)

    async def lease_index() -> list[str]:
        response = await raw_client.query(
            TableName=f"{prefix}Tasks",
            IndexName="lease_idx",
            KeyConditionExpression="lease_pk = :leased",
            ExpressionAttributeValues={":leased": {"S": "LEASED"}},
        )
        return [entry["task_id"]["S"] for entry in response["Items"]]

    assert await lease_index() == [tasks[0].task_id]
    # Completing puts the whole item: the lease key goes, and the index entry with it.
    done = complete(leased, AGENT_ACTOR.subject, START + timedelta(seconds=5), {"ok": True})
    await dynamo.executions.apply([], [Write(leased, done)], [])
    task_item = await stored("Tasks", {"task_id": {"S": tasks[0].task_id}})
    assert "lease_pk" not in task_item and "lease_expires_at" not in task_item
    assert task_item["result"] == {"S": '{"ok": true}'}
    assert await lease_index() == []
    assert await dynamo.executions.get_task(tasks[0].task_id) == done


async def test_a_claim_is_one_transaction_of_versioned_puts_and_history(
    raw_client: Any, prefix: str
) -> None:
    recorder = RecordingClient(NoScanClient(raw_client))
    store = DynamoStore(recorder, prefix)
    execution, tasks = make_ci_run()
    await create_run(store, (execution, tasks))
    store.calls.clear()
    recorder.requests.clear()

    changes = claim_changes(execution, tasks[0], START)
    assert (len(changes.executions), len(changes.tasks), len(changes.entries)) == (1, 1, 2)
    await apply_changes(store, changes)

    assert store.calls == {"TransactWriteItems": 1}
    [(name, params)] = recorder.requests
    assert name == "transact_write_items" and params["ClientRequestToken"]
    actions = params["TransactItems"]
    assert [next(iter(a)) for a in actions] == ["Put"] * 6
    for put, table in ((actions[0]["Put"], "Executions"), (actions[1]["Put"], "Tasks")):
        assert put["TableName"] == f"{prefix}{table}"
        assert put["ConditionExpression"] == "#version = :seen"
        assert put["ExpressionAttributeValues"] == {":seen": {"N": "1"}}
        assert put["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"
        assert put["Item"]["version"] == {"N": "2"}
    # Each entry with the event it raises (task.claimed, execution.started).
    assert [a["Put"]["TableName"] for a in actions[2:]] == [
        f"{prefix}History",
        f"{prefix}Events",
    ] * 2


async def test_reads_are_consistent_and_batched(raw_client: Any, prefix: str) -> None:
    recorder = RecordingClient(NoScanClient(raw_client))
    store = DynamoStore(recorder, prefix)
    # Created directly, no history: a creation of 48+ tasks is over one transaction.
    runs = [make_ci_run(tasks=40, minutes=n) for n in range(4)]
    for execution, tasks in runs:
        await store.executions.apply([Write(None, execution)], [Write(None, t) for t in tasks], [])
    store.calls.clear()
    recorder.requests.clear()

    execution = runs[0][0]
    assert await store.executions.get(execution.execution_id) == execution
    assert await store.executions.get_task(runs[0][1][0].task_id) == runs[0][1][0]
    assert store.calls == {"GetItem": 2}
    assert all(params["ConsistentRead"] is True for _, params in recorder.requests)

    # 160 tasks in reverse order, plus a missing id and one id asked twice: two requests
    # of at most 100 keys, each key once, and the answer in the order asked.
    store.calls.clear()
    recorder.requests.clear()
    wanted = [task.task_id for _, tasks in runs for task in tasks][::-1]
    wanted[75:75] = ["missing", wanted[0]]
    found = await store.executions.get_tasks(wanted)
    assert [task.task_id for task in found] == [i for i in wanted if i != "missing"]
    assert store.calls == {"BatchGetItem": 2}
    batches = [params["RequestItems"][f"{prefix}Tasks"] for _, params in recorder.requests]
    assert [len(batch["Keys"]) for batch in batches] == [100, 61]
    assert all(batch["ConsistentRead"] is True for batch in batches)

    store.calls.clear()
    assert await store.executions.get_tasks([]) == []
    assert store.calls == {}


async def test_find_queries_the_execution_indexes_and_never_scans(
    raw_client: Any, prefix: str
) -> None:
    recorder = RecordingClient(NoScanClient(raw_client))
    store = DynamoStore(recorder, prefix)
    a = make_ci_run(tasks=1, minutes=1)
    b = make_ci_run(tasks=1, minutes=2)
    c = make_ci_run(tasks=1, minutes=3, reservation_id="res-2", bench_id="rig-2")
    for run in (c, b, a):
        await create_run(store, run)
    started = transition(b[0], ExecutionStatus.RUNNING, START)
    await store.executions.apply([Write(b[0], started)], [], [])
    recorder.requests.clear()

    first = await store.executions.find(ExecutionQuery(reservation_id="res-1"), 1, None)
    assert first.items == [a[0]] and first.next_after == execution_page_key(a[0])
    rest = await store.executions.find(ExecutionQuery(reservation_id="res-1"), 5, first.next_after)
    assert rest.items == [started] and rest.next_after is None
    by_bench = await store.executions.find(
        ExecutionQuery(bench_id="rig-1", status=ExecutionStatus.RUNNING), 5, None
    )
    assert by_bench.items == [started]
    queued = await store.executions.find(ExecutionQuery(status=ExecutionStatus.QUEUED), 5, None)
    assert queued.items == [a[0], c[0]]
    narrowed = await store.executions.find(
        ExecutionQuery(reservation_id="res-1", bench_id="rig-1", status=ExecutionStatus.QUEUED),
        5,
        None,
    )
    assert narrowed.items == [a[0]]

    assert [name for name, _ in recorder.requests] == ["query"] * 5
    queries = [params for _, params in recorder.requests]
    assert [q["IndexName"] for q in queries] == [
        "reservation_idx",
        "reservation_idx",
        "bench_executions_idx",
        "execution_status_idx",
        "reservation_idx",
    ]
    # GSIs refuse ConsistentRead: listings may lag a write by a moment, apply() never.
    assert all("ConsistentRead" not in q for q in queries)
    # One more than the page, to know whether another page exists.
    assert queries[0]["Limit"] == 2 and "FilterExpression" not in queries[0]
    assert queries[1]["ExclusiveStartKey"] == {
        "execution_id": {"S": a[0].execution_id},
        "reservation_id": {"S": "res-1"},
        "created_key": {"S": execution_page_key(a[0])},
    }
    # With a filter, Limit counts items read, not kept: such pages are read wide.
    assert queries[2]["FilterExpression"] == "#f0 = :f0"
    assert queries[2]["ExpressionAttributeNames"] == {"#pk": "bench_id", "#f0": "status"}
    assert queries[2]["Limit"] == 100
    assert queries[3]["ExpressionAttributeNames"] == {"#pk": "status"}
    assert queries[4]["FilterExpression"] == "#f0 = :f0 AND #f1 = :f1"

    with pytest.raises(ValueError):
        await store.executions.find(ExecutionQuery(), 5, None)


class LaggingLeaseIndex:
    """A lease index that lags the table. DynamoDB's GSIs are eventually consistent and
    moto's are not, so after ``freeze`` the lease index queries go to a copy of the Tasks
    table as it stood then, while the real table moves on."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._tasks = TASKS.table_name(prefix)
        self._copy: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def freeze(self) -> None:
        copy_prefix = new_prefix()
        await self._client.create_table(**TASKS.create_table_request(copy_prefix))
        self._copy = TASKS.table_name(copy_prefix)
        response = await self._client.query(
            TableName=self._tasks,
            IndexName="lease_idx",
            KeyConditionExpression="lease_pk = :leased",
            ExpressionAttributeValues={":leased": {"S": "LEASED"}},
        )
        assert "LastEvaluatedKey" not in response
        for item in response["Items"]:
            await self._client.put_item(TableName=self._copy, Item=item)

    async def query(self, **params: Any) -> Any:
        if params.get("IndexName") == "lease_idx" and self._copy is not None:
            params = {**params, "TableName": self._copy}
        return await self._client.query(**params)


async def test_stale_lease_index_entries_are_checked_against_the_table(
    raw_client: Any, prefix: str
) -> None:
    lagging = LaggingLeaseIndex(NoScanClient(raw_client), prefix)
    store = DynamoStore(lagging, prefix)
    execution, tasks = make_ci_run()
    await create_run(store, (execution, tasks))
    leased = await claim_all(store, execution, tasks)
    sweep = START + timedelta(seconds=80)
    await lagging.freeze()

    # The table moves on; the index still lists all three leases, ended at about +60 s.
    done = complete(leased[0], AGENT_ACTOR.subject, START + timedelta(seconds=10), {})
    extended = extend(leased[1], AGENT_ACTOR.subject, START + timedelta(seconds=30), LEASE)
    assert extended.lease_expires_at == START + timedelta(seconds=90)
    await store.executions.apply([], [Write(leased[0], done), Write(leased[1], extended)], [])
    store.calls.clear()

    # Completed (no longer leased) and extended (no longer ended) are dropped.
    assert await store.executions.find_expired_leases(sweep, 10) == [leased[2]]
    assert store.calls == {"Query": 1, "BatchGetItem": 1}


async def test_the_lease_sweep_reads_on_past_stale_entries_to_fill_its_limit(
    raw_client: Any, prefix: str
) -> None:
    lagging = LaggingLeaseIndex(NoScanClient(raw_client), prefix)
    store = DynamoStore(lagging, prefix)
    execution, tasks = make_ci_run(tasks=4)
    await create_run(store, (execution, tasks))
    leased = await claim_all(store, execution, tasks)
    await lagging.freeze()
    finished = [
        Write(task, complete(task, AGENT_ACTOR.subject, START + timedelta(seconds=10), {}))
        for task in leased[:2]
    ]
    await store.executions.apply([], finished, [])
    sweep = START + timedelta(minutes=5)

    store.calls.clear()
    assert await store.executions.find_expired_leases(sweep, 2) == leased[2:]
    # Two stale entries filled the first page; the second page found the live ones.
    assert store.calls == {"Query": 2, "BatchGetItem": 2}

    store.calls.clear()
    assert await store.executions.find_expired_leases(sweep, 1) == leased[2:3]
    assert store.calls == {"Query": 3, "BatchGetItem": 3}


async def test_a_lost_race_reports_the_stored_task_from_the_failed_condition(
    raw_client: Any, prefix: str
) -> None:
    winner_store = DynamoStore(raw_client, prefix)
    execution, tasks = make_ci_run(tasks=1)
    await create_run(winner_store, (execution, tasks))
    theirs = claim_changes(execution, tasks[0], START)

    async def win() -> None:
        await apply_changes(winner_store, theirs)

    loser_store = DynamoStore(RaceBeforeTransaction(raw_client, win), prefix)
    mine = ChangeSet()
    mine.change_task(tasks[0], claim(tasks[0], "agent-2", START, LEASE), AGENT_ACTOR, "claimed")
    with pytest.raises(VersionMismatch) as caught:
        await apply_changes(loser_store, mine)

    # The winner's task came from ALL_OLD in the cancellation: no read after the write.
    assert caught.value.current == written(theirs)[1]
    assert loser_store.calls == {"TransactWriteItems": 1}
    history = await winner_store.history.find(
        "task", tasks[0].task_id, 10, None, now=datetime.now(UTC)
    )
    assert [e.action for e in history.items] == ["created", "claimed"]

    # A checked or replaced item that is gone is ItemNotFound, also without a read.
    gone, _ = make_ci_run(tasks=1)
    loser_store.calls.clear()
    with pytest.raises(ItemNotFound):
        await loser_store.executions.apply([Write(gone, None)], [], [])
    with pytest.raises(ItemNotFound):
        await loser_store.executions.apply([Write(gone, gone)], [], [])
    assert loser_store.calls == {"TransactWriteItems": 2}


async def test_a_taken_key_wins_over_every_other_failure(dynamo: DynamoStore) -> None:
    run = make_ci_run(tasks=2)
    record = key_record("ci-bot\ncreate_execution\nk1", run[0].execution_id)
    await create_run(dynamo, run, record)

    # The same change set again, as a client retry sends it: the execution, its tasks and
    # entries all exist too, but the key decides, so the caller replays.
    again = key_record("ci-bot\ncreate_execution\nk1", "other")
    with pytest.raises(IdempotencyKeyTaken) as caught:
        await create_run(dynamo, run, again)
    assert caught.value.record == record

    with pytest.raises(AlreadyExists):
        await create_run(dynamo, run)
    assert dynamo.calls["TransactWriteItems"] == 3


async def test_more_actions_than_a_transaction_holds_are_refused_before_sending(
    dynamo: DynamoStore,
) -> None:
    # A creation is 2n + 2 actions (+1 with a key): MAX_TASKS fit, one more does not.
    fits = make_ci_run(tasks=MAX_TASKS)
    await create_run(dynamo, fits, key_record("ci-bot\ncreate_execution\nk1", fits[0].execution_id))
    assert dynamo.calls == {"TransactWriteItems": 1}

    dynamo.calls.clear()
    execution, tasks = make_ci_run(tasks=MAX_TASKS + 2)
    with pytest.raises(ValueError):
        await create_run(dynamo, (execution, tasks))
    assert dynamo.calls == {}
    assert await dynamo.executions.get(execution.execution_id) is None


class ConflictOnce:
    """Cancels the first transaction as DynamoDB does when another transaction holds one
    of its items (moto, serving one request at a time, never does)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._conflicted = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def transact_write_items(self, **params: Any) -> Any:
        if not self._conflicted:
            self._conflicted = True
            reasons: list[dict[str, str]] = [{"Code": "None"} for _ in params["TransactItems"]]
            reasons[0] = {"Code": "TransactionConflict", "Message": "Transaction is ongoing"}
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                    "CancellationReasons": reasons,
                },
                "TransactWriteItems",
            )
        return await self._client.transact_write_items(**params)


async def test_a_transaction_conflict_is_sent_again(raw_client: Any, prefix: str) -> None:
    store = DynamoStore(ConflictOnce(raw_client), prefix)
    execution, tasks = make_ci_run(tasks=1)
    await create_run(store, (execution, tasks))
    assert store.calls == {"TransactWriteItems": 2}
    assert await store.executions.get(execution.execution_id) == execution


async def test_round_trips_and_capacity_of_an_execution_lifecycle(
    raw_client: Any, prefix: str
) -> None:
    recorder = RecordingClient(NoScanClient(raw_client))
    store = DynamoStore(recorder, prefix)
    execution, tasks = make_ci_run(tasks=3)
    figures: dict[str, tuple[int, int]] = {}

    async def measure(label: str, change: Awaitable[None]) -> None:
        store.calls.clear()
        recorder.requests.clear()
        await change
        assert store.calls == {"TransactWriteItems": 1}, label
        [actions] = transactions(recorder)
        figures[label] = (len(actions), await transaction_write_units(raw_client, actions))

    record = key_record("ci-bot\ncreate_execution\nk1", execution.execution_id)
    await measure("create", create_run(store, (execution, tasks), record))

    current = list(tasks)
    now = START
    for seq in range(3):
        now += timedelta(seconds=10)
        claimed = claim_changes(execution, current[seq], now)
        await measure(f"claim {seq}", apply_changes(store, claimed))
        started, leased = written(claimed)
        execution = started or execution
        current[seq] = leased

        now += timedelta(seconds=10)
        done = complete(leased, AGENT_ACTOR.subject, now, {"passed": 120, "failed": 0})
        finished = ChangeSet()
        finished.change_task(leased, done, AGENT_ACTOR, "completed")
        settled = settle(finished, execution, current, done, AGENT_ACTOR, now)
        if settled is not execution:
            finished.change_execution(execution, settled, AGENT_ACTOR, "verdict")
        await measure(f"complete {seq}", apply_changes(store, finished))
        execution = settled
        current[seq] = done

    assert execution.status is ExecutionStatus.PASSED
    assert await store.executions.get(execution.execution_id) == execution
    # (actions, write units) per change set, from the pricing rule: 2 units per item per
    # started KB, ConditionCheck included. Every item here is under 1 KB.
    assert figures == {
        # execution + 3 tasks + 4 history entries + the idempotency key
        "create": (9, 18),
        # task + execution (queued -> running) + 2 entries + their 2 events
        "claim 0": (6, 12),
        # task + its entry + the two unfinished siblings checked at their versions
        "complete 0": (4, 8),
        # task + its entry + its event (task.claimed): the execution is running already
        "claim 1": (3, 6),
        "complete 1": (3, 6),
        "claim 2": (3, 6),
        # the verdict: task + execution (running -> passed) + 2 entries + execution.finished
        "complete 2": (5, 10),
    }
    # The largest items of the run, for headroom: past 1 KB an item costs twice as much.
    assert item_size(encode_execution(execution)) < 700
    assert item_size(encode_task(current[0])) < 700


async def test_a_page_resumes_after_its_cursor_even_when_that_item_left_the_index(
    dynamo: DynamoStore,
) -> None:
    # The housekeeper pages through running executions while timing them out: the cursor's
    # execution is no longer in the status partition when the next page is read.
    started = []
    for minutes in range(5):
        execution, tasks = make_ci_run(tasks=1, minutes=minutes)
        await create_run(dynamo, (execution, tasks))
        running = transition(execution, ExecutionStatus.RUNNING, START)
        await dynamo.executions.apply([Write(execution, running)], [], [])
        started.append(running)
    running_only = ExecutionQuery(status=ExecutionStatus.RUNNING)
    page = await dynamo.executions.find(running_only, 2, None)
    assert page.items == started[:2] and page.next_after is not None
    for item in page.items:
        ended = transition(item, ExecutionStatus.TIMED_OUT, START + timedelta(hours=1))
        await dynamo.executions.apply([Write(item, ended)], [], [])

    rest = await dynamo.executions.find(running_only, 5, page.next_after)
    assert rest.items == started[2:] and rest.next_after is None
