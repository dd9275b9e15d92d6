"""Scheduling on DynamoDB: the holders' ledger items (layout, pruning, races, the
ConditionCheck of a ledger a check reads and leaves), the new reservation attributes and
what items written before them read as, the sparse indexes of the advancing and the
started reservations, and a move to another bench within the transaction limit."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from app.quotas.domain import QuotaExceeded, QuotaKind
from app.reservations.domain import LONGEST_WINDOW, Reservation, ReservationState
from app.store.dynamodb.codec import Item
from app.store.dynamodb.reservation_codec import encode_reservation
from app.store.dynamodb.store import DynamoStore
from app.timeutil import to_iso
from tests.contract.dynamodb.support import (
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
    make_quota,
    quota_check,
    reservation_entry,
)
from tests.support.no_scan import NoScanClient


async def ledger(raw_client: Any, prefix: str, holder: str) -> Item | None:
    response = await raw_client.get_item(
        TableName=f"{prefix}Ledgers", Key={"holder": {"S": holder}}, ConsistentRead=True
    )
    item: Item | None = response.get("Item")
    return item


def window(reservation: Reservation) -> dict[str, Any]:
    return {
        "L": [
            {"S": reservation.reservation_id},
            {"S": to_iso(reservation.start)},
            {"S": to_iso(reservation.end)},
        ]
    }


async def test_ledgers_list_the_holding_windows_of_each_user_and_team(
    dynamo: DynamoStore, raw_client: Any, prefix: str
) -> None:
    await add_bench(dynamo)
    late = await book(dynamo, replace(booking("rig-1", 5, 6), team="red"))
    early = await book(dynamo, booking("rig-1", 0, 2))
    bobs = await book(dynamo, replace(booking("rig-1", 3, 4, user="bob"), team="red"))

    assert await ledger(raw_client, prefix, "user#alice") == {
        "holder": {"S": "user#alice"},
        "windows": {"L": [window(early), window(late)]},  # by start
        "version": {"N": "2"},
    }
    red = await ledger(raw_client, prefix, "team#red")
    assert red is not None and red["windows"] == {"L": [window(bobs), window(late)]}

    # A cancel takes the window out of both; a completion leaves it; the items stay.
    cancelled = changed(late, state=ReservationState.CANCELLED)
    await dynamo.reservations.update(late, cancelled, reservation_entry(cancelled, "cancelled"))
    completed = changed(early, state=ReservationState.COMPLETED)
    await dynamo.reservations.update(early, completed, reservation_entry(completed, "completed"))
    alice = await ledger(raw_client, prefix, "user#alice")
    assert alice is not None and alice["windows"] == {"L": [window(early)]}
    assert alice["version"] == {"N": "3"}
    red = await ledger(raw_client, prefix, "team#red")
    assert red is not None and red["windows"] == {"L": [window(bobs)]}


async def test_a_rewrite_drops_windows_long_over_but_not_what_a_running_one_overlaps(
    dynamo: DynamoStore, raw_client: Any, prefix: str
) -> None:
    await add_bench(dynamo, "rig-1")
    await add_bench(dynamo, "rig-2")
    now = 24 * 20  # hours after at(0)
    old = await book(dynamo, booking("rig-1", 0, 1))
    # Twelve days, still running at ``now``; and a window nine days before ``now``.
    long = await book(dynamo, booking("rig-2", now - 24 * 10, now + 24 * 2))
    overlapped = await book(dynamo, booking("rig-1", now - 24 * 9, now - 24 * 9 + 1))

    # Written at ``now``: "old" ended more than eight days before, and is dropped; the one
    # nine days back stays, since the running one started before it (and may be extended).
    later = replace(booking("rig-1", now + 1, now + 2), updated_at=at(now))
    await dynamo.reservations.create(later, reservation_entry(later))
    alice = await ledger(raw_client, prefix, "user#alice")
    assert alice is not None
    assert alice["windows"] == {"L": [window(long), window(overlapped), window(later)]}
    # Both ended more than eight days before ``now``.
    assert old.end < overlapped.end < at(now) - timedelta(days=8)


async def test_a_lost_ledger_race_is_read_again_and_decided_on_the_winner(
    raw_client: Any, prefix: str
) -> None:
    winner_store = DynamoStore(raw_client, prefix)
    await add_bench(winner_store, "rig-1")
    await add_bench(winner_store, "rig-2")
    quota = make_quota(concurrent=1)
    theirs = booking("rig-2", 1, 3)

    async def win() -> None:
        await book(winner_store, theirs)

    loser_store = DynamoStore(RaceBeforeTransaction(raw_client, win), prefix)
    mine = booking("rig-1", 0, 2)
    with pytest.raises(QuotaExceeded):
        await loser_store.reservations.create(
            mine, reservation_entry(mine), quota=quota_check(mine, quota)
        )
    # Another bench, so no calendar day was shared: the ledger's version decided.
    assert loser_store.calls == {"BatchGetItem": 2, "TransactWriteItems": 1}
    assert await winner_store.reservations.get(mine.reservation_id) is None


async def test_a_checked_ledger_the_write_leaves_is_a_condition_check(
    raw_client: Any, prefix: str
) -> None:
    recorder = RecordingClient(NoScanClient(raw_client))
    store = DynamoStore(recorder, prefix)
    await add_bench(store, "rig-1")
    await add_bench(store, "rig-2")
    quota = make_quota(concurrent=1)
    mine = await book(store, booking("rig-1", 0, 2))
    there = changed(mine, bench_id="rig-2")
    recorder.requests.clear()
    store.calls.clear()
    await store.reservations.update(
        mine, there, reservation_entry(there, "advanced"), quota_check(there, quota)
    )
    assert store.calls == {"BatchGetItem": 1, "TransactWriteItems": 1}
    [actions] = transactions(recorder)
    kinds = [
        (kind, body["TableName"].removeprefix(prefix)) for a in actions for kind, body in a.items()
    ]
    assert kinds == [
        ("Put", "Reservations"),
        ("ConditionCheck", "Benches"),
        ("Put", "BenchCalendar"),
        ("Put", "BenchCalendar"),
        ("ConditionCheck", "Ledgers"),
        ("Put", "History"),
    ]
    assert await transaction_write_units(raw_client, actions) == 12


async def test_quota_checks_of_team_and_user_read_both_ledgers_with_the_days(
    raw_client: Any, prefix: str
) -> None:
    recorder = RecordingClient(NoScanClient(raw_client))
    store = DynamoStore(recorder, prefix)
    await add_bench(store)
    store.capacity.clear()
    store.calls.clear()
    recorder.requests.clear()
    mine = replace(booking("rig-1", 0, 2), team="red")
    team = make_quota("red", QuotaKind.TEAM, concurrent=2)
    await store.reservations.create(
        mine, reservation_entry(mine), quota=quota_check(mine, make_quota(concurrent=1), team)
    )
    assert store.calls == {"BatchGetItem": 1, "TransactWriteItems": 1}
    assert store.capacity[(f"{prefix}Ledgers", "BatchGetItem")] == 2.0
    [actions] = transactions(recorder)
    # bench check, reservation, day, two ledgers, history: 12 write units.
    assert await transaction_write_units(raw_client, actions) == 12


async def test_the_scheduling_attributes_and_what_older_items_read_as(
    dynamo: DynamoStore, raw_client: Any, prefix: str
) -> None:
    await add_bench(dynamo)
    mine = replace(
        booking("rig-1", 0, 1),
        advance=True,
        priority=70,
        not_before=at(-1),
        capabilities=frozenset({"usb", "can-bus"}),
        team="red",
        checked_in_at=at(0.1),
    )
    await book(dynamo, mine)
    stored = (
        await raw_client.get_item(
            TableName=f"{prefix}Reservations",
            Key={"reservation_id": {"S": mine.reservation_id}},
            ConsistentRead=True,
        )
    )["Item"]
    assert stored["advance"] == {"BOOL": True} and stored["advance_pk"] == {"S": "ADVANCE"}
    assert stored["capabilities"] == {"SS": ["can-bus", "usb"]}
    assert stored["not_before"] == {"S": to_iso(at(-1))}
    assert "idle_warned_at" not in stored  # absent, not NULL
    # Not advancing once cancelled: out of the sparse indexes.
    cancelled = changed(mine, state=ReservationState.CANCELLED)
    await dynamo.reservations.update(mine, cancelled, reservation_entry(cancelled, "cancelled"))
    stored = (
        await raw_client.get_item(
            TableName=f"{prefix}Reservations",
            Key={"reservation_id": {"S": mine.reservation_id}},
            ConsistentRead=True,
        )
    )["Item"]
    assert "advance_pk" not in stored and "open_pk" not in stored

    # An item as written before scheduling: none of the new attributes.
    older = booking("rig-1", 2, 3)
    item = encode_reservation(older)
    for name in ("advance", "priority", "announced"):
        del item[name]
    await raw_client.put_item(TableName=f"{prefix}Reservations", Item=item)
    assert await dynamo.reservations.get(older.reservation_id) == older
    # It has no ledger entry either: cancelling it is fine all the same.
    gone = changed(older, state=ReservationState.CANCELLED)
    await dynamo.reservations.update(older, gone, reservation_entry(gone, "cancelled"))
    assert await dynamo.reservations.get(older.reservation_id) == gone


async def test_advancing_and_started_read_sparse_indexes_and_confirm_by_key(
    raw_client: Any, prefix: str
) -> None:
    recorder = RecordingClient(NoScanClient(raw_client))
    store = DynamoStore(recorder, prefix)
    await add_bench(store)
    ahead = await book(store, replace(booking("rig-1", 5, 6), advance=True))
    started = await book(store, booking("rig-1", 0, 1))
    recorder.requests.clear()

    assert await store.reservations.find_advancing(at(0), 10) == [ahead]
    assert await store.reservations.find_started(at(0), at(1), 10) == [started]
    queries = [params for name, params in recorder.requests if name == "query"]
    assert [q["IndexName"] for q in queries] == ["advancing_idx", "booked_starts_idx"]
    assert [name for name, _ in recorder.requests] == ["query", "batch_get_item"] * 2


async def test_moving_the_longest_window_to_another_bench_is_one_transaction(
    raw_client: Any, prefix: str
) -> None:
    recorder = RecordingClient(NoScanClient(raw_client))
    store = DynamoStore(recorder, prefix)
    await add_bench(store, "rig-1")
    await add_bench(store, "rig-2")
    hours = LONGEST_WINDOW.total_seconds() / 3600
    mine = await book(store, replace(booking("rig-1", 24 * 40, 24 * 40 + hours), team="red"))
    moved = changed(mine, bench_id="rig-2", start=at(24 * 50), end=at(24 * 50 + hours))
    recorder.requests.clear()
    await store.reservations.update(mine, moved, reservation_entry(moved, "advanced"))
    [actions] = transactions(recorder)
    # reservation, bench check, 32 days freed and 32 taken, two ledgers, history: of 100.
    assert len(actions) == 1 + 1 + 32 + 32 + 2 + 1
    assert await store.reservations.get(mine.reservation_id) == moved
