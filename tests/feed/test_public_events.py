"""The export speaks the API: a reservation's change reads as the API renders it (status,
instants), on both stores' feeds."""

from __future__ import annotations

from datetime import timedelta

from app.clock import ManualClock
from app.feed.factory import FeedSource
from app.feed.public import public_event
from app.reservations.schemas import ReservationOut
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

SHOWN = ("bench_id", "user_id", "start", "end", "purpose", "status", "created_at", "version")


async def test_reservation_changes_read_as_the_api_renders_them(
    feed_store: Store, source: FeedSource, clock: ManualClock
) -> None:
    await benches(feed_store, clock).create(new_bench("rig-1"), ADMIN)
    service = reservations(feed_store, clock)
    booked, _ = await service.book(booking("rig-1", 2, 3), ALICE, None)
    as_booked = ReservationOut.of(booked, clock.now()).model_dump(mode="json")
    clock.advance(timedelta(hours=2, minutes=30))  # inside the window: active
    released = await service.release(booked.reservation_id, None, ALICE)
    as_released = ReservationOut.of(released, clock.now()).model_dump(mode="json")

    events, _ = await read_all(source.feed)
    insert, release = (public_event(e) for e in entity_events(events, "reservations"))

    assert insert.new_image is not None and release.new_image is not None
    assert {name: insert.new_image[name] for name in SHOWN} == {
        name: as_booked[name] for name in SHOWN
    }
    assert "state" not in insert.new_image
    assert release.old_image is not None
    assert release.old_image["status"] == "confirmed"  # as of its last change
    assert {name: release.new_image[name] for name in SHOWN} == {
        name: as_released[name] for name in SHOWN
    }
    # History entries too: their instants in the API's form.
    created = public_event(entity_events(events, "history")[-1])
    assert created.new_image is not None
    assert created.new_image["at"].endswith("Z") and ".000000" not in created.new_image["at"]
