"""Facts about the DynamoDB adapter that the shared contract cannot see.

Table layout as created, no Scan, round trips per operation, request parameters, the
ALL_OLD path of a lost race, and outages. Runs against moto's server (see conftest).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aioboto3
import pytest
from aiobotocore.config import AioConfig

from app.benches.domain import Bench, Heartbeat, new_bench
from app.history.domain import HistoryEntry
from app.store.base import BenchQuery, Store, StoreUnavailable, VersionMismatch
from app.store.dynamodb.store import DynamoStore
from app.store.dynamodb.tables import BENCHES, HISTORY, TABLES, create_tables
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
    assert first == second == [f"{prefix}Benches", f"{prefix}History"]

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
