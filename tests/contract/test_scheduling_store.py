"""Scheduling in the store port, on every adapter: the reservation fields it keeps, the
advancing and the started reservations, a booking moved to another bench, quota checks
decided inside the booking's own write (racing ones too), and the quotas themselves."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from app.benches.domain import AdminState
from app.quotas.domain import Quota, QuotaExceeded, QuotaKind
from app.reservations.domain import Reservation, ReservationState
from app.store.base import (
    AlreadyExists,
    BenchNotBookable,
    ReservationQuery,
    Store,
    VersionMismatch,
    WindowTaken,
)
from tests.support.factories import (
    add_bench,
    at,
    book,
    booking,
    changed,
    entry_for,
    make_quota,
    next_version,
    quota_check,
    quota_entry,
    reservation_entry,
)


def scheduled(bench_id: str, start: float, end: float, **fields: Any) -> Reservation:
    """A booking with every scheduling field set (``fields`` override them)."""
    values: dict[str, Any] = {
        "advance": True,
        "priority": 80,
        "not_before": at(start - 5),
        "capabilities": frozenset({"can-bus", "usb"}),
        "team": "red",
        **fields,
    }
    return replace(booking(bench_id, start, end), **values)


async def holding(store: Store, bench_id: str) -> list[str]:
    page = await store.reservations.find(
        ReservationQuery(bench_id=bench_id, holding_only=True), 100, None
    )
    return [r.reservation_id for r in page.items]


async def history_of(store: Store, reservation: Reservation) -> list[int]:
    page = await store.history.find(
        "reservation", reservation.reservation_id, 10, None, now=datetime.now(UTC)
    )
    return [entry.version for entry in page.items]


# --- the fields ------------------------------------------------------------------------------


async def test_the_scheduling_fields_round_trip_and_change_with_the_version(store: Store) -> None:
    await add_bench(store)
    plain = await book(store, booking("rig-1", 0, 1))
    got = await store.reservations.get(plain.reservation_id)
    assert got is not None and got == plain
    assert (got.advance, got.priority, got.not_before, got.capabilities, got.team) == (
        False,
        50,
        None,
        frozenset(),
        None,
    )
    assert (got.checked_in_at, got.idle_warned_at) == (None, None)

    full = await book(store, scheduled("rig-1", 2, 3))
    assert await store.reservations.get(full.reservation_id) == full
    checked_in = changed(full, checked_in_at=at(2.1), idle_warned_at=at(2.5))
    await store.reservations.update(full, checked_in, reservation_entry(checked_in, "checkin"))
    assert await store.reservations.get(full.reservation_id) == checked_in
    # Back to the defaults: optional values go, as they came.
    cleared = changed(
        checked_in,
        advance=False,
        priority=0,
        not_before=None,
        capabilities=frozenset(),
        team=None,
        checked_in_at=None,
        idle_warned_at=None,
    )
    await store.reservations.update(checked_in, cleared, reservation_entry(cleared, "updated"))
    assert await store.reservations.get(full.reservation_id) == cleared
    page = await store.reservations.find(ReservationQuery(bench_id="rig-1"), 10, None)
    assert page.items == [plain, cleared]


async def test_a_teams_reservations_are_found_in_start_order(store: Store) -> None:
    await add_bench(store)
    later = await book(store, replace(booking("rig-1", 2, 3), team="red"))
    sooner = await book(store, replace(booking("rig-1", 0, 1, user="bob"), team="red"))
    blue = await book(store, replace(booking("rig-1", 4, 5), team="blue"))
    await book(store, booking("rig-1", 6, 7))  # no team

    red = ReservationQuery(team="red")
    assert (await store.reservations.find(red, 10, None)).items == [sooner, later]
    first = await store.reservations.find(red, 1, None)
    assert first.items == [sooner] and first.next_after is not None
    rest = await store.reservations.find(red, 1, first.next_after)
    assert rest.items == [later] and rest.next_after is None
    recent = ReservationQuery(team="red", ends_after=at(1.5), starts_before=at(10))
    assert (await store.reservations.find(recent, 10, None)).items == [later]
    bobs = ReservationQuery(team="red", user_id="bob")
    assert (await store.reservations.find(bobs, 10, None)).items == [sooner]
    on_bench = ReservationQuery(bench_id="rig-1", team="blue")
    assert (await store.reservations.find(on_bench, 10, None)).items == [blue]


# --- advancing and started -----------------------------------------------------------------


async def test_advancing_reservations_are_booked_ones_that_start_after_soonest_first(
    store: Store,
) -> None:
    await add_bench(store, "rig-1")
    await add_bench(store, "rig-2")
    late = await book(store, scheduled("rig-1", 30, 31))
    soon = await book(store, scheduled("rig-2", 2, 3))
    boundary = await book(store, scheduled("rig-1", 1, 2))
    await book(store, booking("rig-1", 5, 6))  # not advancing
    gone = await book(store, scheduled("rig-1", 10, 11))
    cancelled = changed(gone, state=ReservationState.CANCELLED)
    await store.reservations.update(gone, cancelled, reservation_entry(cancelled, "cancelled"))
    settled = await book(store, scheduled("rig-2", 12, 13))
    fixed = changed(settled, advance=False)
    await store.reservations.update(settled, fixed, reservation_entry(fixed, "updated"))

    ids = [r.reservation_id for r in await store.reservations.find_advancing(at(1), 10)]
    # Strictly after: the one starting at at(1) is not.
    assert ids == [soon.reservation_id, late.reservation_id]
    found = await store.reservations.find_advancing(at(0), 10)
    assert found == [boundary, soon, late]
    assert await store.reservations.find_advancing(at(0), 2) == [boundary, soon]
    assert await store.reservations.find_advancing(at(30), 10) == []
    # Moved later, it comes later.
    moved = changed(soon, start=at(40), end=at(41))
    await store.reservations.update(soon, moved, reservation_entry(moved, "updated"))
    assert await store.reservations.find_advancing(at(0), 10) == [boundary, late, moved]


async def test_started_reservations_are_booked_ones_in_the_closed_range_earliest_first(
    store: Store,
) -> None:
    await add_bench(store, "rig-1")
    await add_bench(store, "rig-2")
    first = await book(store, booking("rig-1", 0, 1))
    second = await book(store, booking("rig-2", 0.5, 3))
    third = await book(store, booking("rig-1", 2, 4))
    await book(store, booking("rig-1", 5, 6))  # after the range
    done = await book(store, booking("rig-1", 1, 2))
    completed = changed(done, state=ReservationState.COMPLETED)
    await store.reservations.update(done, completed, reservation_entry(completed, "completed"))

    # Both bounds included.
    assert await store.reservations.find_started(at(0), at(2), 10) == [first, second, third]
    assert await store.reservations.find_started(at(0.25), at(2), 10) == [second, third]
    assert await store.reservations.find_started(at(0), at(2), 2) == [first, second]
    assert await store.reservations.find_started(at(2.5), at(4.5), 10) == []
    assert await store.reservations.find_started(at(3), at(1), 10) == []
    released = changed(third, state=ReservationState.RELEASED, end=at(3))
    await store.reservations.update(third, released, reservation_entry(released, "released"))
    assert await store.reservations.find_started(at(0), at(2), 10) == [first, second]


# --- another bench ---------------------------------------------------------------------------


async def test_an_update_to_another_bench_moves_the_window_there(store: Store) -> None:
    await add_bench(store, "rig-1")
    await add_bench(store, "rig-2")
    mine = await book(store, scheduled("rig-1", 30, 32))  # Nov 27, 14:00 to 16:00
    moved = changed(mine, bench_id="rig-2", start=at(2), end=at(4))
    await store.reservations.update(mine, moved, reservation_entry(moved, "advanced"))

    assert await store.reservations.get(mine.reservation_id) == moved
    assert await holding(store, "rig-1") == []
    assert await holding(store, "rig-2") == [mine.reservation_id]
    # The old bench's window is free at once, the new one's taken.
    await book(store, booking("rig-1", 30, 32, user="bob"))
    with pytest.raises(WindowTaken) as caught:
        await book(store, booking("rig-2", 3, 5, user="bob"))
    assert [slot.reservation_id for slot in caught.value.conflicts] == [mine.reservation_id]
    # And back, keeping the window: the calendars follow the bench alone.
    back = changed(moved, bench_id="rig-1")
    await store.reservations.update(moved, back, reservation_entry(back, "advanced"))
    assert await holding(store, "rig-2") == []
    assert mine.reservation_id in await holding(store, "rig-1")
    await book(store, booking("rig-2", 2, 4, user="bob"))


@pytest.mark.parametrize("state", [AdminState.RETIRED, AdminState.MAINTENANCE])
async def test_an_update_to_a_bench_not_active_or_missing_is_refused_and_changes_nothing(
    store: Store, state: AdminState
) -> None:
    await add_bench(store, "rig-1")
    other = await add_bench(store, "rig-2")
    paused = next_version(other, admin_state=state)
    await store.benches.update(other, paused, entry_for(paused, "updated"))
    mine = await book(store, booking("rig-1", 0, 2))
    for bench_id, expected in (("rig-2", paused), ("rig-9", None)):
        moved = changed(mine, bench_id=bench_id, start=at(3), end=at(4))
        with pytest.raises(BenchNotBookable) as caught:
            await store.reservations.update(mine, moved, reservation_entry(moved, "advanced"))
        assert caught.value.bench == expected
    assert await store.reservations.get(mine.reservation_id) == mine
    assert await holding(store, "rig-1") == [mine.reservation_id]
    assert await history_of(store, mine) == [1]
    with pytest.raises(WindowTaken):
        await book(store, booking("rig-1", 1, 3, user="bob"))


async def test_an_update_to_a_taken_window_of_another_bench_is_refused_intact(
    store: Store,
) -> None:
    await add_bench(store, "rig-1")
    await add_bench(store, "rig-2")
    mine = await book(store, booking("rig-1", 0, 2))
    theirs = await book(store, booking("rig-2", 3, 5, user="bob"))
    moved = changed(mine, bench_id="rig-2", start=at(4), end=at(6))
    with pytest.raises(WindowTaken) as caught:
        await store.reservations.update(mine, moved, reservation_entry(moved, "advanced"))
    assert [slot.reservation_id for slot in caught.value.conflicts] == [theirs.reservation_id]
    assert await store.reservations.get(mine.reservation_id) == mine
    assert await holding(store, "rig-1") == [mine.reservation_id]
    assert await holding(store, "rig-2") == [theirs.reservation_id]
    with pytest.raises(WindowTaken):
        await book(store, booking("rig-1", 1, 3, user="carol"))
    # A stale copy hears of the version before anything else.
    with pytest.raises(VersionMismatch):
        stale = replace(mine, version=0)
        await store.reservations.update(stale, moved, reservation_entry(moved, "advanced"))


# --- quotas ----------------------------------------------------------------------------------


async def book_checked(store: Store, reservation: Reservation, *quotas: Quota) -> Reservation:
    await store.reservations.create(
        reservation, reservation_entry(reservation), quota=quota_check(reservation, *quotas)
    )
    return reservation


async def update_checked(
    store: Store, current: Reservation, updated: Reservation, *quotas: Quota
) -> None:
    await store.reservations.update(
        current, updated, reservation_entry(updated, "updated"), quota_check(updated, *quotas)
    )


async def test_over_the_limit_raises_and_stores_nothing(store: Store) -> None:
    await add_bench(store, "rig-1")
    await add_bench(store, "rig-2")
    quota = make_quota(hours_7d=5, concurrent=1, window_hours=4)
    await book_checked(store, booking("rig-1", 0, 3), quota)
    refused = [
        booking("rig-2", 1, 2),  # two at once
        booking("rig-2", 24, 27),  # 3 + 3 h within seven days
        booking("rig-2", 48, 53),  # a window longer than 4 h
    ]
    for reservation in refused:
        with pytest.raises(QuotaExceeded):
            await book_checked(store, reservation, quota)
        assert await store.reservations.get(reservation.reservation_id) is None
    page = await store.reservations.find(ReservationQuery(bench_id="rig-2"), 10, None)
    assert page.items == []
    # What fits still fits: 2 h more, later on the other bench; and bob is not alice.
    await book_checked(store, booking("rig-2", 4, 6), quota)
    await book_checked(store, booking("rig-2", 24, 27, user="bob"), make_quota("bob", hours_7d=5))


async def test_bookings_made_without_a_check_count_against_a_later_one(store: Store) -> None:
    await add_bench(store)
    await book(store, booking("rig-1", 0, 4))
    with pytest.raises(QuotaExceeded):
        await book_checked(store, booking("rig-1", 5, 7), make_quota(hours_7d=5))


@pytest.mark.parametrize("end", ["cancel", "release"])
async def test_a_cancel_or_a_release_gives_the_room_back(store: Store, end: str) -> None:
    await add_bench(store, "rig-1")
    await add_bench(store, "rig-2")
    quota = make_quota(hours_7d=4)
    first = await book(store, booking("rig-1", 0, 4))
    with pytest.raises(QuotaExceeded):
        await book_checked(store, booking("rig-2", 5, 7), quota)
    if end == "cancel":
        over = changed(first, state=ReservationState.CANCELLED)
    else:
        over = changed(first, state=ReservationState.RELEASED, end=at(1))
    await store.reservations.update(first, over, reservation_entry(over, end))
    await book_checked(store, booking("rig-2", 5, 7), quota)


async def test_completed_windows_still_count_and_a_move_counts_its_new_window(
    store: Store,
) -> None:
    await add_bench(store)
    quota = make_quota(hours_7d=4, concurrent=1)
    first = await book_checked(store, booking("rig-1", 0, 3), quota)
    done = changed(first, state=ReservationState.COMPLETED)
    await store.reservations.update(first, done, reservation_entry(done, "completed"))
    with pytest.raises(QuotaExceeded):
        await book_checked(store, booking("rig-1", 4, 6), quota)
    second = await book_checked(store, booking("rig-1", 4, 5), quota)
    # Its own window is not counted twice: a move within the limit passes...
    moved = changed(second, start=at(5), end=at(6))
    await update_checked(store, second, moved, quota)
    # ...one past it is refused, and the old window stays.
    longer = changed(moved, end=at(7))
    with pytest.raises(QuotaExceeded):
        await update_checked(store, moved, longer, quota)
    assert await store.reservations.get(second.reservation_id) == moved


async def test_a_move_to_another_bench_in_the_same_window_is_checked(store: Store) -> None:
    await add_bench(store, "rig-1")
    await add_bench(store, "rig-2")
    quota = make_quota(concurrent=1)
    mine = await book_checked(store, booking("rig-1", 0, 2), quota)
    there = changed(mine, bench_id="rig-2")
    await update_checked(store, mine, there, quota)
    assert await store.reservations.get(mine.reservation_id) == there
    # What the user holds did not change: a second window at that time is still one too many.
    with pytest.raises(QuotaExceeded):
        await book_checked(store, booking("rig-1", 1, 3), quota)


async def test_team_limits_count_every_member(store: Store) -> None:
    for bench_id in ("rig-1", "rig-2", "rig-3"):
        await add_bench(store, bench_id)
    team = make_quota("red", QuotaKind.TEAM, concurrent=1)
    alice = replace(booking("rig-1", 0, 2), team="red")
    await book_checked(store, alice, make_quota(concurrent=5), team)
    bob = replace(booking("rig-2", 1, 3, user="bob"), team="red")
    with pytest.raises(QuotaExceeded):
        await book_checked(store, bob, make_quota("bob", concurrent=5), team)
    # Another team's member, or bob outside the team, is not counted.
    carol = replace(booking("rig-3", 1, 3, user="carol"), team="blue")
    await book_checked(store, carol, make_quota("blue", QuotaKind.TEAM, concurrent=1))
    # alice leaving the team gives its room back.
    left = changed(alice, team=None)
    await store.reservations.update(alice, left, reservation_entry(left, "updated"))
    await book_checked(store, bob, team)


async def racing_bookings(
    store: Store, first: Reservation, second: Reservation, *quotas: Quota
) -> list[str]:
    async def attempt(reservation: Reservation) -> str:
        try:
            await book_checked(store, reservation, *quotas)
        except QuotaExceeded:
            return "refused"
        return "booked"

    return list(await asyncio.gather(attempt(first), attempt(second)))


async def test_racing_bookings_of_one_user_never_both_squeeze_under_a_limit(
    store: Store,
) -> None:
    await add_bench(store, "rig-1")
    await add_bench(store, "rig-2")
    for round in range(8):
        hour, user = 24 * round, f"user-{round}"
        # At the same time on two benches: only the quota keeps them apart.
        a = booking("rig-1", hour, hour + 2, user=f"{user}-a")
        b = booking("rig-2", hour + 1, hour + 3, user=f"{user}-a")
        outcomes = await racing_bookings(store, a, b, make_quota(f"{user}-a", concurrent=1))
        assert sorted(outcomes) == ["booked", "refused"], round
        # At other times: 3 h each fits in 5 h a week, both do not.
        c = booking("rig-1", hour + 4, hour + 7, user=f"{user}-b")
        d = booking("rig-2", hour + 8, hour + 11, user=f"{user}-b")
        outcomes = await racing_bookings(store, c, d, make_quota(f"{user}-b", hours_7d=5))
        assert sorted(outcomes) == ["booked", "refused"], round
        for name in (f"{user}-a", f"{user}-b"):
            page = await store.reservations.find(ReservationQuery(user_id=name), 10, None)
            assert len(page.items) == 1, (round, name)


async def test_racing_bookings_of_one_team_never_both_squeeze_under_its_limit(
    store: Store,
) -> None:
    await add_bench(store, "rig-1")
    await add_bench(store, "rig-2")
    for round in range(8):
        hour, team = 24 * round, f"team-{round}"
        a = replace(booking("rig-1", hour, hour + 2), team=team)
        b = replace(booking("rig-2", hour + 1, hour + 3, user="bob"), team=team)
        limit = make_quota(team, QuotaKind.TEAM, concurrent=1)
        assert sorted(await racing_bookings(store, a, b, limit)) == ["booked", "refused"], round


async def test_quotas_are_created_once_and_replaced_at_their_version(store: Store) -> None:
    assert await store.quotas.get(QuotaKind.USER, "alice") is None
    quota = make_quota(hours_7d=12.5, concurrent=2)
    await store.quotas.put(None, quota, quota_entry(quota))
    assert await store.quotas.get(QuotaKind.USER, "alice") == quota
    # A team of the same name is another quota.
    assert await store.quotas.get(QuotaKind.TEAM, "alice") is None
    with pytest.raises(AlreadyExists):
        await store.quotas.put(None, quota, quota_entry(quota))

    raised = make_quota(window_hours=8, version=2)
    await store.quotas.put(quota, raised, quota_entry(raised, "updated"))
    assert await store.quotas.get(QuotaKind.USER, "alice") == raised
    with pytest.raises(VersionMismatch) as caught:
        stale = make_quota(concurrent=9, version=2)
        await store.quotas.put(quota, stale, quota_entry(stale, "updated"))
    assert caught.value.current == raised
    assert await store.quotas.get(QuotaKind.USER, "alice") == raised
