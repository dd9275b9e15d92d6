"""A scripted lab week with benches failing at random: how many of the bookings they put at
risk were healed before their start.

24 benches of one type (every one with the capability asked for), Monday 00:00 to Sunday
24:00 on the test clock, in 5-minute steps with a housekeeping pass each, as production
runs it. Each bench's agent heartbeats every step while its bench is up. Every hour each
bench may fail (2 %): its agent goes silent (the bench goes offline) for 1-12 hours, or
(a third of the failures) it keeps heartbeating with a failing health check until fixed
(3 in a row quarantine it; an admin clears it when it is fixed). About 55 % of the bench
hours are booked, 1-24 hours ahead, for 1-4 hours: half by capability, a quarter by bench
id with ``allow_swap``, a quarter by bench id only.

A booking is affected when the service found its bench unfit (offline, quarantined or
failing) before its start: it was booked at risk, or ``reservation.at_risk`` was raised
for it. It is healed when, at its start, it sits on a fit bench: moved to a spare (by
capability, ``allow_swap``), or its own bench came back in time. Reported: affected,
healed, and the share healed, per way of booking.

    python -m bench.health_week [--seed 7] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.clock import ManualClock
from app.deps import bench_service, health_service, reservation_service
from app.errors import AppError
from app.health.domain import risk_of
from app.identity import Actor, Principal, Role
from app.ops.housekeeping import Housekeeper
from app.reservations.domain import Window
from app.reservations.service import BookingRequest
from app.settings import Settings
from app.store.factory import open_store

MONDAY = datetime(2026, 12, 7, tzinfo=UTC)
WEEK = timedelta(days=7)
STEP = timedelta(minutes=5)
BENCHES = [f"rig-{n:02d}" for n in range(1, 25)]
CAPABILITY = "can-bus"
FAIL_PER_HOUR = 0.02
BOOKED_SHARE = 0.55
ADMIN = Principal("admin", Role.ADMIN)


@dataclass
class Outage:
    bench_id: str
    start: datetime
    end: datetime
    silent: bool  # the agent stops; else it reports failing health


@dataclass
class Booking:
    way: str  # capability | allow_swap | bench_id
    window: Window
    booked_at: datetime
    bench_id: str
    user: str
    reservation_id: str | None = None
    affected: bool = False
    healed: bool | None = None
    done: bool = False  # its start has come


@dataclass
class Week:
    outages: list[Outage] = field(default_factory=list)
    bookings: list[Booking] = field(default_factory=list)


def script(seed: int) -> Week:
    rng = random.Random(seed)
    week = Week()
    for bench_id in BENCHES:
        hour = MONDAY
        while hour < MONDAY + WEEK:
            if rng.random() < FAIL_PER_HOUR:
                length = timedelta(hours=rng.randint(1, 12))
                week.outages.append(Outage(bench_id, hour, hour + length, rng.random() < 2 / 3))
                hour += length
            hour += timedelta(hours=1)
        start = MONDAY + timedelta(hours=rng.randint(0, 3))
        while start < MONDAY + WEEK - timedelta(hours=4):
            hours = rng.randint(1, 4)
            if rng.random() < BOOKED_SHARE:
                way = rng.choices(["capability", "allow_swap", "bench_id"], [2, 1, 1])[0]
                ahead = timedelta(hours=rng.randint(1, 24))
                window = Window(start, start + timedelta(hours=hours))
                user = f"user-{rng.randrange(30):02d}"
                week.bookings.append(Booking(way, window, start - ahead, bench_id, user))
            start += timedelta(hours=hours)
    week.bookings.sort(key=lambda b: b.booked_at)
    return week


async def play(week: Week) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        tokens = Path(folder) / "tokens.json"
        tokens.write_text("[]")
        settings = Settings(
            store="sqlite",
            sqlite_path=":memory:",
            tokens_file=tokens,
            cursor_secret="week",
            housekeeping_interval_s=0,
            rate_limit_per_s=0,
            webhook_delivery=False,
            no_show_grace_min=0,
            log_level="WARNING",
        )
        clock = ManualClock(MONDAY - timedelta(days=1))
        store = await open_store(settings)
        try:
            return await _play(week, store, clock, settings)
        finally:
            await store.close()


async def _play(week: Week, store: Any, clock: ManualClock, settings: Settings) -> dict[str, Any]:
    from app.benches.service import NewBench

    benches = bench_service(store, clock, settings)
    health = health_service(store, clock, settings)
    reservations = reservation_service(store, clock, settings)
    housekeeper = Housekeeper(store, clock, settings)
    admin = Actor(ADMIN, request_id="week")
    for bench_id in BENCHES:
        spec = NewBench(bench_id, bench_id, "hil", frozenset({CAPABILITY}), {}, 300)
        await benches.create(spec, admin)
    pending = list(week.bookings)
    watched: list[Booking] = []
    by_id: dict[str, Booking] = {}
    clock.set(min(b.booked_at for b in week.bookings) - STEP)
    position = await store.events.head(now=clock.now())
    while clock.now() < MONDAY + WEEK:
        now = clock.now()
        for bench_id in BENCHES:
            outage = _outage(week, bench_id, now)
            if outage is None:
                await health.record_heartbeat(bench_id, ADMIN, "sim", {"health": "ok"})
                await _clear_if_fixed(benches, bench_id, admin)
            elif not outage.silent:
                details = {"health": "failing", "health_message": "no JTAG"}
                await health.record_heartbeat(bench_id, ADMIN, "sim", details)
        while pending and pending[0].booked_at <= now:
            booking = pending.pop(0)
            if await _book(reservations, booking):
                watched.append(booking)
                assert booking.reservation_id is not None
                by_id[booking.reservation_id] = booking
        await housekeeper.run_once()
        position = await _risks(store, position, by_id, now)
        for booking in watched:
            await _observe(store, booking, now)
        clock.advance(STEP)
    return _report(watched)


def _outage(week: Week, bench_id: str, now: datetime) -> Outage | None:
    for outage in week.outages:
        if outage.bench_id == bench_id and outage.start <= now < outage.end:
            return outage
    return None


async def _clear_if_fixed(benches: Any, bench_id: str, admin: Actor) -> None:
    """The admin's morning round, every step: a quarantined bench that is fixed is put back."""
    from app.benches.domain import AdminState, BenchChanges

    bench = await benches.get(bench_id)
    if bench.admin_state is AdminState.QUARANTINED:
        await benches.update(bench_id, BenchChanges(admin_state=AdminState.ACTIVE), None, admin)


async def _book(reservations: Any, booking: Booking) -> bool:
    request = BookingRequest(
        window=booking.window,
        purpose=booking.way,
        bench_id=None if booking.way == "capability" else booking.bench_id,
        capabilities=frozenset({CAPABILITY}) if booking.way == "capability" else frozenset(),
        allow_swap=booking.way == "allow_swap",
    )
    actor = Actor(Principal(booking.user, Role.USER), request_id="book")
    try:
        reservation, _ = await reservations.book(request, actor, None)
    except AppError:
        return False
    booking.reservation_id = reservation.reservation_id
    booking.affected = reservation.at_risk is not None  # booked on an unfit bench
    return True


async def _risks(store: Any, position: str, by_id: dict[str, Booking], now: datetime) -> str:
    """The bookings ``reservation.at_risk`` was raised for since ``position``."""
    while True:
        logged = await store.events.read(position, 500, now=now)
        for item in logged:
            event = item.event
            booking = by_id.get(event.entity.id)
            before_start = booking is not None and now < booking.window.start + STEP
            if event.type == "reservation.at_risk" and booking is not None and before_start:
                booking.affected = True
        if not logged:
            return position
        position = logged[-1].position


async def _observe(store: Any, booking: Booking, now: datetime) -> None:
    """At its start: is an affected booking on a fit bench?"""
    if booking.done or booking.reservation_id is None or now < booking.window.start:
        return
    booking.done = True
    if not booking.affected:
        return
    reservation = await store.reservations.get(booking.reservation_id)
    bench = None if reservation is None else await store.benches.get(reservation.bench_id)
    booking.healed = bench is not None and risk_of(bench, now) is None


def _report(watched: list[Booking]) -> dict[str, Any]:
    affected = Counter(b.way for b in watched if b.affected)
    healed = Counter(b.way for b in watched if b.affected and b.healed)
    ways = ("capability", "allow_swap", "bench_id")
    total_affected = sum(affected.values())
    return {
        "bookings": len(watched),
        "affected": total_affected,
        "healed": sum(healed.values()),
        "healed_share": round(sum(healed.values()) / total_affected, 3) if total_affected else None,
        "by_way": {
            way: {
                "bookings": sum(1 for b in watched if b.way == way),
                "affected": affected[way],
                "healed": healed[way],
                "healed_share": round(healed[way] / affected[way], 3) if affected[way] else None,
            }
            for way in ways
        },
    }


def main() -> int:
    logging.getLogger("app").setLevel(logging.ERROR)  # quarantines are expected here
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    week = script(args.seed)
    result = {"seed": args.seed, "outages": len(week.outages), **asyncio.run(play(week))}
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{len(BENCHES)} benches, {result['outages']} outages, {result['bookings']} bookings:"
        f" {result['affected']} affected, {result['healed']} healed before their start"
        f" ({result['healed_share']})"
    )
    for way, figures in result["by_way"].items():
        print(
            f"  {way:<11} {figures['bookings']:>4} bookings, {figures['affected']:>3} affected,"
            f" {figures['healed']:>3} healed ({figures['healed_share']})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
