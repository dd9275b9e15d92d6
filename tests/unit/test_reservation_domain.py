from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from app.errors import Conflict, InvalidInput
from app.reservations.domain import (
    BookedSlot,
    Reservation,
    ReservationState,
    ReservationStatus,
    Window,
    cancel,
    conflicts,
    free_windows,
    move,
    release,
    validate_window,
)

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
WEEK = timedelta(hours=168)


def h(hours: float) -> datetime:
    return NOW + timedelta(hours=hours)


def res(start: float, end: float) -> Reservation:
    return Reservation(
        "r1", "rig", "alice", h(start), h(end), "", ReservationState.BOOKED, 1, NOW, NOW
    )


def test_half_open_overlap() -> None:
    a = Window(h(1), h(2))
    assert not a.overlaps(Window(h(2), h(3)))
    assert not a.overlaps(Window(h(0), h(1)))
    assert a.overlaps(Window(h(1.999), h(3)))
    assert a.overlaps(Window(h(0), h(5)))


def test_days_a_window_touches() -> None:
    midnight = datetime(2026, 11, 26, tzinfo=UTC)
    assert Window(midnight - timedelta(hours=1), midnight).days() == [date(2026, 11, 25)]
    assert Window(midnight - timedelta(hours=1), midnight + timedelta(seconds=1)).days() == [
        date(2026, 11, 25),
        date(2026, 11, 26),
    ]
    assert len(Window(midnight, midnight + timedelta(days=3)).days()) == 3


def test_offsets_and_dst_are_just_instants() -> None:
    # 2026-03-29 02:00 in Europe: +01:00 becomes +02:00. Two spellings of one instant.
    before = datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=1)))
    after = datetime(2026, 3, 29, 3, 30, tzinfo=timezone(timedelta(hours=2)))
    assert Window(before, after).duration == timedelta(hours=1)
    assert Window(before, after).overlaps(
        Window(datetime(2026, 3, 29, 0, 45, tzinfo=UTC), datetime(2026, 3, 29, 0, 50, tzinfo=UTC))
    )


@pytest.mark.parametrize(
    ("start", "end", "ok"),
    [
        (1, 2, True),
        (2, 1, False),
        (1, 1, False),
        (-0.01, 1, True),
        (-0.1, 1, False),
        (0, 169, False),
        (0, 168, True),
    ],
)
def test_validate_window(start: float, end: float, ok: bool) -> None:
    window = Window(h(start), h(end))
    if ok:
        validate_window(window, NOW, WEEK)
    else:
        with pytest.raises(InvalidInput):
            validate_window(window, NOW, WEEK)


def test_conflicts_ignore_the_moving_reservation() -> None:
    slots = [BookedSlot("a", Window(h(0), h(1))), BookedSlot("b", Window(h(1), h(2)))]
    assert [s.reservation_id for s in conflicts(Window(h(0.5), h(1.5)), slots)] == ["a", "b"]
    assert [s.reservation_id for s in conflicts(Window(h(0.5), h(1.5)), slots, ignore="a")] == ["b"]


def test_status_follows_the_clock() -> None:
    r = res(1, 2)
    assert r.status(NOW) is ReservationStatus.CONFIRMED
    assert r.status(h(1)) is ReservationStatus.ACTIVE
    assert r.status(h(2)) is ReservationStatus.COMPLETED


def test_cancel_release_and_move_rules() -> None:
    r = res(1, 3)
    with pytest.raises(Conflict):
        release(r, NOW)
    released = release(r, h(1.5))
    assert (released.state, released.end, released.version) == (
        ReservationState.RELEASED,
        h(1.5),
        2,
    )
    assert cancel(r, h(2)).state is ReservationState.CANCELLED
    with pytest.raises(Conflict):
        cancel(r, h(3))
    with pytest.raises(Conflict):
        move(r, start=h(1.5), end=None, purpose=None, now=h(2), max_duration=WEEK)
    longer = move(r, start=None, end=h(4), purpose=None, now=h(2), max_duration=WEEK)
    assert longer.end == h(4)
    assert move(r, start=None, end=None, purpose="", now=NOW, max_duration=WEEK) is r


def test_free_windows() -> None:
    search = Window(h(0), h(10))
    busy = [Window(h(1), h(2)), Window(h(2), h(3)), Window(h(5), h(6)), Window(h(-2), h(0.5))]
    gaps = free_windows(busy, search, timedelta(hours=1))
    assert gaps == [Window(h(3), h(5)), Window(h(6), h(10))]
    assert free_windows([], search, timedelta(hours=11)) == []
    assert free_windows(busy, search, timedelta(minutes=30)) == [
        Window(h(0.5), h(1)),
        Window(h(3), h(5)),
        Window(h(6), h(10)),
    ]
