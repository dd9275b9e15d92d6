"""The event log, milestones and deliveries on DynamoDB: item layouts (the hour partition,
TTL, the sparse indexes' attributes), the settling margin of readers, and items written
before milestones were counted."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from app.store.base import VersionMismatch
from app.store.dynamodb.events import bucket, highest_id, id_ms, lowest_id, ms_of
from app.store.dynamodb.store import DynamoStore
from app.webhooks.domain import Attempt, after_attempt, new_delivery
from tests.conftest import START
from tests.support.factories import (
    add_bench,
    book,
    booking,
    changed,
    entry_for,
    make_bench,
    make_event,
    reservation_entry,
)
from tests.support.no_scan import NoScanClient

RETENTION = timedelta(hours=6)
SETTLE = timedelta(seconds=2)


@pytest.fixture
def store(raw_client: Any, prefix: str) -> DynamoStore:
    return DynamoStore(
        NoScanClient(raw_client), prefix, event_retention=RETENTION, event_settle=SETTLE
    )


async def item(raw_client: Any, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    response = await raw_client.get_item(TableName=table, Key=key, ConsistentRead=True)
    found: dict[str, Any] | None = response.get("Item")
    return found


def test_ids_bound_their_millisecond_and_name_its_hour() -> None:
    event = make_event(seconds=3600 * 10 + 0.25)
    made = id_ms(event.event_id)
    assert made == ms_of(event.at)
    assert lowest_id(made) < event.event_id < highest_id(made)
    assert highest_id(made - 1) < event.event_id < lowest_id(made + 1)
    assert bucket(made) == "2026-11-25T18"


async def test_an_event_item_is_in_its_hour_and_expires_after_the_retention(
    store: DynamoStore, raw_client: Any, prefix: str
) -> None:
    bench = make_bench("rig-1")
    event = make_event("bench.registered", seconds=90, entity_type="bench", entity_id="rig-1")
    await store.benches.create(bench, replace(entry_for(bench), event=event))
    stored = await item(
        raw_client,
        f"{prefix}Events",
        {"bucket": {"S": "2026-11-25T08"}, "event_id": {"S": event.event_id}},
    )
    assert stored is not None
    assert json.loads(stored["body"]["S"]) == event.to_json()
    assert stored["expires_at"] == {"N": str(math.ceil((event.at + RETENTION).timestamp()))}


async def test_readers_stop_the_settling_margin_before_now(store: DynamoStore) -> None:
    bench = make_bench("rig-1")
    event = make_event("bench.registered", seconds=60, entity_type="bench", entity_id="rig-1")
    await store.benches.create(bench, replace(entry_for(bench), event=event))
    # Its transaction may still be committing behind another's: not read yet.
    assert await store.events.read(None, 10, now=event.at + SETTLE / 2) == []
    head = await store.events.head(now=event.at + SETTLE / 2)
    assert head is not None
    [logged] = await store.events.read(None, 10, now=event.at + SETTLE)
    assert logged.event == event
    # A stream that started at the head before it settled gets it once it has.
    assert await store.events.read(head, 10, now=event.at + SETTLE) == [logged]
    # The retention bounds the position, and the log read from its start.
    assert await store.events.read(None, 10, now=event.at + RETENTION) == [logged]
    assert await store.events.read(None, 10, now=event.at + RETENTION + SETTLE) == []


async def test_the_announce_index_follows_the_milestones(
    store: DynamoStore, raw_client: Any, prefix: str
) -> None:
    await add_bench(store)
    reservation = await book(store, booking("rig-1", 0, 2))
    key = {"reservation_id": {"S": reservation.reservation_id}}
    table = f"{prefix}Reservations"

    stored = await item(raw_client, table, key)
    assert stored is not None
    assert stored["announced"] == {"N": "0"}
    assert stored["announce_pk"] == {"S": "DUE"}
    assert stored["announce_at"] == stored["start"]
    await store.reservations.announce(reservation, 1, [])
    stored = await item(raw_client, table, key)
    assert stored is not None and stored["announce_at"] == stored["end"]
    await store.reservations.announce(replace(reservation, announced=1), 2, [])
    stored = await item(raw_client, table, key)
    assert stored is not None and stored["announced"] == {"N": "2"}
    assert "announce_pk" not in stored and "announce_at" not in stored


async def test_a_reservation_written_before_milestones_were_counted_reads_as_none(
    store: DynamoStore, raw_client: Any, prefix: str
) -> None:
    await add_bench(store)
    reservation = await book(store, booking("rig-1", 0, 2))
    await raw_client.update_item(
        TableName=f"{prefix}Reservations",
        Key={"reservation_id": {"S": reservation.reservation_id}},
        UpdateExpression="REMOVE announced",
    )
    assert await store.reservations.get(reservation.reservation_id) == reservation
    # Both conditions take a missing count for 0.
    moved = changed(reservation, purpose="moved on")
    await store.reservations.update(reservation, moved, reservation_entry(moved, "updated"))
    await store.reservations.announce(moved, 1, [])
    with pytest.raises(VersionMismatch):
        await store.reservations.announce(moved, 1, [])
    assert await store.reservations.get(reservation.reservation_id) == replace(moved, announced=1)


async def test_only_open_deliveries_are_in_the_sparse_indexes(
    store: DynamoStore, raw_client: Any, prefix: str
) -> None:
    event = make_event()
    delivery = new_delivery("wh-1", event, START)
    await store.deliveries.add([delivery])
    key = {"webhook_id": {"S": "wh-1"}, "delivery_id": {"S": event.event_id}}
    stored = await item(raw_client, f"{prefix}Deliveries", key)
    assert stored is not None
    assert stored["due_pk"] == {"S": "DUE"}
    assert stored["open_entity"] == {"S": f"wh-1|{event.entity_key}"}

    attempt = Attempt(at=START, status_code=200, latency_ms=3.0, answer="")
    await store.deliveries.update(delivery, after_attempt(delivery, attempt, START))
    stored = await item(raw_client, f"{prefix}Deliveries", key)
    assert stored is not None
    assert {"due_pk", "open_entity", "due_at"}.isdisjoint(stored)
