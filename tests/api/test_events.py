"""The event log over HTTP (JSON pages) on every store: what each change raises, in
order, with filters, positions and their limits. The live stream is in
tests/system/test_event_stream.py (it needs a real server)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from app.clock import ManualClock
from tests.api.test_benches import assert_problem
from tests.api.test_reservations import add_bench, book
from tests.conftest import ADMIN, AGENT1, ALICE, BOB, CI


async def page(
    client: httpx.AsyncClient, headers: dict[str, str] = ADMIN, **params: Any
) -> dict[str, Any]:
    response = await client.get("/v1/events", params={"format": "json", **params}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def types(body: dict[str, Any]) -> list[str]:
    return [item["type"] for item in body["items"]]


async def test_a_booking_and_its_cancel_raise_events_in_order(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await add_bench(client)
    booked = (await book(client)).json()
    clock.advance(timedelta(seconds=5))
    cancelled = await client.post(
        f"/v1/reservations/{booked['reservation_id']}/cancel", headers=ALICE
    )
    assert cancelled.status_code == 200, cancelled.text
    clock.advance(timedelta(seconds=5))

    body = await page(client)
    assert types(body) == ["bench.registered", "reservation.created", "reservation.cancelled"]
    created, gone = body["items"][1:]
    assert created["entity"] == {
        "type": "reservation",
        "id": booked["reservation_id"],
        "version": 1,
    }
    assert gone["entity"]["version"] == 2
    assert created["actor"] == "alice" and created["user_id"] == "alice"
    assert created["bench_id"] == "rig-1"
    assert created["data"]["start"] == booked["start"]
    assert created["data"]["status"] == "confirmed"
    assert gone["data"]["status"] == "cancelled"
    assert len({item["event_id"] for item in body["items"]}) == 3
    # The same events read again: the same ids and positions.
    again = await page(client, BOB)
    assert [i["event_id"] for i in again["items"]] == [i["event_id"] for i in body["items"]]
    assert [i["position"] for i in again["items"]] == [i["position"] for i in body["items"]]


async def test_a_refused_change_raises_nothing(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await add_bench(client)
    assert (await book(client)).status_code == 201
    assert (await book(client, BOB)).status_code == 409  # the window is taken
    clock.advance(timedelta(seconds=5))
    assert types(await page(client)) == ["bench.registered", "reservation.created"]


async def test_pages_resume_after_a_position_and_filter(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await add_bench(client)
    await add_bench(client, "rig-2")
    await book(client)
    await book(client, BOB, bench_id="rig-2")
    clock.advance(timedelta(seconds=5))

    first = await page(client, limit=2)
    assert types(first) == ["bench.registered", "bench.registered"]
    rest = await page(client, after=first["next_after"])
    assert types(rest) == ["reservation.created", "reservation.created"]
    assert (await page(client, after=rest["next_after"]))["items"] == []

    mine = await page(client, BOB, type="reservation.*", user_id="me")
    assert [(i["type"], i["user_id"]) for i in mine["items"]] == [("reservation.created", "bob")]
    on_rig2 = await page(client, bench_id="rig-2")
    assert types(on_rig2) == ["bench.registered", "reservation.created"]
    both = await client.get(
        "/v1/events",
        params=[("format", "json"), ("type", "bench.*"), ("type", "reservation.created")],
        headers=ADMIN,
    )
    assert len(both.json()["items"]) == 4


async def test_a_run_raises_queued_claimed_started_and_finished_with_the_verdict(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await add_bench(client)
    booked = (
        await book(client, CI, start="2026-11-25T08:00:00Z", end="2026-11-25T12:00:00Z")
    ).json()
    created = await client.post(
        "/v1/executions",
        json={
            "reservation_id": booked["reservation_id"],
            "commit_sha": "9fceb02",
            "tasks": [{"type": "flash"}],
        },
        headers=CI,
    )
    assert created.status_code == 201, created.text
    claim = await client.post("/v1/benches/rig-1/tasks/claim", headers=AGENT1)
    assert claim.status_code == 200, claim.text
    task_id = claim.json()["task_id"]
    done = await client.post(f"/v1/tasks/{task_id}/complete", json={"result": {}}, headers=AGENT1)
    assert done.status_code == 200, done.text
    clock.advance(timedelta(seconds=5))

    body = await page(client, type=["execution.*", "task.*"])
    assert types(body) == [
        "execution.queued",
        "task.claimed",
        "execution.started",
        "execution.finished",
    ]
    finished = body["items"][-1]
    assert finished["data"]["verdict"] == "passed"
    assert finished["user_id"] == "ci-bot"


async def test_bad_filters_and_positions_are_problems(client: httpx.AsyncClient) -> None:
    bad = await client.get("/v1/events", params={"type": "nothing.*"}, headers=ADMIN)
    assert_problem(bad, 422)
    assert "matches no event type" in bad.json()["detail"]
    gone = await client.get(
        "/v1/events", params={"format": "json", "after": "99999999"}, headers=ADMIN
    )
    assert_problem(gone, 410)
    assert (await client.get("/v1/events", params={"format": "json"})).status_code == 401
