"""Benches on DynamoDB: indexes not Scans, round trips and capacity, request parameters,
item layout, and the ALL_OLD path of a lost race.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from app.benches.domain import AdminState, Heartbeat, Liveness
from app.history.domain import HistoryEntry
from app.store.base import BenchQuery, BenchRetired, VersionMismatch
from app.store.dynamodb.codec import encode_bench
from app.store.dynamodb.store import DynamoStore
from tests.conftest import START
from tests.contract.dynamodb.support import RaceBeforeTransaction, RecordingClient
from tests.support.factories import entry_for, make_bench, next_version
from tests.support.no_scan import NoScanClient


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
    await dynamo.history.find("bench", "rig-1", 10, None, now=datetime.now(UTC))
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
    await store.history.find("bench", "rig-1", 10, None, now=datetime.now(UTC))

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
    history = await winner_store.history.find("bench", "rig-1", 10, None, now=datetime.now(UTC))
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


def _liveness_entry(bench_id: str, seq: int, liveness: Liveness) -> HistoryEntry:
    return HistoryEntry(
        entity_type="bench_liveness",
        entity_id=bench_id,
        version=seq,
        at=START,
        actor="housekeeping",
        request_id=f"hk-{seq}",
        action="came_online" if liveness is Liveness.ONLINE else "went_offline",
        changes={},
    )


async def test_record_liveness_is_one_transaction_on_the_bench_item_alone(
    raw_client: Any, prefix: str
) -> None:
    recorder = RecordingClient(NoScanClient(raw_client))
    store = DynamoStore(recorder, prefix)
    bench = make_bench("rig-1", "can-bus")
    await store.benches.create(bench, entry_for(bench))
    recorder.requests.clear()
    store.calls.clear()
    await store.benches.record_liveness(
        bench, Liveness.ONLINE, _liveness_entry("rig-1", 1, Liveness.ONLINE)
    )
    assert store.calls == {"TransactWriteItems": 1}
    [(name, params)] = recorder.requests
    assert name == "transact_write_items"
    update, put = params["TransactItems"]
    assert update["Update"]["Key"] == {"bench_id": {"S": "rig-1"}, "sk": {"S": "BENCH"}}
    assert update["Update"]["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"
    # Neither the version nor any configuration attribute is written.
    written = set(update["Update"]["ExpressionAttributeNames"].values())
    assert written == {"recorded_liveness", "liveness_changes"}
    assert put["Put"]["Item"]["entity"] == {"S": "bench_liveness#rig-1"}
    item = await raw_client.get_item(
        TableName=f"{prefix}Benches", Key=update["Update"]["Key"], ConsistentRead=True
    )
    assert item["Item"]["liveness_changes"] == {"N": "1"}
    assert item["Item"]["version"] == {"N": "1"}


async def test_a_bench_item_written_before_transitions_were_counted_reads_as_none(
    dynamo: DynamoStore, raw_client: Any, prefix: str
) -> None:
    bench = replace(make_bench("rig-1"), recorded_liveness=Liveness.ONLINE)
    item = encode_bench(bench)
    del item["liveness_changes"]
    await raw_client.put_item(TableName=f"{prefix}Benches", Item=item)
    old = await dynamo.benches.get("rig-1")
    assert old == bench and old.liveness_changes == 0
    await dynamo.benches.record_liveness(
        old, Liveness.OFFLINE, _liveness_entry("rig-1", 1, Liveness.OFFLINE)
    )
    assert await dynamo.benches.get("rig-1") == replace(
        bench, recorded_liveness=Liveness.OFFLINE, liveness_changes=1
    )
    # The count is there now: a second recording from the old read loses.
    with pytest.raises(VersionMismatch):
        await dynamo.benches.record_liveness(
            old, Liveness.OFFLINE, _liveness_entry("rig-1", 1, Liveness.OFFLINE)
        )


async def test_a_lost_liveness_race_reports_the_winner_from_the_failed_condition(
    raw_client: Any, prefix: str
) -> None:
    winner_store = DynamoStore(raw_client, prefix)
    bench = make_bench("rig-1")
    await winner_store.benches.create(bench, entry_for(bench))

    async def win() -> None:
        await winner_store.benches.record_liveness(
            bench, Liveness.ONLINE, _liveness_entry("rig-1", 1, Liveness.ONLINE)
        )

    loser_store = DynamoStore(RaceBeforeTransaction(raw_client, win), prefix)
    with pytest.raises(VersionMismatch) as caught:
        await loser_store.benches.record_liveness(
            bench, Liveness.ONLINE, _liveness_entry("rig-1", 1, Liveness.ONLINE)
        )
    assert caught.value.current == replace(
        bench, recorded_liveness=Liveness.ONLINE, liveness_changes=1
    )
    assert loser_store.calls == {"TransactWriteItems": 1}


async def test_a_heartbeat_to_a_retired_bench_is_one_refused_call(dynamo: DynamoStore) -> None:
    bench = make_bench("rig-1")
    await dynamo.benches.create(bench, entry_for(bench))
    retired = next_version(bench, admin_state=AdminState.RETIRED)
    await dynamo.benches.update(bench, retired, entry_for(retired, "retired"))
    dynamo.calls.clear()
    with pytest.raises(BenchRetired) as caught:
        await dynamo.benches.record_heartbeat("rig-1", Heartbeat(START, "1.0", {}))
    # The stored bench came back with the failed condition: no read after the write.
    assert caught.value.bench == retired
    assert dynamo.calls == {"UpdateItem": 1}
