"""Reservations and idempotency keys in the store port: the same tests on every adapter."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from app.benches.domain import AdminState
from app.reservations.domain import LONGEST_WINDOW, Reservation, ReservationState
from app.store.base import (
    BenchNotBookable,
    IdempotencyKeyTaken,
    ItemNotFound,
    ReservationQuery,
    Store,
    VersionMismatch,
    WindowTaken,
)
from tests.conftest import START
from tests.support.factories import (
    add_bench,
    at,
    book,
    booking,
    changed,
    entry_for,
    key_record,
    make_bench,
    next_version,
    reservation_entry,
)


async def calendar(store: Store, bench_id: str = "rig-1") -> list[tuple[datetime, datetime]]:
    page = await store.reservations.find(
        ReservationQuery(bench_id=bench_id, holding_only=True), 500, None
    )
    return [(r.start, r.end) for r in page.items]


async def test_book_then_get(store: Store) -> None:
    await add_bench(store)
    reservation = await book(store, booking("rig-1", 0, 2))
    assert await store.reservations.get(reservation.reservation_id) == reservation
    assert await store.reservations.get("nope") is None
    history = await store.history.find(
        "reservation", reservation.reservation_id, 10, None, now=datetime.now(UTC)
    )
    assert history.items == [reservation_entry(reservation)]


@pytest.mark.parametrize(
    ("start", "end"),
    [(1, 3), (0, 2), (-1, 1), (0.5, 1.5), (-5, 10), (1.999, 2.5)],
)
async def test_overlap_is_refused_with_the_conflicting_slot(
    store: Store, start: float, end: float
) -> None:
    await add_bench(store)
    first = await book(store, booking("rig-1", 0, 2))
    with pytest.raises(WindowTaken) as caught:
        await book(store, booking("rig-1", start, end, user="bob"))
    assert [slot.reservation_id for slot in caught.value.conflicts] == [first.reservation_id]
    assert caught.value.conflicts[0].window == first.window
    assert await calendar(store) == [(at(0), at(2))]


async def test_half_open_windows_touch_without_conflict(store: Store) -> None:
    await add_bench(store)
    await book(store, booking("rig-1", 2, 4))
    await book(store, booking("rig-1", 0, 2))
    await book(store, booking("rig-1", 4, 6))
    assert await calendar(store) == [(at(0), at(2)), (at(2), at(4)), (at(4), at(6))]


async def test_multi_day_windows_conflict_on_any_day(store: Store) -> None:
    await add_bench(store)
    long = await book(store, booking("rig-1", 0, 72))  # three days
    with pytest.raises(WindowTaken) as caught:
        await book(store, booking("rig-1", 50, 51))
    assert [s.reservation_id for s in caught.value.conflicts] == [long.reservation_id]
    await book(store, booking("rig-1", 72, 73))  # right after it


async def test_the_longest_window_is_found_from_its_last_hour(store: Store) -> None:
    # Reads bound a reservation's start by LONGEST_WINDOW before the range asked about:
    # one of exactly that length is still seen, and still refuses its last hour.
    await add_bench(store)
    hours = LONGEST_WINDOW / timedelta(hours=1)
    longest = await book(store, booking("rig-1", 0, hours))
    with pytest.raises(WindowTaken) as caught:
        await book(store, booking("rig-1", hours - 1, hours + 1))
    assert [s.reservation_id for s in caught.value.conflicts] == [longest.reservation_id]
    page = await store.reservations.find(
        ReservationQuery(bench_id="rig-1", ends_after=at(hours - 1), starts_before=at(hours)),
        10,
        None,
    )
    assert [r.reservation_id for r in page.items] == [longest.reservation_id]


async def test_every_conflict_is_reported(store: Store) -> None:
    await add_bench(store)
    a = await book(store, booking("rig-1", 0, 1))
    b = await book(store, booking("rig-1", 30, 31))  # next day
    with pytest.raises(WindowTaken) as caught:
        await book(store, booking("rig-1", 0.5, 30.5))
    assert {s.reservation_id for s in caught.value.conflicts} == {
        a.reservation_id,
        b.reservation_id,
    }


async def test_other_benches_do_not_conflict(store: Store) -> None:
    await add_bench(store, "rig-1")
    await add_bench(store, "rig-2")
    await book(store, booking("rig-1", 0, 2))
    await book(store, booking("rig-2", 0, 2))
    assert await calendar(store, "rig-2") == [(at(0), at(2))]


async def test_unknown_or_inactive_bench_is_not_bookable(store: Store) -> None:
    with pytest.raises(BenchNotBookable) as missing:
        await book(store, booking("ghost", 0, 1))
    assert missing.value.bench is None
    await add_bench(store)
    bench = await store.benches.get("rig-1")
    assert bench is not None
    paused = next_version(bench, admin_state=AdminState.MAINTENANCE)
    await store.benches.update(bench, paused, entry_for(paused, "updated"))
    with pytest.raises(BenchNotBookable) as inactive:
        await book(store, booking("rig-1", 0, 1))
    assert inactive.value.bench is not None
    assert inactive.value.bench.admin_state is AdminState.MAINTENANCE
    assert await calendar(store) == []


async def test_cancel_frees_the_window_at_once(store: Store) -> None:
    await add_bench(store)
    first = await book(store, booking("rig-1", 0, 2))
    cancelled = changed(first, state=ReservationState.CANCELLED)
    await store.reservations.update(first, cancelled, reservation_entry(cancelled, "cancelled"))
    assert await store.reservations.get(first.reservation_id) == cancelled
    await book(store, booking("rig-1", 0, 2, user="bob"))
    assert await calendar(store) == [(at(0), at(2))]


async def test_release_frees_the_rest_of_the_window(store: Store) -> None:
    await add_bench(store)
    first = await book(store, booking("rig-1", 0, 4))
    released = changed(first, state=ReservationState.RELEASED, end=at(1))
    await store.reservations.update(first, released, reservation_entry(released, "released"))
    await book(store, booking("rig-1", 1, 4, user="bob"))
    assert await calendar(store) == [(at(1), at(4))]


async def test_move_is_checked_and_a_collision_keeps_the_old_window(store: Store) -> None:
    await add_bench(store)
    mine = await book(store, booking("rig-1", 0, 2))
    theirs = await book(store, booking("rig-1", 4, 6, user="bob"))
    collide = changed(mine, end=at(5))
    with pytest.raises(WindowTaken) as caught:
        await store.reservations.update(mine, collide, reservation_entry(collide, "updated"))
    assert [s.reservation_id for s in caught.value.conflicts] == [theirs.reservation_id]
    assert await store.reservations.get(mine.reservation_id) == mine
    assert await calendar(store) == [(at(0), at(2)), (at(4), at(6))]

    # Growing into its own window, and moving to another day, are fine.
    grown = changed(mine, end=at(4))
    await store.reservations.update(mine, grown, reservation_entry(grown, "updated"))
    moved = changed(grown, start=at(30), end=at(33))
    await store.reservations.update(grown, moved, reservation_entry(moved, "updated"))
    assert await calendar(store) == [(at(4), at(6)), (at(30), at(33))]
    await book(store, booking("rig-1", 0, 4, user="carol"))  # the old window is free
    history = await store.history.find(
        "reservation", mine.reservation_id, 10, None, now=datetime.now(UTC)
    )
    assert [e.version for e in history.items] == [1, 2, 3]


async def test_stale_and_unknown_updates(store: Store) -> None:
    await add_bench(store)
    mine = await book(store, booking("rig-1", 0, 2))
    v2 = changed(mine, purpose="v2")
    await store.reservations.update(mine, v2, reservation_entry(v2, "updated"))
    late = changed(mine, start=at(10), end=at(11))
    with pytest.raises(VersionMismatch) as caught:
        await store.reservations.update(mine, late, reservation_entry(late, "updated"))
    assert caught.value.current == v2
    assert await calendar(store) == [(at(0), at(2))]
    ghost = booking("rig-1", 7, 8)
    with pytest.raises(ItemNotFound):
        await store.reservations.update(
            ghost, changed(ghost), reservation_entry(changed(ghost), "updated")
        )


async def test_find_by_bench_user_and_range_in_start_order(store: Store) -> None:
    await add_bench(store, "rig-1")
    await add_bench(store, "rig-2")
    a = await book(store, booking("rig-1", 4, 5, user="alice"))
    b = await book(store, booking("rig-1", 0, 1, user="bob"))
    c = await book(store, booking("rig-2", 2, 3, user="alice"))
    d = await book(store, booking("rig-1", 20, 30, user="alice"))
    cancelled = changed(d, state=ReservationState.CANCELLED)
    await store.reservations.update(d, cancelled, reservation_entry(cancelled, "cancelled"))

    async def ids(query: ReservationQuery) -> list[str]:
        return [r.reservation_id for r in (await store.reservations.find(query, 50, None)).items]

    assert await ids(ReservationQuery(bench_id="rig-1")) == [
        b.reservation_id,
        a.reservation_id,
        d.reservation_id,
    ]
    assert await ids(ReservationQuery(bench_id="rig-1", holding_only=True)) == [
        b.reservation_id,
        a.reservation_id,
    ]
    assert await ids(ReservationQuery(user_id="alice")) == [
        c.reservation_id,
        a.reservation_id,
        d.reservation_id,
    ]
    assert await ids(ReservationQuery(user_id="alice", bench_id="rig-1")) == [
        a.reservation_id,
        d.reservation_id,
    ]
    # Overlap with [0:30, 4:30): b (0-1) and a (4-5) overlap, c is on another bench.
    window = ReservationQuery(bench_id="rig-1", ends_after=at(0.5), starts_before=at(4.5))
    assert await ids(window) == [b.reservation_id, a.reservation_id]
    # A long reservation that began before the range still shows.
    assert await ids(
        ReservationQuery(bench_id="rig-1", ends_after=at(25), starts_before=at(26))
    ) == [d.reservation_id]
    with pytest.raises(ValueError):
        await store.reservations.find(ReservationQuery(), 10, None)


async def test_find_pages_in_order(store: Store) -> None:
    await add_bench(store)
    expected = [(await book(store, booking("rig-1", n, n + 1))).reservation_id for n in range(11)]
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await store.reservations.find(ReservationQuery(bench_id="rig-1"), 4, after)
        assert len(page.items) <= 4
        seen += [r.reservation_id for r in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == expected


async def test_racing_bookings_of_one_window_have_one_winner(store: Store) -> None:
    await add_bench(store)
    attempts = [booking("rig-1", n * 0.01, 2 + n * 0.01, user=f"user-{n}") for n in range(20)]

    async def attempt(reservation: Reservation) -> bool:
        try:
            await book(store, reservation)
        except WindowTaken:
            return False
        return True

    outcomes = await asyncio.gather(*(attempt(r) for r in attempts))
    assert outcomes.count(True) == 1
    winner = attempts[outcomes.index(True)]
    assert await calendar(store) == [(winner.start, winner.end)]


async def test_an_idempotency_key_creates_once(store: Store) -> None:
    await add_bench(store)
    first = booking("rig-1", 0, 1)
    await store.reservations.create(
        first, reservation_entry(first), key_record("alice\nop\nk1", first.reservation_id)
    )
    assert await store.idempotency.get("alice\nop\nk1") == key_record(
        "alice\nop\nk1", first.reservation_id
    )
    again = booking("rig-1", 5, 6)
    with pytest.raises(IdempotencyKeyTaken) as caught:
        await store.reservations.create(
            again, reservation_entry(again), key_record("alice\nop\nk1", again.reservation_id)
        )
    assert caught.value.record.resource_id == first.reservation_id
    assert await store.reservations.get(again.reservation_id) is None
    assert await calendar(store) == [(at(0), at(1))]
    assert await store.idempotency.get("other") is None


async def test_an_expired_key_may_be_used_again(store: Store) -> None:
    await add_bench(store)
    old = booking("rig-1", 0, 1)
    expired = replace(key_record("k", old.reservation_id), expires_at=START - timedelta(seconds=1))
    await store.reservations.create(old, reservation_entry(old), expired)
    new = booking("rig-1", 2, 3)
    await store.reservations.create(
        new, reservation_entry(new), key_record("k", new.reservation_id)
    )
    stored = await store.idempotency.get("k")
    assert stored is not None and stored.resource_id == new.reservation_id


async def test_a_failed_booking_does_not_take_its_key(store: Store) -> None:
    await add_bench(store)
    await book(store, booking("rig-1", 0, 2))
    loser = booking("rig-1", 1, 3)
    with pytest.raises(WindowTaken):
        await store.reservations.create(
            loser, reservation_entry(loser), key_record("k", loser.reservation_id)
        )
    assert await store.idempotency.get("k") is None


async def test_bench_creation_honours_keys(store: Store) -> None:
    bench = make_bench("rig-9")
    await store.benches.create(bench, entry_for(bench), key_record("admin\nbench\nk", "rig-9"))
    other = make_bench("rig-10")
    with pytest.raises(IdempotencyKeyTaken):
        await store.benches.create(other, entry_for(other), key_record("admin\nbench\nk", "rig-10"))
    assert await store.benches.get("rig-10") is None


async def test_racing_creates_with_one_key_store_one(store: Store) -> None:
    await add_bench(store)
    attempts = [booking("rig-1", n * 3, n * 3 + 1) for n in range(10)]

    async def attempt(reservation: Reservation) -> str:
        try:
            await store.reservations.create(
                reservation,
                reservation_entry(reservation),
                key_record("k", reservation.reservation_id),
            )
        except IdempotencyKeyTaken as taken:
            return taken.record.resource_id
        return reservation.reservation_id

    outcomes = await asyncio.gather(*(attempt(r) for r in attempts))
    assert len(set(outcomes)) == 1
    assert len(await calendar(store)) == 1
