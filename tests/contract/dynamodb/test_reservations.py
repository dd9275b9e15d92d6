"""Reservations and idempotency keys on DynamoDB: round trips and capacity, calendar and
key items, calendar races retried, and the reservation indexes.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.benches.domain import AdminState
from app.reservations.domain import LONGEST_WINDOW, ReservationState
from app.store.base import (
    BenchNotBookable,
    IdempotencyKeyTaken,
    ReservationQuery,
    StoreUnavailable,
    WindowTaken,
    reservation_page_key,
)
from app.store.dynamodb.store import DynamoStore
from app.timeutil import to_iso
from tests.contract.dynamodb.support import (
    RaceBeforeEveryTransaction,
    RaceBeforeTransaction,
    RecordingClient,
    transaction_write_units,
    transactions,
)
from tests.support.factories import (
    add_bench,
    at,
    book,
    booking,
    changed,
    entry_for,
    key_record,
    next_version,
    reservation_entry,
)
from tests.support.no_scan import NoScanClient


async def holding(store: DynamoStore, bench_id: str = "rig-1") -> list[str]:
    page = await store.reservations.find(
        ReservationQuery(bench_id=bench_id, holding_only=True), 100, None
    )
    return [r.reservation_id for r in page.items]


async def test_round_trips_and_capacity_per_booking_cancel_and_move(
    raw_client: Any, prefix: str
) -> None:
    recorder = RecordingClient(NoScanClient(raw_client))
    store = DynamoStore(recorder, prefix)
    await add_bench(store)
    calendar, benches = f"{prefix}BenchCalendar", f"{prefix}Benches"
    keys, reservations = f"{prefix}Idempotency", f"{prefix}Reservations"
    ledgers = f"{prefix}Ledgers"

    def reset() -> None:
        store.calls.clear()
        store.capacity.clear()
        recorder.requests.clear()

    # Booking one day, with a key: one consistent read of day + bench + key + the user's
    # ledger, one transaction.
    reset()
    mine = booking("rig-1", 0, 2)
    await store.reservations.create(
        mine, reservation_entry(mine), key_record("alice\nop\nk1", mine.reservation_id)
    )
    assert store.calls == {"BatchGetItem": 1, "TransactWriteItems": 1}
    # Strongly consistent reads of items up to 4 KB: 1 read unit each, found or not.
    assert store.capacity == {
        (calendar, "BatchGetItem"): 1.0,
        (benches, "BatchGetItem"): 1.0,
        (keys, "BatchGetItem"): 1.0,
        (ledgers, "BatchGetItem"): 1.0,
    }
    [actions] = transactions(recorder)
    assert [next(iter(a)) for a in actions] == ["ConditionCheck"] + ["Put"] * 5
    # bench check, reservation, one day, ledger, history, key: six items under 1 KB, 2 units
    # each.
    assert await transaction_write_units(raw_client, actions) == 12

    # A three-day window without a key: three days, the bench and the ledger read, seven
    # actions.
    reset()
    long = booking("rig-1", 24, 72)  # Nov 27 08:00 to Nov 29 08:00 touches 27, 28, 29
    await book(store, long)
    assert store.calls == {"BatchGetItem": 1, "TransactWriteItems": 1}
    assert store.capacity == {
        (calendar, "BatchGetItem"): 3.0,
        (benches, "BatchGetItem"): 1.0,
        (ledgers, "BatchGetItem"): 1.0,
    }
    [actions] = transactions(recorder)
    assert len(actions) == 7
    assert await transaction_write_units(raw_client, actions) == 14

    # The longest window touches 32 days: still one transaction, 36 actions of 100.
    reset()
    longest = booking("rig-1", 24 * 40, 24 * 40 + LONGEST_WINDOW.total_seconds() / 3600)
    await book(store, longest)
    assert store.calls == {"BatchGetItem": 1, "TransactWriteItems": 1}
    assert len(transactions(recorder)[0]) == 1 + 1 + 32 + 1 + 1

    # Cancelling frees its days and its room in the ledger: read them, then reservation +
    # days + ledger + history.
    reset()
    cancelled = changed(mine, state=ReservationState.CANCELLED)
    await store.reservations.update(mine, cancelled, reservation_entry(cancelled, "cancelled"))
    assert store.calls == {"BatchGetItem": 1, "TransactWriteItems": 1}
    assert store.capacity == {(calendar, "BatchGetItem"): 1.0, (ledgers, "BatchGetItem"): 1.0}
    [actions] = transactions(recorder)
    assert [next(iter(a)) for a in actions] == ["Put"] * 4
    assert await transaction_write_units(raw_client, actions) == 8

    # Moving to another day: both days and the reservation (for its version) are read.
    reset()
    moved = changed(long, start=at(96), end=at(97))  # Nov 30
    await store.reservations.update(long, moved, reservation_entry(moved, "updated"))
    assert store.calls == {"BatchGetItem": 1, "TransactWriteItems": 1}
    assert store.capacity == {
        (calendar, "BatchGetItem"): 4.0,
        (reservations, "BatchGetItem"): 1.0,
        (ledgers, "BatchGetItem"): 1.0,
    }
    [actions] = transactions(recorder)
    # reservation, three days freed and one taken, the ledger, history
    assert len(actions) == 1 + 4 + 1 + 1
    assert await transaction_write_units(raw_client, actions) == 14

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
    long = await book(dynamo, booking("rig-1", 12, 40))  # Nov 26 20:00 to Nov 28 00:00

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
    mine = booking("rig-1", 0, 1)
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
    theirs = booking("rig-1", 1, 3, user="bob")

    async def win() -> None:
        await book(winner_store, theirs)

    loser_store = DynamoStore(RaceBeforeTransaction(raw_client, win), prefix)
    mine = booking("rig-1", 0, 2)
    with pytest.raises(WindowTaken) as caught:
        await book(loser_store, mine)

    assert caught.value.conflicts == [theirs.slot]
    # Read, lose the transaction on the day's version, read again, and decide: taken.
    assert loser_store.calls == {"BatchGetItem": 2, "TransactWriteItems": 1}
    assert await winner_store.reservations.get(mine.reservation_id) is None
    assert (
        await winner_store.history.find(
            "reservation", mine.reservation_id, 5, None, now=datetime.now(UTC)
        )
    ).items == []
    assert await holding(winner_store) == [theirs.reservation_id]


async def test_a_lost_race_for_another_hour_of_the_day_is_retried_and_books(
    raw_client: Any, prefix: str
) -> None:
    winner_store = DynamoStore(raw_client, prefix)
    await add_bench(winner_store)
    theirs = booking("rig-1", 4, 5, user="bob")

    async def win() -> None:
        await book(winner_store, theirs)

    loser_store = DynamoStore(RaceBeforeTransaction(raw_client, win), prefix)
    mine = await book(loser_store, booking("rig-1", 0, 2))

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
        await book(winner_store, booking("rig-1", 3 + round_ / 10, 3.1 + round_ / 10, user="bob"))

    loser_store = DynamoStore(RaceBeforeEveryTransaction(raw_client, win), prefix)
    mine = booking("rig-1", 0, 2)
    with pytest.raises(StoreUnavailable):
        await book(loser_store, mine)

    assert loser_store.calls == {"BatchGetItem": 10, "TransactWriteItems": 10}
    assert await winner_store.reservations.get(mine.reservation_id) is None
    assert len(await holding(winner_store)) == 10


async def test_one_holders_racing_bookings_take_turns_and_each_commits_at_once(
    raw_client: Any, prefix: str
) -> None:
    """A CI account booking many benches at once: each booking rewrites the account's
    ledger under a version condition, so racing, they cancelled each other's
    transactions round after round (and some gave up as unavailable). In one process
    they take turns: every booking lands, each with one transaction and no retry."""
    recorder = RecordingClient(NoScanClient(raw_client))
    store = DynamoStore(recorder, prefix)
    benches = [f"rig-{n}" for n in range(16)]
    for bench_id in benches:
        await add_bench(store, bench_id)
    wanted = [booking(bench_id, 1, 2, user="ci-pipeline") for bench_id in benches]
    recorder.requests.clear()

    await asyncio.gather(*(book(store, reservation) for reservation in wanted))

    held = [await holding(store, bench_id) for bench_id in benches]
    assert held == [[reservation.reservation_id] for reservation in wanted]
    assert len(transactions(recorder)) == len(wanted)


async def test_a_key_taken_meanwhile_comes_back_from_the_failed_condition(
    raw_client: Any, prefix: str
) -> None:
    winner_store = DynamoStore(raw_client, prefix)
    await add_bench(winner_store)
    first = booking("rig-1", 5, 6)
    first_record = key_record("alice\nop\nk1", first.reservation_id)

    async def win() -> None:
        await winner_store.reservations.create(first, reservation_entry(first), first_record)

    loser_store = DynamoStore(RaceBeforeTransaction(raw_client, win), prefix)
    again = booking("rig-1", 0, 1)
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
        await book(loser_store, booking("rig-1", 0, 1))

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
    a = await book(store, booking("rig-1", 0, 1))
    b = await book(store, booking("rig-1", 2, 3, user="bob"))
    c = await book(store, booking("rig-2", 4, 5))
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
