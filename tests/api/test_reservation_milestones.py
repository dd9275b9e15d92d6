"""Events raised by time: a reservation's start, its end coming soon, its end. Once
each, whoever's housekeeping sees them first (two housekeepers race in one test)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx

from app.clock import ManualClock
from app.ops.housekeeping import Housekeeper
from app.settings import Settings
from app.store.base import Store
from tests.api.test_events import page, types
from tests.api.test_reservations import add_bench, book

# The test clock starts at 2026-11-25T08:00Z.
NINE, TEN = "2026-11-25T09:00:00Z", "2026-11-25T10:00:00Z"


async def test_started_ending_soon_and_ended_are_raised_once_each(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    await add_bench(client)
    booked = (await book(client, start=NINE, end=TEN)).json()

    async def milestones() -> list[str]:
        body = await page(
            client, type=["reservation.started", "reservation.ending_soon", "reservation.ended"]
        )
        return types(body)

    await housekeeper.run_once()
    assert await milestones() == []
    clock.advance(timedelta(hours=1))  # 09:00: it starts
    assert (await housekeeper.run_once()).milestones_announced == 1
    assert (await housekeeper.run_once()).milestones_announced == 0
    clock.advance(timedelta(minutes=44))  # 09:44: 16 minutes left
    await housekeeper.run_once()
    assert await milestones() == ["reservation.started"]
    clock.advance(timedelta(minutes=1))  # 09:45: ending soon (15 minutes by default)
    assert (await housekeeper.run_once()).milestones_announced == 1
    clock.advance(timedelta(minutes=15))  # 10:00: over
    await housekeeper.run_once()
    await housekeeper.run_once()
    assert await milestones() == [
        "reservation.started",
        "reservation.ending_soon",
        "reservation.ended",
    ]
    started = (await page(client, type="reservation.started"))["items"][0]
    assert started["data"]["status"] == "active"
    assert started["entity"] == {
        "type": "reservation",
        "id": booked["reservation_id"],
        "version": 1,
    }
    assert started["actor"] == "housekeeping"
    # Announcing moved no version: the holder's ETag still holds.
    fetched = await client.get(
        f"/v1/reservations/{booked['reservation_id']}",
        headers={"Authorization": "Bearer alice-token"},
    )
    assert fetched.json()["version"] == 2  # completed; started/ending soon left it alone


async def test_a_change_made_from_a_read_before_the_start_still_applies(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    await add_bench(client)
    booked = (await book(client, start=NINE, end=TEN)).json()
    clock.advance(timedelta(hours=1, minutes=5))
    await housekeeper.run_once()  # announces the start
    extended = await client.patch(
        f"/v1/reservations/{booked['reservation_id']}",
        json={"end": "2026-11-25T11:00:00Z"},
        headers={"Authorization": "Bearer alice-token", "If-Match": '"1"'},
    )
    assert extended.status_code == 200, extended.text
    await housekeeper.run_once()
    assert types(await page(client, type="reservation.started")) == ["reservation.started"]


async def test_two_housekeepers_at_once_raise_each_milestone_once(
    client: httpx.AsyncClient, clock: ManualClock, store: Store, settings: Settings
) -> None:
    benches = [f"rig-{n}" for n in range(1, 7)]
    for bench_id in benches:
        await add_bench(client, bench_id)
        booked = await book(client, start=NINE, end="2026-11-25T11:00:00Z", bench_id=bench_id)
        assert booked.status_code == 201, booked.text
    keepers = [Housekeeper(store, clock, settings) for _ in range(2)]

    async def race() -> int:
        reports = await asyncio.gather(*(keeper.run_once() for keeper in (*keepers, *keepers)))
        return sum(report.milestones_announced for report in reports)

    clock.advance(timedelta(hours=1, minutes=10))  # 09:10: all six started
    assert await race() == 6
    clock.advance(timedelta(hours=1, minutes=40))  # 10:50: all six end within 15 minutes
    assert await race() == 6
    raised = (await page(client, type=["reservation.started", "reservation.ending_soon"]))["items"]
    assert sorted((e["type"], e["bench_id"]) for e in raised) == sorted(
        (kind, bench_id)
        for kind in ("reservation.started", "reservation.ending_soon")
        for bench_id in benches
    )
