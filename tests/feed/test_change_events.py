"""The change feed on both stores: which events, with which ids and images."""

from __future__ import annotations

import json

import pytest

from app.benches.domain import BenchChanges
from app.clock import ManualClock
from app.errors import Conflict
from app.feed.events import ChangeEvent
from app.feed.factory import FeedSource
from app.store.base import Store
from tests.feed.conftest import (
    ADMIN,
    ALICE,
    benches,
    booking,
    entity_events,
    new_bench,
    read_all,
    reservations,
)


async def test_bench_create_and_update_are_insert_then_modify(
    feed_store: Store, source: FeedSource, clock: ManualClock
) -> None:
    service = benches(feed_store, clock)
    await service.create(new_bench("rig-1", "can-bus"), ADMIN)
    await service.update("rig-1", BenchChanges(name="Rig one"), None, ADMIN)

    events, _ = await read_all(source.feed)

    created, updated = entity_events(events, "benches")
    assert created.kind == "insert"
    assert created.key["bench_id"] == "rig-1"
    assert created.old_image is None
    assert created.new_image is not None
    assert created.new_image["name"] == "Bench rig-1"
    assert created.new_image["version"] == 1
    assert created.new_image["admin_state"] == "active"
    assert updated.kind == "modify"
    assert updated.key == created.key
    assert updated.old_image == created.new_image
    assert updated.new_image is not None
    assert (updated.new_image["name"], updated.new_image["version"]) == ("Rig one", 2)
    assert updated.seq > created.seq
    # Every change carries its history entry, in the same transaction.
    history = entity_events(events, "history")
    assert [(e.kind, e.new_image and e.new_image["action"]) for e in history] == [
        ("insert", "created"),
        ("insert", "updated"),
    ]


async def test_reservation_book_and_cancel(
    feed_store: Store, source: FeedSource, clock: ManualClock
) -> None:
    await benches(feed_store, clock).create(new_bench("rig-1"), ADMIN)
    service = reservations(feed_store, clock)
    booked, _ = await service.book(booking("rig-1", 2, 3), ALICE, None)
    await service.cancel(booked.reservation_id, None, ALICE)

    events, _ = await read_all(source.feed)

    insert, cancel = entity_events(events, "reservations")
    assert insert.kind == "insert"
    assert insert.key == {"reservation_id": booked.reservation_id}
    assert insert.new_image is not None
    assert insert.new_image["user_id"] == "alice"
    assert insert.new_image["bench_id"] == "rig-1"
    assert insert.new_image["state"] == "booked"
    assert insert.new_image["start"] == "2026-11-25T10:00:00.000000Z"
    assert cancel.kind == "modify"
    assert cancel.old_image == insert.new_image
    assert cancel.new_image is not None
    assert cancel.new_image["state"] == "cancelled"


async def test_event_ids_are_stable_and_unique(
    feed_store: Store, source: FeedSource, clock: ManualClock
) -> None:
    service = benches(feed_store, clock)
    for number in range(3):
        await service.create(new_bench(f"rig-{number}", "arm64"), ADMIN)

    first, _ = await read_all(source.feed)
    again, _ = await read_all(source.feed)

    assert [event.event_id for event in first] == [event.event_id for event in again]
    assert len({event.event_id for event in first}) == len(first)
    assert first == again


async def test_reading_in_small_batches_resumes_exactly_after_the_position(
    feed_store: Store, source: FeedSource, clock: ManualClock
) -> None:
    service = benches(feed_store, clock)
    for number in range(4):
        await service.create(new_bench(f"rig-{number}"), ADMIN)
    everything, end = await read_all(source.feed)

    pieces, piece_end = await read_all(source.feed, limit=3)

    assert sorted(e.event_id for e in pieces) == sorted(e.event_id for e in everything)
    assert len(pieces) == len(everything)
    # Nothing after the end, and new changes come after it.
    assert (await source.feed.read(piece_end, 10)).events == []
    await service.create(new_bench("rig-late"), ADMIN)
    later, _ = await read_all(source.feed, piece_end)
    assert [e.key["bench_id"] for e in entity_events(later, "benches")] == ["rig-late"]
    assert end is not None


async def test_a_refused_write_makes_no_event(
    feed_store: Store, source: FeedSource, clock: ManualClock
) -> None:
    service = benches(feed_store, clock)
    await service.create(new_bench("rig-1"), ADMIN)
    _, position = await read_all(source.feed)

    with pytest.raises(Conflict):
        await service.create(new_bench("rig-1"), ADMIN)

    assert (await source.feed.read(position, 10)).events == []


async def test_events_are_plain_json_and_round_trip(
    feed_store: Store, source: FeedSource, clock: ManualClock
) -> None:
    await benches(feed_store, clock).create(new_bench("rig-1", "b", "a"), ADMIN)
    events, _ = await read_all(source.feed)

    for event in events:
        text = json.dumps(event.to_json())  # no Decimal, set or bytes left
        assert ChangeEvent.from_json(json.loads(text)) == event
        assert event.at.utcoffset() is not None
