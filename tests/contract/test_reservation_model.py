"""A seeded random walk of book / move / cancel / release, checked against a plain model.

The model is a list of windows per bench; the service and store must agree with it on
every outcome, and the stored calendars must equal the model's and never overlap.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from app.clock import ManualClock
from app.deps import reservation_service
from app.errors import AppError, Conflict
from app.identity import Actor, Principal, Role
from app.reservations.domain import Window
from app.reservations.service import BookingRequest
from app.settings import Settings
from app.store.base import ReservationQuery, Store
from tests.conftest import START
from tests.support.factories import entry_for, make_bench

BENCHES = ["m-1", "m-2"]
STEPS = 80
ALICE = Actor(Principal("alice", Role.USER), "model")


@dataclass
class Booked:
    bench_id: str
    window: Window
    live: bool = True


def overlaps_any(model: dict[str, Booked], bench_id: str, window: Window, ignore: str = "") -> bool:
    return any(
        b.live and b.bench_id == bench_id and rid != ignore and b.window.overlaps(window)
        for rid, b in model.items()
    )


def random_window(rng: random.Random, now: datetime) -> Window:
    # Quarter-hour grid over three days, so collisions, touching edges and day spans are common.
    start = now + timedelta(minutes=15 * rng.randrange(1, 2 * 96))
    return Window(start, start + timedelta(minutes=15 * rng.randrange(1, 48)))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_walk_matches_the_model(store: Store, seed: int) -> None:
    rng = random.Random(seed)
    clock = ManualClock(START)
    service = reservation_service(store, clock, Settings())
    for bench_id in BENCHES:
        bench = make_bench(bench_id)
        await store.benches.create(bench, entry_for(bench))
    model: dict[str, Booked] = {}

    for _ in range(STEPS):
        now = clock.now()
        live = [rid for rid, b in model.items() if b.live and b.window.end > now]
        action = rng.choice(["book", "book", "move", "cancel", "release", "tick"])
        if action == "book" or (not live and action != "tick"):
            bench_id, window = rng.choice(BENCHES), random_window(rng, now)
            expected_ok = not overlaps_any(model, bench_id, window)
            try:
                reservation, _ = await service.book(
                    BookingRequest(window=window, purpose="", bench_id=bench_id), ALICE, None
                )
            except Conflict:
                assert not expected_ok, f"refused a free window {window} on {bench_id}"
            else:
                assert expected_ok, f"booked a taken window {window} on {bench_id}"
                model[reservation.reservation_id] = Booked(bench_id, window)
        elif action == "move":
            rid = rng.choice(live)
            booked = model[rid]
            window = random_window(rng, now)
            started = booked.window.start <= now
            if started:  # an active reservation keeps its start
                window = Window(booked.window.start, max(window.end, now + timedelta(minutes=15)))
            expected_ok = not overlaps_any(model, booked.bench_id, window, ignore=rid)
            try:
                await service.move(
                    rid,
                    start=window.start,
                    end=window.end,
                    purpose=None,
                    expectation=None,
                    actor=ALICE,
                )
            except AppError:
                assert not expected_ok
            else:
                assert expected_ok
                booked.window = window
        elif action == "cancel":
            rid = rng.choice(live)
            await service.cancel(rid, None, ALICE)
            model[rid].live = False
        elif action == "release":
            rid = rng.choice(live)
            booked = model[rid]
            if booked.window.start <= now:
                await service.release(rid, None, ALICE)
                booked.window = Window(booked.window.start, now)
                booked.live = False
            else:
                with pytest.raises(Conflict):
                    await service.release(rid, None, ALICE)
        else:
            clock.advance(timedelta(minutes=15 * rng.randrange(1, 12)))

    for bench_id in BENCHES:
        page = await store.reservations.find(
            ReservationQuery(bench_id=bench_id, holding_only=True), 500, None
        )
        stored = [(r.reservation_id, r.window) for r in page.items]
        expected = sorted(
            ((rid, b.window) for rid, b in model.items() if b.live and b.bench_id == bench_id),
            key=lambda pair: pair[1].start,
        )
        assert stored == expected
        windows = [w for _, w in stored]
        assert all(a.end <= b.start for a, b in itertools.pairwise(windows))
