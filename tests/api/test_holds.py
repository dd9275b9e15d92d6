"""Holds that end themselves, on every store: a started reservation nobody checked in to
is released as a no-show after its grace; one without activity is warned of, then
released. Housekeeping does both on the test clock, and the freed time goes to bookings
waiting to advance."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.clock import ManualClock
from app.ops.housekeeping import Housekeeper
from app.settings import Settings
from app.store.base import Store
from tests.api.test_advancing import AT, advancing, created, get
from tests.api.test_events import page
from tests.api.test_reservations import add_bench, book
from tests.conftest import AGENT1, ALICE, BOB, CI


@pytest.fixture
def holds(settings: Settings, store: Store, clock: ManualClock) -> Housekeeper:
    rules = settings.model_copy(
        update={
            "no_show_grace_min": 15,
            "no_show_grace_by_type": {"manual": 45},
            "idle_release_min": 60,
        }
    )
    return Housekeeper(store, clock, rules)


async def status(client: httpx.AsyncClient, reservation: dict[str, Any]) -> str:
    return str((await get(client, reservation["reservation_id"]))["status"])


async def test_nobody_came_released_as_a_no_show_and_the_time_goes_on(
    client: httpx.AsyncClient, clock: ManualClock, holds: Housekeeper
) -> None:
    await add_bench(client)
    empty = created(await book(client, start=AT.format("09:00"), end=AT.format("12:00")))
    waiting = created(await advancing(client, BOB, duration="PT2H"))
    assert waiting["start"] == AT.format("12:00")
    clock.advance(timedelta(hours=1, minutes=14))  # 09:14: within the grace
    await holds.run_once()
    assert await status(client, empty) == "active"
    clock.advance(timedelta(minutes=1))  # 09:15
    report = await holds.run_once()
    assert report.no_shows_released == 1
    assert await status(client, empty) == "released"
    moved = await get(client, waiting["reservation_id"])
    assert moved["start"] == "2026-11-25T09:15:00Z"  # the freed window starts now
    clock.advance(timedelta(seconds=1))
    [released] = (await page(client, type="reservation.released"))["items"]
    assert (released["actor"], released["data"]["reason"]) == ("housekeeping", "no_show")
    history = await client.get(f"/v1/reservations/{empty['reservation_id']}/history", headers=ALICE)
    assert [e["action"] for e in history.json()["items"]] == ["created", "released_no_show"]


async def test_a_check_in_or_a_run_keeps_the_reservation(
    client: httpx.AsyncClient, clock: ManualClock, holds: Housekeeper
) -> None:
    await add_bench(client)
    await add_bench(client, "rig-2")
    hands_on = created(await book(client, start=AT.format("09:00"), end=AT.format("12:00")))
    pipeline = created(
        await book(client, CI, bench_id="rig-2", start=AT.format("09:00"), end=AT.format("12:00"))
    )
    clock.advance(timedelta(hours=1, minutes=5))
    checked = await client.post(
        f"/v1/reservations/{hands_on['reservation_id']}/checkin", headers=ALICE
    )
    assert checked.status_code == 200, checked.text
    assert checked.json()["checked_in_at"] == "2026-11-25T09:05:00Z"
    run = await client.post(
        "/v1/executions",
        json={
            "reservation_id": pipeline["reservation_id"],
            "commit_sha": "9fceb02",
            "tasks": [{"type": "flash"}],
        },
        headers=CI,
    )
    assert run.status_code == 201, run.text
    clock.advance(timedelta(minutes=20))
    assert (await holds.run_once()).no_shows_released == 0
    assert await status(client, hands_on) == "active"
    assert await status(client, pipeline) == "active"
    refused = await client.post(
        f"/v1/reservations/{hands_on['reservation_id']}/checkin", headers=BOB
    )
    assert refused.status_code == 403


async def test_a_bench_type_may_allow_longer(
    client: httpx.AsyncClient, clock: ManualClock, holds: Housekeeper
) -> None:
    await add_bench(client, "bench-m", type="manual")
    slow = created(
        await book(client, bench_id="bench-m", start=AT.format("09:00"), end=AT.format("12:00"))
    )
    clock.advance(timedelta(hours=1, minutes=30))  # 30 min in: within the 45 of manual benches
    await holds.run_once()
    assert await status(client, slow) == "active"
    clock.advance(timedelta(minutes=15))
    await holds.run_once()
    assert await status(client, slow) == "released"


async def test_an_idle_hold_is_warned_then_released_unless_someone_is_busy(
    client: httpx.AsyncClient, clock: ManualClock, holds: Housekeeper
) -> None:
    await add_bench(client)
    held = created(await book(client, CI, start=AT.format("09:00"), end=AT.format("14:00")))
    run = await client.post(
        "/v1/executions",
        json={
            "reservation_id": held["reservation_id"],
            "commit_sha": "9fceb02",
            "tasks": [{"type": "flash"}, {"type": "test"}],
        },
        headers=CI,
    )
    assert run.status_code == 201
    clock.advance(timedelta(hours=1))  # 09:00
    claim = await client.post("/v1/benches/rig-1/tasks/claim", headers=AGENT1)  # activity
    task_id = claim.json()["task_id"]
    await client.post(f"/v1/tasks/{task_id}/complete", json={"result": {}}, headers=AGENT1)
    clock.advance(timedelta(minutes=29))
    await holds.run_once()
    assert (await get(client, held["reservation_id"]))["version"] == 1  # no warning yet
    clock.advance(timedelta(minutes=1))  # 30 quiet minutes: half of the 60
    assert (await holds.run_once()).idle_holds_handled == 1
    assert (await holds.run_once()).idle_holds_handled == 0  # warned once
    clock.advance(timedelta(seconds=1))
    [idle] = (await page(client, type="reservation.idle"))["items"]
    assert idle["entity"]["id"] == held["reservation_id"]
    # Activity again (the next task claimed and done): the warning no longer counts.
    clock.advance(timedelta(minutes=1))  # 09:31
    claim = await client.post("/v1/benches/rig-1/tasks/claim", headers=AGENT1)
    assert claim.status_code == 200
    await client.post(
        f"/v1/tasks/{claim.json()['task_id']}/complete", json={"result": {}}, headers=AGENT1
    )
    clock.advance(timedelta(minutes=29))  # 10:00: 29 quiet minutes
    assert (await holds.run_once()).idle_holds_handled == 0
    clock.advance(timedelta(minutes=1))  # 10:01: warned again
    assert (await holds.run_once()).idle_holds_handled == 1
    clock.advance(timedelta(minutes=29))  # 10:30: 59 quiet minutes
    await holds.run_once()
    assert await status(client, held) == "active"
    clock.advance(timedelta(minutes=1))  # 10:31: an hour without activity, warned
    await holds.run_once()
    assert await status(client, held) == "released"
    clock.advance(timedelta(seconds=1))
    assert len((await page(client, type="reservation.idle"))["items"]) == 2
    released = (await page(client, type="reservation.released"))["items"]
    assert [event["data"].get("reason") for event in released] == ["idle"]
