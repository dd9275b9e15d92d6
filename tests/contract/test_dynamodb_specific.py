"""Facts about the DynamoDB adapter that the shared contract cannot see.

Table layout as created, no Scan, round trips and capacity per operation, request
parameters, the ALL_OLD path of a lost race, calendar races retried, and outages. Runs
against moto's server (see conftest).
"""

from __future__ import annotations

import math
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aioboto3
import pytest
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from app.benches.domain import AdminState, Bench, Heartbeat, new_bench
from app.executions.domain import (
    MAX_TASKS,
    Execution,
    ExecutionStatus,
    Task,
    TaskSpec,
    claim,
    complete,
    extend,
    new_execution,
    transition,
)
from app.executions.service import ChangeSet, settle
from app.history.domain import HistoryEntry, diff
from app.idempotency import IdempotencyClaim, IdempotencyKeyTaken, IdempotencyRecord
from app.identity import Actor, Principal, Role
from app.ids import sortable_uuid
from app.reservations.domain import LONGEST_WINDOW, Reservation, ReservationState
from app.store.base import (
    AlreadyExists,
    BenchNotBookable,
    BenchQuery,
    ExecutionQuery,
    ItemNotFound,
    ReservationQuery,
    Store,
    StoreUnavailable,
    VersionMismatch,
    WindowTaken,
    Write,
    execution_page_key,
    reservation_page_key,
)
from app.store.dynamodb.codec import encode_execution, encode_task
from app.store.dynamodb.store import DynamoStore
from app.store.dynamodb.tables import BENCHES, HISTORY, TABLES, TASKS, create_tables
from app.timeutil import to_iso
from tests.support.no_scan import NoScanClient

START = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
REGION = "us-east-1"


def make_bench(bench_id: str, *capabilities: str) -> Bench:
    return new_bench(
        bench_id=bench_id,
        name=f"Bench {bench_id}",
        type="hil",
        capabilities=frozenset(capabilities),
        labels={"room": "b2"},
        heartbeat_interval_s=30,
        now=START,
    )


def entry_for(bench: Bench, action: str = "created") -> HistoryEntry:
    return HistoryEntry(
        entity_type="bench",
        entity_id=bench.bench_id,
        version=bench.version,
        at=bench.updated_at,
        actor="root",
        request_id=f"req-{bench.version}",
        action=action,
        changes={"name": {"from": None, "to": bench.name}},
    )


def next_version(bench: Bench, **changes: Any) -> Bench:
    return replace(
        bench,
        version=bench.version + 1,
        updated_at=bench.updated_at + timedelta(seconds=1),
        **changes,
    )


def new_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}-"


class RecordingClient:
    """Forwards to a client and records (operation, parameters) of every call made."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._client, name)
        if not callable(target) or name.startswith("_") or name == "get_waiter":
            return target

        async def record(**params: Any) -> Any:
            self.requests.append((name, params))
            return await target(**params)

        return record


class RaceBeforeTransaction:
    """Runs ``race`` once, right before the first transaction goes out."""

    def __init__(self, client: Any, race: Callable[[], Awaitable[None]]) -> None:
        self._client = client
        self._race: Callable[[], Awaitable[None]] | None = race

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def transact_write_items(self, **params: Any) -> Any:
        race, self._race = self._race, None
        if race is not None:
            await race()
        return await self._client.transact_write_items(**params)


class RaceBeforeEveryTransaction:
    """Runs ``race(n)`` before the n-th transaction (from 0), every time."""

    def __init__(self, client: Any, race: Callable[[int], Awaitable[None]]) -> None:
        self._client = client
        self._race = race
        self._count = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def transact_write_items(self, **params: Any) -> Any:
        self._count += 1
        await self._race(self._count - 1)
        return await self._client.transact_write_items(**params)


def _session() -> Any:
    return aioboto3.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION
    )


@pytest.fixture(scope="module")
async def raw_client(moto_endpoint: str) -> AsyncIterator[Any]:
    async with _session().client("dynamodb", endpoint_url=moto_endpoint) as client:
        yield client


@pytest.fixture
async def prefix(raw_client: Any) -> str:
    # Tables per test: no test sees another's benches.
    value = new_prefix()
    await create_tables(raw_client, value)
    return value


@pytest.fixture
def dynamo(raw_client: Any, prefix: str) -> DynamoStore:
    return DynamoStore(NoScanClient(raw_client), prefix)


async def test_create_tables_twice_is_fine_and_lays_out_the_spec(raw_client: Any) -> None:
    prefix = new_prefix()
    first = await create_tables(raw_client, prefix)
    second = await create_tables(raw_client, prefix)
    assert (
        first
        == second
        == [
            f"{prefix}Benches",
            f"{prefix}History",
            f"{prefix}Reservations",
            f"{prefix}BenchCalendar",
            f"{prefix}Idempotency",
            f"{prefix}Executions",
            f"{prefix}Tasks",
            f"{prefix}FeedCheckpoints",
        ]
    )

    for spec, name in zip(TABLES, first, strict=True):
        table = (await raw_client.describe_table(TableName=name))["Table"]
        assert table["TableStatus"] == "ACTIVE"
        assert table["KeySchema"] == spec.key_schema()
        assert sorted(table["AttributeDefinitions"], key=str) == sorted(
            spec.attribute_definitions(), key=str
        )
        assert table["StreamSpecification"] == {
            "StreamEnabled": True,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        indexes = {index["IndexName"]: index for index in table.get("GlobalSecondaryIndexes", [])}
        assert set(indexes) == {index.name for index in spec.indexes}
        for index in spec.indexes:
            assert indexes[index.name]["KeySchema"] == index.key_schema()
            assert indexes[index.name]["Projection"]["ProjectionType"] == index.projection

    # The facts themselves, not only "matches the spec": a typo in the spec shows here.
    benches = (await raw_client.describe_table(TableName=f"{prefix}Benches"))["Table"]
    assert benches["KeySchema"] == [
        {"AttributeName": "bench_id", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    indexes = {index["IndexName"]: index for index in benches["GlobalSecondaryIndexes"]}
    assert indexes["capability_idx"]["KeySchema"] == [
        {"AttributeName": "capability", "KeyType": "HASH"},
        {"AttributeName": "bench_id", "KeyType": "RANGE"},
    ]
    assert indexes["capability_idx"]["Projection"]["ProjectionType"] == "KEYS_ONLY"
    assert indexes["bench_list_idx"]["KeySchema"] == [
        {"AttributeName": "list_pk", "KeyType": "HASH"},
        {"AttributeName": "bench_id", "KeyType": "RANGE"},
    ]
    assert indexes["bench_list_idx"]["Projection"]["ProjectionType"] == "ALL"
    history = (await raw_client.describe_table(TableName=f"{prefix}History"))["Table"]
    assert history["KeySchema"] == [
        {"AttributeName": "entity", "KeyType": "HASH"},
        {"AttributeName": "version", "KeyType": "RANGE"},
    ]
    assert {"AttributeName": "version", "AttributeType": "N"} in history["AttributeDefinitions"]

    ttl = await raw_client.describe_time_to_live(TableName=f"{prefix}History")
    assert ttl["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "expires_at",
    }
    assert HISTORY.ttl_attribute == "expires_at" and BENCHES.ttl_attribute is None

    reservations = (await raw_client.describe_table(TableName=f"{prefix}Reservations"))["Table"]
    assert reservations["KeySchema"] == [{"AttributeName": "reservation_id", "KeyType": "HASH"}]
    indexes = {index["IndexName"]: index for index in reservations["GlobalSecondaryIndexes"]}
    assert set(indexes) == {
        "bench_reservations_idx",
        "user_reservations_idx",
        "open_reservations_idx",
    }
    assert indexes["open_reservations_idx"]["KeySchema"] == [
        {"AttributeName": "open_pk", "KeyType": "HASH"},
        {"AttributeName": "end", "KeyType": "RANGE"},
    ]
    for name, partition in (
        ("bench_reservations_idx", "bench_id"),
        ("user_reservations_idx", "user_id"),
    ):
        assert indexes[name]["KeySchema"] == [
            {"AttributeName": partition, "KeyType": "HASH"},
            {"AttributeName": "start", "KeyType": "RANGE"},
        ]
        assert indexes[name]["Projection"]["ProjectionType"] == "ALL"
    calendar = (await raw_client.describe_table(TableName=f"{prefix}BenchCalendar"))["Table"]
    assert calendar["KeySchema"] == [
        {"AttributeName": "bench_id", "KeyType": "HASH"},
        {"AttributeName": "day", "KeyType": "RANGE"},
    ]
    assert calendar.get("GlobalSecondaryIndexes", []) == []
    keys = (await raw_client.describe_table(TableName=f"{prefix}Idempotency"))["Table"]
    assert keys["KeySchema"] == [{"AttributeName": "key", "KeyType": "HASH"}]
    ttl = await raw_client.describe_time_to_live(TableName=f"{prefix}Idempotency")
    assert ttl["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "expires_at",
    }
    for name in ("Reservations", "BenchCalendar"):
        ttl = await raw_client.describe_time_to_live(TableName=f"{prefix}{name}")
        assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] == "DISABLED"


async def test_the_no_scan_proxy_refuses_scans(raw_client: Any, prefix: str) -> None:
    proxy = NoScanClient(raw_client)
    with pytest.raises(AssertionError):
        await proxy.scan(TableName=f"{prefix}Benches")
    with pytest.raises(AssertionError):
        proxy.get_paginator("scan")
    assert proxy.get_paginator("query") is not None


async def test_listing_uses_indexes_and_never_scans(raw_client: Any, prefix: str) -> None:
    recorder = RecordingClient(NoScanClient(raw_client))
    store = DynamoStore(recorder, prefix)
    for bench_id, capabilities in {"a1": ("can-bus", "arm64"), "a2": ("usb",), "b1": ()}.items():
        bench = make_bench(bench_id, *capabilities)
        await store.benches.create(bench, entry_for(bench))
    recorder.requests.clear()

    everything = await store.benches.find(BenchQuery(), 10, None)
    by_capability = await store.benches.find(
        BenchQuery(capabilities=frozenset({"can-bus", "arm64"}), type="hil"), 10, None
    )

    assert [b.bench_id for b in everything.items] == ["a1", "a2", "b1"]
    assert [b.bench_id for b in by_capability.items] == ["a1"]
    operations = [name for name, _ in recorder.requests]
    assert "scan" not in operations
    assert operations == ["query", "query", "batch_get_item"]
    indexes = [params["IndexName"] for name, params in recorder.requests if name == "query"]
    assert indexes == ["bench_list_idx", "capability_idx"]
    batch = recorder.requests[2][1]["RequestItems"][f"{prefix}Benches"]
    assert batch["ConsistentRead"] is True


async def test_round_trips_per_operation(dynamo: DynamoStore) -> None:
    bench = make_bench("rig-1", "can-bus")

    dynamo.calls.clear()
    await dynamo.benches.create(bench, entry_for(bench))
    assert dynamo.calls == {"TransactWriteItems": 1}

    dynamo.calls.clear()
    await dynamo.benches.record_heartbeat("rig-1", Heartbeat(START, "1.0", {}))
    assert dynamo.calls == {"UpdateItem": 1}

    dynamo.calls.clear()
    assert await dynamo.benches.get("rig-1") is not None
    assert dynamo.calls == {"GetItem": 1}

    # One transaction: the caller passes the bench it read, which names the guard items.
    dynamo.calls.clear()
    updated = next_version(bench, capabilities=frozenset({"usb"}))
    await dynamo.benches.update(bench, updated, entry_for(updated, "updated"))
    assert dynamo.calls == {"TransactWriteItems": 1}

    dynamo.calls.clear()
    await dynamo.history.find("bench", "rig-1", 10, None)
    assert dynamo.calls == {"Query": 1}


async def test_every_data_call_asks_for_capacity_and_transactions_carry_a_token(
    raw_client: Any, prefix: str
) -> None:
    recorder = RecordingClient(raw_client)
    store = DynamoStore(recorder, prefix)
    bench = make_bench("rig-1", "can-bus")
    await store.benches.create(bench, entry_for(bench))
    await store.benches.record_heartbeat("rig-1", Heartbeat(START, "1.0", {}))
    updated = next_version(bench, capabilities=frozenset({"usb"}))
    await store.benches.update(bench, updated, entry_for(updated, "updated"))
    await store.benches.get("rig-1")
    await store.benches.find(BenchQuery(capabilities=frozenset({"usb"})), 10, None)
    await store.history.find("bench", "rig-1", 10, None)

    assert recorder.requests
    for name, params in recorder.requests:
        assert params["ReturnConsumedCapacity"] == "TOTAL", name
    tokens = [p["ClientRequestToken"] for n, p in recorder.requests if n == "transact_write_items"]
    assert len(tokens) == 2 and len(set(tokens)) == 2
    gets = [p for n, p in recorder.requests if n in ("get_item", "query") and "IndexName" not in p]
    assert gets and all(p["ConsistentRead"] is True for p in gets)
    assert (f"{prefix}Benches", "GetItem") in store.capacity
    assert store.capacity[(f"{prefix}History", "Query")] > 0


async def test_item_layout_guard_items_follow_capabilities(
    dynamo: DynamoStore, raw_client: Any, prefix: str
) -> None:
    table = f"{prefix}Benches"
    bench = make_bench("rig-1", "can-bus", "arm64")
    await dynamo.benches.create(bench, entry_for(bench))
    updated = next_version(bench, capabilities=frozenset({"arm64", "usb"}))
    await dynamo.benches.update(bench, updated, entry_for(updated, "updated"))

    response = await raw_client.query(
        TableName=table,
        KeyConditionExpression="bench_id = :id",
        ExpressionAttributeValues={":id": {"S": "rig-1"}},
        ConsistentRead=True,
    )
    items = {item["sk"]["S"]: item for item in response["Items"]}
    assert set(items) == {"BENCH", "CAP#arm64", "CAP#usb"}
    assert items["CAP#usb"]["capability"] == {"S": "usb"}
    assert items["BENCH"]["list_pk"] == {"S": "BENCH"}
    assert items["BENCH"]["version"] == {"N": "2"}
    assert "capability" not in items["BENCH"]  # only guard items feed the sparse index

    # No capabilities: no empty string set (DynamoDB refuses one), and no guard items.
    bare = next_version(updated, capabilities=frozenset())
    await dynamo.benches.update(updated, bare, entry_for(bare, "updated"))
    assert await dynamo.benches.get("rig-1") == bare
    response = await raw_client.query(
        TableName=table,
        KeyConditionExpression="bench_id = :id",
        ExpressionAttributeValues={":id": {"S": "rig-1"}},
        ConsistentRead=True,
    )
    assert [item["sk"]["S"] for item in response["Items"]] == ["BENCH"]
    assert "capabilities" not in response["Items"][0]


async def test_json_values_come_back_exactly(dynamo: DynamoStore) -> None:
    bench = make_bench("rig-1")
    await dynamo.benches.create(bench, entry_for(bench))
    details = {"big": 2**63 + 1, "one": 1, "one_f": 1.0, "x": [None, True, "s"], "m": {"k": {}}}
    stored = await dynamo.benches.record_heartbeat("rig-1", Heartbeat(START, "2.0", details))
    assert stored.last_heartbeat is not None
    assert stored.last_heartbeat.details == details
    assert type(stored.last_heartbeat.details["one"]) is int
    assert type(stored.last_heartbeat.details["one_f"]) is float


async def test_a_lost_race_reports_the_winner_from_the_failed_condition(
    raw_client: Any, prefix: str
) -> None:
    winner_store = DynamoStore(raw_client, prefix)
    bench = make_bench("rig-1", "can-bus")
    await winner_store.benches.create(bench, entry_for(bench))
    winner = next_version(bench, name="winner", capabilities=frozenset({"jtag"}))

    async def win() -> None:
        await winner_store.benches.update(bench, winner, entry_for(winner, "updated"))

    loser_store = DynamoStore(RaceBeforeTransaction(raw_client, win), prefix)
    loser = next_version(bench, name="loser", capabilities=frozenset({"usb"}))
    with pytest.raises(VersionMismatch) as caught:
        await loser_store.benches.update(bench, loser, entry_for(loser, "updated"))

    # The current bench came from ALL_OLD in the cancellation: no read after the write.
    assert caught.value.current == winner
    assert loser_store.calls == {"TransactWriteItems": 1}
    assert await winner_store.benches.get("rig-1") == winner
    by_usb = await winner_store.benches.find(BenchQuery(capabilities=frozenset({"usb"})), 10, None)
    assert by_usb.items == []
    history = await winner_store.history.find("bench", "rig-1", 10, None)
    assert [e.request_id for e in history.items] == ["req-1", "req-2"]


async def test_pages_end_exactly_and_resume_after_any_id(dynamo: DynamoStore) -> None:
    for bench_id in ("a1", "a2", "a3"):
        bench = make_bench(bench_id, "can-bus")
        await dynamo.benches.create(bench, entry_for(bench))
    for capabilities in (frozenset(), frozenset({"can-bus"})):
        full = await dynamo.benches.find(BenchQuery(capabilities=capabilities), 3, None)
        assert [b.bench_id for b in full.items] == ["a1", "a2", "a3"]
        assert full.next_after is None
        first = await dynamo.benches.find(BenchQuery(capabilities=capabilities), 2, None)
        assert first.next_after == "a2"
        # ``after`` need not name a stored bench: listing resumes at the next id.
        resumed = await dynamo.benches.find(BenchQuery(capabilities=capabilities), 5, "a1x")
        assert [b.bench_id for b in resumed.items] == ["a2", "a3"]
        assert resumed.next_after is None


async def test_ping_without_tables_is_unavailable(raw_client: Any) -> None:
    store = DynamoStore(raw_client, new_prefix())
    with pytest.raises(StoreUnavailable):
        await store.ping()


async def test_unreachable_endpoint_is_unavailable() -> None:
    # A socket bound but not listening holds the port and refuses connections at once.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        # One attempt keeps the test fast; the store's own config retries.
        config = AioConfig(connect_timeout=1, read_timeout=1, retries={"max_attempts": 1})
        async with _session().client("dynamodb", endpoint_url=endpoint, config=config) as client:
            store: Store = DynamoStore(client, new_prefix())
            with pytest.raises(StoreUnavailable):
                await store.ping()
            with pytest.raises(StoreUnavailable):
                await store.benches.get("rig-1")


# --- reservations and idempotency keys ---------------------------------------------------

T0 = START + timedelta(days=1)  # 2026-11-26T08:00Z


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def reservation(
    start: float, end: float, user: str = "alice", bench_id: str = "rig-1"
) -> Reservation:
    return Reservation(
        reservation_id=str(uuid.uuid4()),
        bench_id=bench_id,
        user_id=user,
        start=at(start),
        end=at(end),
        purpose="test",
        state=ReservationState.BOOKED,
        version=1,
        created_at=START,
        updated_at=START,
    )


def reservation_entry(item: Reservation, action: str = "created") -> HistoryEntry:
    return HistoryEntry(
        entity_type="reservation",
        entity_id=item.reservation_id,
        version=item.version,
        at=item.updated_at,
        actor=item.user_id,
        request_id=f"req-{item.version}",
        action=action,
        changes={},
    )


def changed(item: Reservation, **fields: Any) -> Reservation:
    return replace(
        item, version=item.version + 1, updated_at=item.updated_at + timedelta(seconds=1), **fields
    )


def key_record(key: str, resource_id: str) -> IdempotencyRecord:
    return IdempotencyClaim(key=key, fingerprint="f1").record(resource_id, START)


async def add_bench(store: DynamoStore, bench_id: str = "rig-1") -> Bench:
    bench = make_bench(bench_id)
    await store.benches.create(bench, entry_for(bench))
    return bench


async def book(store: DynamoStore, item: Reservation) -> Reservation:
    await store.reservations.create(item, reservation_entry(item))
    return item


async def holding(store: DynamoStore, bench_id: str = "rig-1") -> list[str]:
    page = await store.reservations.find(
        ReservationQuery(bench_id=bench_id, holding_only=True), 100, None
    )
    return [r.reservation_id for r in page.items]


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values, with its per-type rules."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict[str, Any]) -> int:
    ((kind, data),) = value.items()
    if kind == "S":
        return len(data.encode())
    if kind == "N":
        digits = data.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(member.encode()) for member in data)
    if kind == "L":
        return 3 + sum(1 + _value_size(member) for member in data)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(v) for k, v in data.items())
    raise AssertionError(f"no size rule for {kind}")


async def transaction_write_units(raw_client: Any, actions: list[dict[str, Any]]) -> int:
    """What DynamoDB bills for a committed TransactWriteItems, which moto does not report:
    2 write units per item per started KB, ConditionCheck included (billed as a write).
    Items are sized as stored after the commit (the bench a ConditionCheck looked at)."""
    units = 0
    for action in actions:
        ((kind, request),) = action.items()
        if kind == "Put":
            size = item_size(request["Item"])
        else:
            stored = await raw_client.get_item(
                TableName=request["TableName"], Key=request["Key"], ConsistentRead=True
            )
            size = item_size(stored["Item"])
        units += 2 * math.ceil(max(size, 1) / 1024)
    return units


def transactions(recorder: RecordingClient) -> list[list[dict[str, Any]]]:
    return [p["TransactItems"] for n, p in recorder.requests if n == "transact_write_items"]


async def test_round_trips_and_capacity_per_booking_cancel_and_move(
    raw_client: Any, prefix: str
) -> None:
    recorder = RecordingClient(NoScanClient(raw_client))
    store = DynamoStore(recorder, prefix)
    await add_bench(store)
    calendar, benches = f"{prefix}BenchCalendar", f"{prefix}Benches"
    keys, reservations = f"{prefix}Idempotency", f"{prefix}Reservations"

    def reset() -> None:
        store.calls.clear()
        store.capacity.clear()
        recorder.requests.clear()

    # Booking one day, with a key: one consistent read of day + bench + key, one transaction.
    reset()
    mine = reservation(0, 2)
    await store.reservations.create(
        mine, reservation_entry(mine), key_record("alice\nop\nk1", mine.reservation_id)
    )
    assert store.calls == {"BatchGetItem": 1, "TransactWriteItems": 1}
    # Strongly consistent reads of items up to 4 KB: 1 read unit each, found or not.
    assert store.capacity == {
        (calendar, "BatchGetItem"): 1.0,
        (benches, "BatchGetItem"): 1.0,
        (keys, "BatchGetItem"): 1.0,
    }
    [actions] = transactions(recorder)
    assert [next(iter(a)) for a in actions] == ["ConditionCheck", "Put", "Put", "Put", "Put"]
    # bench check, reservation, one day, history, key: five items under 1 KB, 2 units each.
    assert await transaction_write_units(raw_client, actions) == 10

    # A three-day window without a key: three days and the bench read, six actions.
    reset()
    long = reservation(24, 72)  # Nov 27 08:00 to Nov 29 08:00 touches 27, 28, 29
    await book(store, long)
    assert store.calls == {"BatchGetItem": 1, "TransactWriteItems": 1}
    assert store.capacity == {(calendar, "BatchGetItem"): 3.0, (benches, "BatchGetItem"): 1.0}
    [actions] = transactions(recorder)
    assert len(actions) == 6
    assert await transaction_write_units(raw_client, actions) == 12

    # The longest window touches 32 days: still one transaction, 35 actions of 100.
    reset()
    longest = reservation(24 * 40, 24 * 40 + LONGEST_WINDOW.total_seconds() / 3600)
    await book(store, longest)
    assert store.calls == {"BatchGetItem": 1, "TransactWriteItems": 1}
    assert len(transactions(recorder)[0]) == 1 + 1 + 32 + 1

    # Cancelling frees its days: read them, then reservation + days + history.
    reset()
    cancelled = changed(mine, state=ReservationState.CANCELLED)
    await store.reservations.update(mine, cancelled, reservation_entry(cancelled, "cancelled"))
    assert store.calls == {"BatchGetItem": 1, "TransactWriteItems": 1}
    assert store.capacity == {(calendar, "BatchGetItem"): 1.0}
    [actions] = transactions(recorder)
    assert [next(iter(a)) for a in actions] == ["Update", "Put", "Put"]
    assert await transaction_write_units(raw_client, actions) == 6

    # Moving to another day: both days and the reservation (for its version) are read.
    reset()
    moved = changed(long, start=at(96), end=at(97))  # Nov 30
    await store.reservations.update(long, moved, reservation_entry(moved, "updated"))
    assert store.calls == {"BatchGetItem": 1, "TransactWriteItems": 1}
    assert store.capacity == {
        (calendar, "BatchGetItem"): 4.0,
        (reservations, "BatchGetItem"): 1.0,
    }
    [actions] = transactions(recorder)
    assert len(actions) == 1 + 4 + 1  # reservation, three days freed and one taken, history
    assert await transaction_write_units(raw_client, actions) == 12

    # Changing the purpose only leaves the calendar alone: one transaction, no read.
    reset()
    renamed = changed(moved, purpose="flashing")
    await store.reservations.update(moved, renamed, reservation_entry(renamed, "updated"))
    assert store.calls == {"TransactWriteItems": 1}
    [actions] = transactions(recorder)
    assert await transaction_write_units(raw_client, actions) == 4

    reset()
    assert await store.idempotency.get("alice\nop\nk1") is not None
    assert await store.reservations.get(mine.reservation_id) == cancelled
    assert store.calls == {"GetItem": 2}
    # moto says 0.5 for these; DynamoDB bills a consistent read up to 4 KB as 1 unit.
    assert set(store.capacity) == {(keys, "GetItem"), (reservations, "GetItem")}


async def test_calendar_items_list_booked_slots_per_day_and_outlive_cancellation(
    dynamo: DynamoStore, raw_client: Any, prefix: str
) -> None:
    await add_bench(dynamo)
    long = await book(dynamo, reservation(12, 40))  # Nov 26 20:00 to Nov 28 00:00

    async def days() -> dict[str, dict[str, Any]]:
        response = await raw_client.query(
            TableName=f"{prefix}BenchCalendar",
            KeyConditionExpression="bench_id = :id",
            ExpressionAttributeValues={":id": {"S": "rig-1"}},
            ConsistentRead=True,
        )
        return {item["day"]["S"]: item for item in response["Items"]}

    slot = {
        "M": {
            "reservation_id": {"S": long.reservation_id},
            "start": {"S": "2026-11-26T20:00:00.000000Z"},
            "end": {"S": "2026-11-28T00:00:00.000000Z"},
        }
    }
    # Half-open: ending at midnight does not touch the 28th.
    stored = await days()
    assert sorted(stored) == ["2026-11-26", "2026-11-27"]
    assert all(item["slots"] == {"L": [slot]} for item in stored.values())
    assert all(item["version"] == {"N": "1"} for item in stored.values())

    cancelled = changed(long, state=ReservationState.CANCELLED)
    await dynamo.reservations.update(long, cancelled, reservation_entry(cancelled, "cancelled"))
    # Emptied, not deleted: versions only grow, so an old read can never match again.
    stored = await days()
    assert sorted(stored) == ["2026-11-26", "2026-11-27"]
    assert all(item["slots"] == {"L": []} for item in stored.values())
    assert all(item["version"] == {"N": "2"} for item in stored.values())


async def test_reservation_and_key_items_hold_sortable_text_and_a_ttl_number(
    dynamo: DynamoStore, raw_client: Any, prefix: str
) -> None:
    await add_bench(dynamo)
    mine = reservation(0, 1)
    record = key_record("alice\nop\nk1", mine.reservation_id)
    await dynamo.reservations.create(mine, reservation_entry(mine), record)

    stored = await raw_client.get_item(
        TableName=f"{prefix}Reservations",
        Key={"reservation_id": {"S": mine.reservation_id}},
        ConsistentRead=True,
    )
    assert stored["Item"]["start"] == {"S": "2026-11-26T08:00:00.000000Z"}
    assert stored["Item"]["version"] == {"N": "1"}
    key = await raw_client.get_item(
        TableName=f"{prefix}Idempotency",
        Key={"key": {"S": "alice\nop\nk1"}},
        ConsistentRead=True,
    )
    assert key["Item"]["expires_at"] == {"N": str(int(record.expires_at.timestamp()))}
    assert key["Item"]["expires_at_iso"] == {"S": to_iso(record.expires_at)}
    assert await dynamo.idempotency.get("alice\nop\nk1") == record


async def test_a_lost_calendar_race_is_read_again_and_reported_as_window_taken(
    raw_client: Any, prefix: str
) -> None:
    winner_store = DynamoStore(raw_client, prefix)
    await add_bench(winner_store)
    theirs = reservation(1, 3, user="bob")

    async def win() -> None:
        await book(winner_store, theirs)

    loser_store = DynamoStore(RaceBeforeTransaction(raw_client, win), prefix)
    mine = reservation(0, 2)
    with pytest.raises(WindowTaken) as caught:
        await book(loser_store, mine)

    assert caught.value.conflicts == [theirs.slot]
    # Read, lose the transaction on the day's version, read again, and decide: taken.
    assert loser_store.calls == {"BatchGetItem": 2, "TransactWriteItems": 1}
    assert await winner_store.reservations.get(mine.reservation_id) is None
    assert (
        await winner_store.history.find("reservation", mine.reservation_id, 5, None)
    ).items == []
    assert await holding(winner_store) == [theirs.reservation_id]


async def test_a_lost_race_for_another_hour_of_the_day_is_retried_and_books(
    raw_client: Any, prefix: str
) -> None:
    winner_store = DynamoStore(raw_client, prefix)
    await add_bench(winner_store)
    theirs = reservation(4, 5, user="bob")

    async def win() -> None:
        await book(winner_store, theirs)

    loser_store = DynamoStore(RaceBeforeTransaction(raw_client, win), prefix)
    mine = await book(loser_store, reservation(0, 2))

    assert loser_store.calls == {"BatchGetItem": 2, "TransactWriteItems": 2}
    assert await holding(winner_store) == [mine.reservation_id, theirs.reservation_id]
    day = await raw_client.get_item(
        TableName=f"{prefix}BenchCalendar",
        Key={"bench_id": {"S": "rig-1"}, "day": {"S": "2026-11-26"}},
        ConsistentRead=True,
    )
    assert day["Item"]["version"] == {"N": "2"}
    assert len(day["Item"]["slots"]["L"]) == 2


async def test_endless_lost_races_give_up_as_unavailable(raw_client: Any, prefix: str) -> None:
    winner_store = DynamoStore(raw_client, prefix)
    await add_bench(winner_store)

    async def win(round_: int) -> None:
        # Another six minutes of the same day each time, never the loser's hours.
        await book(winner_store, reservation(3 + round_ / 10, 3.1 + round_ / 10, user="bob"))

    loser_store = DynamoStore(RaceBeforeEveryTransaction(raw_client, win), prefix)
    mine = reservation(0, 2)
    with pytest.raises(StoreUnavailable):
        await book(loser_store, mine)

    assert loser_store.calls == {"BatchGetItem": 10, "TransactWriteItems": 10}
    assert await winner_store.reservations.get(mine.reservation_id) is None
    assert len(await holding(winner_store)) == 10


async def test_a_key_taken_meanwhile_comes_back_from_the_failed_condition(
    raw_client: Any, prefix: str
) -> None:
    winner_store = DynamoStore(raw_client, prefix)
    await add_bench(winner_store)
    first = reservation(5, 6)
    first_record = key_record("alice\nop\nk1", first.reservation_id)

    async def win() -> None:
        await winner_store.reservations.create(first, reservation_entry(first), first_record)

    loser_store = DynamoStore(RaceBeforeTransaction(raw_client, win), prefix)
    again = reservation(0, 1)
    with pytest.raises(IdempotencyKeyTaken) as caught:
        await loser_store.reservations.create(
            again, reservation_entry(again), key_record("alice\nop\nk1", again.reservation_id)
        )

    # The stored record came from ALL_OLD: no read after the transaction.
    assert caught.value.record == first_record
    assert loser_store.calls == {"BatchGetItem": 1, "TransactWriteItems": 1}
    assert await holding(winner_store) == [first.reservation_id]


async def test_a_bench_paused_meanwhile_comes_back_from_the_failed_check(
    raw_client: Any, prefix: str
) -> None:
    winner_store = DynamoStore(raw_client, prefix)
    bench = await add_bench(winner_store)
    paused = next_version(bench, admin_state=AdminState.MAINTENANCE)

    async def pause() -> None:
        await winner_store.benches.update(bench, paused, entry_for(paused, "updated"))

    loser_store = DynamoStore(RaceBeforeTransaction(raw_client, pause), prefix)
    with pytest.raises(BenchNotBookable) as caught:
        await book(loser_store, reservation(0, 1))

    assert caught.value.bench == paused
    assert loser_store.calls == {"BatchGetItem": 1, "TransactWriteItems": 1}
    assert await holding(winner_store) == []


async def test_find_queries_the_reservation_indexes_and_never_scans(
    raw_client: Any, prefix: str
) -> None:
    recorder = RecordingClient(NoScanClient(raw_client))
    store = DynamoStore(recorder, prefix)
    await add_bench(store, "rig-1")
    await add_bench(store, "rig-2")
    a = await book(store, reservation(0, 1))
    b = await book(store, reservation(2, 3, user="bob"))
    c = await book(store, reservation(4, 5, bench_id="rig-2"))
    recorder.requests.clear()

    by_bench = await store.reservations.find(ReservationQuery(bench_id="rig-1"), 1, None)
    assert by_bench.items == [a] and by_bench.next_after == reservation_page_key(a)
    rest = await store.reservations.find(ReservationQuery(bench_id="rig-1"), 5, by_bench.next_after)
    assert rest.items == [b] and rest.next_after is None
    mine = await store.reservations.find(ReservationQuery(user_id="alice"), 5, None)
    assert mine.items == [a, c]
    both = await store.reservations.find(ReservationQuery(bench_id="rig-1", user_id="bob"), 5, None)
    assert both.items == [b]
    ranged = await store.reservations.find(
        ReservationQuery(
            bench_id="rig-1", ends_after=at(0.5), starts_before=at(2), holding_only=True
        ),
        5,
        None,
    )
    assert ranged.items == [a]

    queries = [params for name, params in recorder.requests]
    assert [name for name, _ in recorder.requests] == ["query"] * 5
    assert [q["IndexName"] for q in queries] == [
        "bench_reservations_idx",
        "bench_reservations_idx",
        "user_reservations_idx",
        "bench_reservations_idx",
        "bench_reservations_idx",
    ]
    # GSIs refuse ConsistentRead; a listing may lag a booking by a moment, a booking never.
    assert all("ConsistentRead" not in q for q in queries)
    # One more than the page, to know whether another page exists.
    assert queries[0]["Limit"] == 2
    assert queries[1]["ExclusiveStartKey"] == {
        "reservation_id": {"S": a.reservation_id},
        "bench_id": {"S": "rig-1"},
        "start": {"S": to_iso(a.start)},
    }
    assert queries[3]["FilterExpression"] == "#user = :user"
    # Starts from a LONGEST_WINDOW before the range (a long one may still reach into it),
    # strictly before its end; the rest is a filter.
    ranged_query = queries[4]
    assert ranged_query["KeyConditionExpression"] == (
        "#pk = :pk AND #start BETWEEN :lowest AND :highest"
    )
    values = ranged_query["ExpressionAttributeValues"]
    assert values[":lowest"] == {"S": to_iso(at(0.5) - LONGEST_WINDOW)}
    assert values[":highest"] == {"S": "2026-11-26T09:59:59.999999Z"}
    assert ranged_query["FilterExpression"] == (
        "#end > :ends_after AND #state IN (:booked, :completed)"
    )

    # No start can be both before the range's end and a LONGEST_WINDOW before its start
    # (the key condition would be refused): no request at all.
    recorder.requests.clear()
    beyond = at(0) + LONGEST_WINDOW + timedelta(microseconds=1)
    empty = await store.reservations.find(
        ReservationQuery(bench_id="rig-1", ends_after=beyond, starts_before=at(0)), 5, None
    )
    assert empty.items == [] and empty.next_after is None
    assert recorder.requests == []


# --- executions and tasks ----------------------------------------------------------------

LEASE = timedelta(seconds=60)
CI_ACTOR = Actor(Principal("ci-bot", Role.CI), "req-ci")
AGENT_ACTOR = Actor(Principal("agent-rig-1", Role.AGENT, "rig-1"), "req-agent")


def make_run(
    tasks: int = 3,
    *,
    minutes: float = 0,
    reservation_id: str = "res-1",
    bench_id: str = "rig-1",
) -> tuple[Execution, list[Task]]:
    now = START + timedelta(minutes=minutes)
    return new_execution(
        execution_id=sortable_uuid(now),
        reservation_id=reservation_id,
        bench_id=bench_id,
        created_by="ci-bot",
        commit_sha="9fceb02d0ae598e95dc970b74767f19372d61af8",
        pipeline_url="https://ci.example.com/pipelines/81234",
        metadata={"branch": "main", "pipeline": 81234, "trigger": "merge"},
        tasks=[
            TaskSpec(
                type="hil-test",
                params={"suite": f"smoke-{n}", "firmware": "s3://fw/build-81234.bin"},
                timeout_s=600,
            )
            for n in range(tasks)
        ],
        now=now,
    )


def creation_entries(execution: Execution, tasks: list[Task]) -> list[HistoryEntry]:
    """The entries the service writes with a new execution: one per item, all fields new."""
    entries = [
        HistoryEntry(
            entity_type="execution",
            entity_id=execution.execution_id,
            version=1,
            at=execution.created_at,
            actor=CI_ACTOR.subject,
            request_id=CI_ACTOR.request_id,
            action="created",
            changes=diff({}, execution.snapshot()),
        )
    ]
    for task in tasks:
        snapshot = {"status": task.status.value, "attempts": 0}
        entries.append(
            HistoryEntry(
                entity_type="task",
                entity_id=task.task_id,
                version=1,
                at=task.created_at,
                actor=CI_ACTOR.subject,
                request_id=CI_ACTOR.request_id,
                action="created",
                changes=diff({}, snapshot),
            )
        )
    return entries


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


async def test_execution_and_task_tables_are_laid_out_as_specified(raw_client: Any) -> None:
    prefix = new_prefix()
    await create_tables(raw_client, prefix)

    executions = (await raw_client.describe_table(TableName=f"{prefix}Executions"))["Table"]
    assert executions["KeySchema"] == [{"AttributeName": "execution_id", "KeyType": "HASH"}]
    assert sorted(executions["AttributeDefinitions"], key=str) == sorted(
        (
            {"AttributeName": name, "AttributeType": "S"}
            for name in (
                "execution_id",
                "reservation_id",
                "bench_id",
                "status",
                "created_key",
                "open_reservation_id",
            )
        ),
        key=str,
    )
    indexes = {index["IndexName"]: index for index in executions["GlobalSecondaryIndexes"]}
    assert set(indexes) == {
        "reservation_idx",
        "bench_executions_idx",
        "execution_status_idx",
        "open_executions_idx",
    }
    for name, partition in (
        ("reservation_idx", "reservation_id"),
        ("bench_executions_idx", "bench_id"),
        ("execution_status_idx", "status"),
        ("open_executions_idx", "open_reservation_id"),
    ):
        assert indexes[name]["KeySchema"] == [
            {"AttributeName": partition, "KeyType": "HASH"},
            {"AttributeName": "created_key", "KeyType": "RANGE"},
        ]
        assert indexes[name]["Projection"]["ProjectionType"] == "ALL"

    tasks = (await raw_client.describe_table(TableName=f"{prefix}Tasks"))["Table"]
    assert tasks["KeySchema"] == [{"AttributeName": "task_id", "KeyType": "HASH"}]
    [lease] = tasks["GlobalSecondaryIndexes"]
    assert lease["IndexName"] == "lease_idx"
    assert lease["KeySchema"] == [
        {"AttributeName": "lease_pk", "KeyType": "HASH"},
        {"AttributeName": "lease_expires_at", "KeyType": "RANGE"},
    ]
    assert lease["Projection"]["ProjectionType"] == "ALL"
    for name in ("Executions", "Tasks"):
        table = (await raw_client.describe_table(TableName=f"{prefix}{name}"))["Table"]
        assert table["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


async def test_execution_and_task_items_hold_text_json_and_a_sparse_lease_key(
    dynamo: DynamoStore, raw_client: Any, prefix: str
) -> None:
    execution, tasks = make_run()
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
    execution, tasks = make_run()
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
    assert [next(iter(a)) for a in actions] == ["Put", "Put", "Put", "Put"]
    for put, table in ((actions[0]["Put"], "Executions"), (actions[1]["Put"], "Tasks")):
        assert put["TableName"] == f"{prefix}{table}"
        assert put["ConditionExpression"] == "#version = :seen"
        assert put["ExpressionAttributeValues"] == {":seen": {"N": "1"}}
        assert put["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"
        assert put["Item"]["version"] == {"N": "2"}
    assert [a["Put"]["TableName"] for a in actions[2:]] == [f"{prefix}History"] * 2


async def test_reads_are_consistent_and_batched(raw_client: Any, prefix: str) -> None:
    recorder = RecordingClient(NoScanClient(raw_client))
    store = DynamoStore(recorder, prefix)
    # Created directly, no history: a creation of 48+ tasks is over one transaction.
    runs = [make_run(40, minutes=n) for n in range(4)]
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
    a = make_run(1, minutes=1)
    b = make_run(1, minutes=2)
    c = make_run(1, minutes=3, reservation_id="res-2", bench_id="rig-2")
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
    execution, tasks = make_run()
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
    execution, tasks = make_run(4)
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
    execution, tasks = make_run(1)
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
    history = await winner_store.history.find("task", tasks[0].task_id, 10, None)
    assert [e.action for e in history.items] == ["created", "claimed"]

    # A checked or replaced item that is gone is ItemNotFound, also without a read.
    gone, _ = make_run(1)
    loser_store.calls.clear()
    with pytest.raises(ItemNotFound):
        await loser_store.executions.apply([Write(gone, None)], [], [])
    with pytest.raises(ItemNotFound):
        await loser_store.executions.apply([Write(gone, gone)], [], [])
    assert loser_store.calls == {"TransactWriteItems": 2}


async def test_a_taken_key_wins_over_every_other_failure(dynamo: DynamoStore) -> None:
    run = make_run(2)
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
    fits = make_run(MAX_TASKS)
    await create_run(dynamo, fits, key_record("ci-bot\ncreate_execution\nk1", fits[0].execution_id))
    assert dynamo.calls == {"TransactWriteItems": 1}

    dynamo.calls.clear()
    execution, tasks = make_run(MAX_TASKS + 2)
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
    execution, tasks = make_run(1)
    await create_run(store, (execution, tasks))
    assert store.calls == {"TransactWriteItems": 2}
    assert await store.executions.get(execution.execution_id) == execution


async def test_round_trips_and_capacity_of_an_execution_lifecycle(
    raw_client: Any, prefix: str
) -> None:
    recorder = RecordingClient(NoScanClient(raw_client))
    store = DynamoStore(recorder, prefix)
    execution, tasks = make_run(3)
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
        # task + execution (queued -> running) + 2 entries
        "claim 0": (4, 8),
        # task + its entry + the two unfinished siblings checked at their versions
        "complete 0": (4, 8),
        # task + its entry: the execution is running already
        "claim 1": (2, 4),
        "complete 1": (3, 6),
        "claim 2": (2, 4),
        # the verdict: task + execution (running -> passed) + 2 entries
        "complete 2": (4, 8),
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
        execution, tasks = make_run(1, minutes=minutes)
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
