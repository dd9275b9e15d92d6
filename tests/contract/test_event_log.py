"""The event log in the store port, on every adapter: events are stored with the changes
that raise them (or not at all), read back in commit order from stable positions, and
time-driven milestones are announced once.

A DynamoDB reader stops ``event_settle_ms`` before ``now`` (SQLite needs no such margin),
so every read here passes a ``now`` well after the events it expects.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from app.events.domain import DomainEvent
from app.reservations.domain import ReservationState
from app.settings import Settings
from app.store.base import (
    AlreadyExists,
    ItemNotFound,
    LoggedEvent,
    PositionNotKept,
    Store,
    VersionMismatch,
    WindowTaken,
    Write,
)
from tests.conftest import START
from tests.support.factories import (
    add_bench,
    at,
    book,
    booking,
    changed,
    creation_entries,
    entry_for,
    make_bench,
    make_event,
    make_run,
    next_version,
    reservation_entry,
    with_event,
)

# After every event below (and their settling), within the log's retention.
LATER = START + timedelta(days=2)


async def everything(store: Store, after: str | None = None) -> list[LoggedEvent]:
    return await store.events.read(after, 1000, now=LATER)


def events_of(logged: list[LoggedEvent]) -> list[DomainEvent]:
    return [entry.event for entry in logged]


async def register(store: Store, bench_id: str, seconds: float) -> DomainEvent:
    """A bench created with its event ``seconds`` after START; the event."""
    bench = make_bench(bench_id)
    event = make_event("bench.registered", seconds=seconds, entity_type="bench", entity_id=bench_id)
    await store.benches.create(bench, replace(entry_for(bench), event=event))
    return event


# --- stored with the change --------------------------------------------------------------


async def test_events_stored_with_changes_are_read_back_in_commit_order(store: Store) -> None:
    bench = make_bench("rig-1")
    registered = with_event(entry_for(bench), "bench.registered")
    await store.benches.create(bench, registered)
    renamed = next_version(bench, name="Rig one")
    changed_entry = with_event(entry_for(renamed, "updated"), "bench.changed")
    await store.benches.update(bench, renamed, changed_entry)
    reservation = booking("rig-1", 0, 2)
    created = with_event(reservation_entry(reservation), "reservation.created")
    await store.reservations.create(reservation, created)
    execution, tasks = make_run(reservation.reservation_id, minutes=5)
    entries = creation_entries(execution, tasks)
    entries[0] = with_event(entries[0], "execution.queued")
    await store.executions.apply(
        [Write(None, execution)], [Write(None, task) for task in tasks], entries
    )
    started = make_event(
        "reservation.started", seconds=86_400, entity_id=reservation.reservation_id
    )
    await store.reservations.announce(reservation, 1, [started])

    raised = [registered, changed_entry, created, entries[0]]
    expected = [entry.event for entry in raised if entry.event is not None] + [started]
    logged = await everything(store)
    assert events_of(logged) == expected
    assert [entry.event.event_id for entry in logged] == [event.event_id for event in expected]
    # Positions are stable: read again, the same positions for the same events.
    assert len({entry.position for entry in logged}) == len(logged)
    assert await everything(store) == logged
    # Entries that raise nothing log nothing: the run's task entries added none.
    assert len(logged) == 5


async def test_a_change_that_fails_its_condition_stores_no_event(store: Store) -> None:
    bench = make_bench("rig-1")
    await store.benches.create(bench, with_event(entry_for(bench), "bench.registered"))
    renamed = next_version(bench, name="Rig one")
    await store.benches.update(
        bench, renamed, with_event(entry_for(renamed, "updated"), "bench.changed")
    )
    before = await everything(store)
    assert len(before) == 2

    # A stale copy: VersionMismatch, and its event is not logged.
    stale = next_version(bench, name="Stale")
    with pytest.raises(VersionMismatch):
        await store.benches.update(
            bench, stale, with_event(entry_for(stale, "updated"), "bench.changed")
        )
    # A booking that collides, a bench created twice, a run created twice.
    first = booking("rig-1", 0, 2)
    await store.reservations.create(
        first, with_event(reservation_entry(first), "reservation.created")
    )
    colliding = booking("rig-1", 1, 3, user="bob")
    with pytest.raises(WindowTaken):
        await store.reservations.create(
            colliding, with_event(reservation_entry(colliding), "reservation.created")
        )
    with pytest.raises(AlreadyExists):
        await store.benches.create(bench, with_event(entry_for(bench), "bench.registered"))
    execution, tasks = make_run(first.reservation_id, tasks=1)
    entries = creation_entries(execution, tasks)
    await store.executions.apply(
        [Write(None, execution)], [Write(None, tasks[0])], [entries[0], entries[1]]
    )
    again = [with_event(entries[0], "execution.queued"), entries[1]]
    with pytest.raises(AlreadyExists):
        await store.executions.apply([Write(None, execution)], [Write(None, tasks[0])], again)

    logged = await everything(store)
    assert [entry.event.type for entry in logged] == [
        "bench.registered",
        "bench.changed",
        "reservation.created",
    ]
    assert logged[:2] == before


# --- positions ---------------------------------------------------------------------------


async def test_reading_after_a_position_gives_the_rest(store: Store) -> None:
    # Over several hours: a DynamoDB reader goes from one hour's partition to the next.
    seconds = [0, 1800, 7200, 18_000, 18_001, 18_002]
    events = [await register(store, f"rig-{n}", s) for n, s in enumerate(seconds)]

    logged = await everything(store)
    assert events_of(logged) == events
    for index, entry in enumerate(logged):
        assert await everything(store, entry.position) == logged[index + 1 :]

    # Page by page, two at a time: the same events, once each.
    pages: list[list[LoggedEvent]] = []
    position: str | None = None
    while True:
        page = await store.events.read(position, 2, now=LATER)
        if not page:
            break
        pages.append(page)
        position = page[-1].position
    assert [len(page) for page in pages] == [2, 2, 2]
    assert [entry for page in pages for entry in page] == logged


async def test_positions_past_the_retention_or_never_given_are_refused(
    store: Store, settings: Settings
) -> None:
    for n in range(3):
        await register(store, f"rig-{n}", n)
    logged = await everything(store)
    for garbage in ("garbage", "", "-1", "01234567-89ab-7def-8123-456789abcdef"):
        with pytest.raises(PositionNotKept):
            await store.events.read(garbage, 10, now=LATER)

    # A week and a day on, the events are past the retention: reading after any but the
    # newest could skip some, so the reader is told (whether or not they are deleted yet).
    beyond = START + settings.event_retention + timedelta(days=1)
    await store.purge_expired(beyond)
    for entry in logged[:-1]:
        with pytest.raises(PositionNotKept):
            await store.events.read(entry.position, 10, now=beyond)
    assert await store.events.read(None, 10, now=beyond) == []


async def test_head_then_read_gives_only_newer_events(store: Store) -> None:
    empty_head = await store.events.head(now=START - timedelta(hours=1))
    old = await register(store, "rig-1", 0)
    head = await store.events.head(now=START + timedelta(hours=1))
    new = await register(store, "rig-2", 7200)
    newer = await register(store, "rig-3", 7201)

    assert events_of(await everything(store, head)) == [new, newer]
    assert events_of(await everything(store, empty_head)) == [old, new, newer]


# --- announcing milestones ---------------------------------------------------------------


async def test_announcing_is_once_whoever_races(store: Store) -> None:
    await add_bench(store)
    reservation = await book(store, booking("rig-1", 0, 2))
    read = await store.reservations.get(reservation.reservation_id)
    assert read is not None and read.announced == 0
    mine = [make_event("reservation.started", seconds=86_400, entity_id=read.reservation_id)]
    theirs = [make_event("reservation.started", seconds=86_400, entity_id=read.reservation_id)]

    outcomes = await asyncio.gather(
        store.reservations.announce(read, 1, mine),
        store.reservations.announce(read, 1, theirs),
        return_exceptions=True,
    )
    winners = [n for n, outcome in enumerate(outcomes) if outcome is None]
    assert len(winners) == 1, outcomes
    lost = outcomes[1 - winners[0]]
    assert isinstance(lost, VersionMismatch)
    assert lost.current.announced == 1 and lost.current.version == read.version

    assert events_of(await everything(store)) == [mine, theirs][winners[0]]
    stored = await store.reservations.get(read.reservation_id)
    # Not configuration: neither the version nor updated_at moved.
    assert stored == replace(read, announced=1)


async def test_an_update_from_a_copy_read_before_an_announcement_is_refused(
    store: Store,
) -> None:
    await add_bench(store)
    reservation = await book(store, booking("rig-1", 0, 2))
    copy = await store.reservations.get(reservation.reservation_id)
    assert copy is not None
    started = make_event("reservation.started", seconds=86_400, entity_id=copy.reservation_id)
    await store.reservations.announce(copy, 1, [started])

    for update in (changed(copy, purpose="other"), changed(copy, start=at(1), end=at(3))):
        with pytest.raises(VersionMismatch) as caught:
            await store.reservations.update(copy, update, reservation_entry(update, "updated"))
        assert caught.value.current == replace(copy, announced=1)
    with pytest.raises(VersionMismatch):
        await store.reservations.announce(copy, 2, [])

    fresh = await store.reservations.get(copy.reservation_id)
    assert fresh is not None
    updated = changed(fresh, purpose="other")
    await store.reservations.update(fresh, updated, reservation_entry(updated, "updated"))
    assert await store.reservations.get(copy.reservation_id) == updated
    assert updated.announced == 1

    with pytest.raises(ItemNotFound):
        await store.reservations.announce(booking("rig-1", 5, 6), 1, [])
    assert events_of(await everything(store)) == [started]


async def test_unannounced_reservations_follow_their_milestones(store: Store) -> None:
    await add_bench(store)
    first = await book(store, booking("rig-1", 0, 2))
    second = await book(store, booking("rig-1", 3, 5))
    find = store.reservations.find_unannounced

    assert await find(at(-1), 10) == []
    assert await find(at(0), 10) == [first]
    assert await find(at(3), 10) == [first, second]
    assert await find(at(3), 1) == [first]

    await store.reservations.announce(first, 1, [])
    started = replace(first, announced=1)
    # Started: its end is the next milestone, so it is due again only then.
    assert await find(at(1), 10) == []
    assert await find(at(2), 10) == [started]
    assert await find(at(3), 10) == [started, second]
    await store.reservations.announce(started, 2, [])
    assert await find(at(10), 10) == [second]

    # Moved later, it is due at its new start; cancelled, never.
    moved = changed(second, start=at(6), end=at(7))
    await store.reservations.update(second, moved, reservation_entry(moved, "updated"))
    assert await find(at(5), 10) == []
    assert await find(at(6), 10) == [moved]
    cancelled = changed(moved, state=ReservationState.CANCELLED)
    await store.reservations.update(moved, cancelled, reservation_entry(cancelled, "cancelled"))
    assert await find(at(10), 10) == []
