"""Bookings that advance, on every store: booked at once into the earliest free window,
moved up by themselves when an earlier one frees, best first (priority, fair share,
age), never later than they were and never before not_before."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from app.clock import ManualClock
from app.ops.housekeeping import Housekeeper
from tests.api.test_benches import RIG1, assert_problem
from tests.api.test_events import page, types
from tests.api.test_reservations import add_bench, book
from tests.conftest import ADMIN, ALICE, BOB, CAROL, CI

# The test clock starts at 2026-11-25T08:00Z.
AT = "2026-11-25T{}:00Z"


async def advancing(
    client: httpx.AsyncClient, headers: dict[str, str] = ALICE, **body: Any
) -> httpx.Response:
    payload = {"advance": True, "duration": "PT1H", **body}
    if "capabilities" not in payload:
        payload.setdefault("bench_id", "rig-1")
    return await client.post("/v1/reservations", json=payload, headers=headers)


def created(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def get(client: httpx.AsyncClient, reservation_id: str) -> dict[str, Any]:
    answer = await client.get(f"/v1/reservations/{reservation_id}", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def cancel(
    client: httpx.AsyncClient, reservation: dict[str, Any], who: dict[str, str]
) -> None:
    answer = await client.post(
        f"/v1/reservations/{reservation['reservation_id']}/cancel", headers=who
    )
    assert answer.status_code == 200, answer.text


async def test_booked_at_the_earliest_window_then_moved_up_when_one_frees(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await add_bench(client)
    ahead = created(await book(client, BOB, start=AT.format("09:00"), end=AT.format("12:00")))
    mine = created(await advancing(client, duration="PT2H", not_before=AT.format("09:00")))
    assert (mine["start"], mine["end"]) == (AT.format("12:00"), AT.format("14:00"))
    assert (mine["advance"], mine["priority"]) == (True, 50)

    await cancel(client, ahead, BOB)  # 09:00-12:00 frees: mine moves up at once
    moved = await get(client, mine["reservation_id"])
    assert (moved["start"], moved["end"]) == (AT.format("09:00"), AT.format("11:00"))
    assert moved["version"] == 2
    clock.advance(timedelta(seconds=1))
    [advanced] = (await page(client, type="reservation.advanced"))["items"]
    assert advanced["entity"] == {"type": "reservation", "id": mine["reservation_id"], "version": 2}
    assert advanced["actor"] == "scheduler"
    history = await client.get(f"/v1/reservations/{mine['reservation_id']}/history", headers=ALICE)
    assert [e["action"] for e in history.json()["items"]] == ["created", "advanced"]


async def test_a_freed_window_that_starts_now_starts_it_now(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await add_bench(client)
    ahead = created(await book(client, BOB, start=AT.format("08:00"), end=AT.format("10:00")))
    mine = created(await advancing(client))
    assert mine["start"] == AT.format("10:00")
    clock.advance(timedelta(minutes=30))  # 08:30: bob releases his active window
    released = await client.post(f"/v1/reservations/{ahead['reservation_id']}/release", headers=BOB)
    assert released.status_code == 200, released.text
    moved = await get(client, mine["reservation_id"])
    assert (moved["start"], moved["status"]) == ("2026-11-25T08:30:00Z", "active")


async def test_who_moves_up_first_priority_then_fair_share_then_age(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    await add_bench(client)
    # Bob used the lab this morning (06:00-08:00 has passed): he used more than carol.
    clock.set(clock.now() - timedelta(hours=3))
    created(await book(client, BOB, start=AT.format("05:30"), end=AT.format("07:30")))
    clock.advance(timedelta(hours=3))
    created(await book(client, ADMIN, start=AT.format("08:00"), end=AT.format("09:00")))
    blocker = created(await book(client, ADMIN, start=AT.format("09:00"), end=AT.format("10:00")))
    created(await book(client, ADMIN, start=AT.format("10:00"), end=AT.format("20:00")))
    # Four advancing requests queue after 20:00, in this order of asking.
    bob = created(await advancing(client, BOB))
    carol = created(await advancing(client, CAROL))
    alice = created(await advancing(client, ALICE))
    urgent = created(await advancing(client, CI, priority=90))
    order = [bob, carol, alice, urgent]
    assert [r["start"] for r in order] == [
        AT.format(h) for h in ("20:00", "21:00", "22:00", "23:00")
    ]

    async def at_nine() -> list[str]:
        found = []
        for reservation in order:
            now = await get(client, reservation["reservation_id"])
            if now["start"] == AT.format("09:00") and now["status"] != "cancelled":
                found.append(reservation["reservation_id"])
        return found

    # Each time 09:00 frees (its holder cancels), one waiting request moves into it.
    holder = blocker
    for expected in (urgent, carol, alice, bob):  # priority 90; then no use this week, by age
        await cancel(client, holder, ADMIN)
        assert await at_nine() == [expected["reservation_id"]]
        holder = expected
    clock.advance(timedelta(seconds=1))


async def test_latest_start_and_priorities_are_checked(client: httpx.AsyncClient) -> None:
    await add_bench(client)
    await book(client, BOB, start=AT.format("08:00"), end=AT.format("18:00"))
    refused = await advancing(client, latest_start=AT.format("12:00"))
    problem = assert_problem(refused, 409)
    assert problem["earliest_start"] == AT.format("18:00")
    assert "2026-11-25T18:00:00Z" in problem["detail"]
    assert_problem(await advancing(client, priority=60), 403)  # users ask at most 50
    assert (await advancing(client, CI, priority=60)).status_code == 201


async def test_a_capability_booking_moves_to_another_bench_and_never_later(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    await add_bench(client, "rig-1", capabilities=["can-bus"])
    await add_bench(client, "rig-2", capabilities=["can-bus"])
    for bench in ("rig-1", "rig-2"):
        await book(client, BOB, bench_id=bench, start=AT.format("08:00"), end=AT.format("12:00"))
    late = created(
        await book(client, BOB, bench_id="rig-2", start=AT.format("12:00"), end=AT.format("13:00"))
    )
    mine = created(await advancing(client, capabilities=["can-bus"]))
    assert (mine["bench_id"], mine["start"]) == ("rig-1", AT.format("12:00"))
    await cancel(client, late, BOB)  # rig-2 12:00 frees: the same start, not earlier
    assert (await get(client, mine["reservation_id"]))["bench_id"] == "rig-1"
    clock.advance(timedelta(hours=1))
    rig2_morning = (await client.get("/v1/benches/rig-2/reservations", headers=BOB)).json()[
        "items"
    ][0]
    await client.post(f"/v1/reservations/{rig2_morning['reservation_id']}/release", headers=BOB)
    moved = await get(client, mine["reservation_id"])
    assert (moved["bench_id"], moved["start"]) == ("rig-2", "2026-11-25T09:00:00Z")
    await housekeeper.run_once()
    assert (await get(client, mine["reservation_id"]))["start"] == "2026-11-25T09:00:00Z"


async def test_not_before_is_kept(client: httpx.AsyncClient) -> None:
    await add_bench(client)
    ahead = created(await book(client, BOB, start=AT.format("08:00"), end=AT.format("16:00")))
    mine = created(await advancing(client, not_before=AT.format("14:00")))
    assert mine["start"] == AT.format("16:00")
    await cancel(client, ahead, BOB)
    assert (await get(client, mine["reservation_id"]))["start"] == AT.format("14:00")


async def test_extend_is_atomic_and_names_who_holds_the_time_after(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/v1/benches", json=RIG1, headers=ADMIN)
    mine = created(await book(client, start=AT.format("09:00"), end=AT.format("10:00")))
    created(await book(client, BOB, start=AT.format("11:00"), end=AT.format("12:00")))
    url = f"/v1/reservations/{mine['reservation_id']}/extend"
    longer = await client.post(url, json={"by": "PT1H"}, headers=ALICE)
    assert longer.status_code == 200, longer.text
    assert longer.json()["end"] == AT.format("11:00")
    refused = assert_problem(await client.post(url, json={"by": "PT30M"}, headers=ALICE), 409)
    assert "bob from 2026-11-25T11:00:00Z" in refused["detail"]
    assert refused["conflicts"][0]["user_id"] == "bob"
    assert_problem(await client.post(url, json={"by": "PT30M"}, headers=BOB), 403)
    assert (await get(client, mine["reservation_id"]))["end"] == AT.format("11:00")


async def test_the_stream_reports_an_advance(client: httpx.AsyncClient, clock: ManualClock) -> None:
    await add_bench(client)
    ahead = created(await book(client, BOB, start=AT.format("08:00"), end=AT.format("10:00")))
    created(await advancing(client))
    await cancel(client, ahead, BOB)
    clock.advance(timedelta(seconds=1))
    assert types(await page(client, ALICE, user_id="me", type="reservation.*")) == [
        "reservation.created",
        "reservation.advanced",
    ]
