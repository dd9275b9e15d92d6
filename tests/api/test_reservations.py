"""Reservations over HTTP on every store: booking rules, lifecycle, calendars, search."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.clock import ManualClock
from tests.api.test_benches import RIG1, assert_problem
from tests.conftest import ADMIN, AGENT1, ALICE, BOB, CI

TOMORROW_9 = "2026-11-26T09:00:00Z"
TOMORROW_11 = "2026-11-26T11:00:00Z"


async def add_bench(client: httpx.AsyncClient, bench_id: str = "rig-1", **fields: Any) -> None:
    body = {**RIG1, "bench_id": bench_id, **fields}
    response = await client.post("/v1/benches", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text


async def book(
    client: httpx.AsyncClient,
    headers: dict[str, str] = ALICE,
    start: str = TOMORROW_9,
    end: str = TOMORROW_11,
    **body: Any,
) -> httpx.Response:
    payload = {"start": start, "end": end, **body}
    if "capabilities" not in payload:
        payload.setdefault("bench_id", "rig-1")
    return await client.post("/v1/reservations", json=payload, headers=headers)


async def test_book_a_bench(client: httpx.AsyncClient) -> None:
    await add_bench(client)
    response = await book(client, purpose="firmware bring-up")
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/reservations/{body['reservation_id']}"
    assert response.headers["etag"] == '"1"'
    assert body["bench_id"] == "rig-1"
    assert body["user_id"] == "alice"
    assert (body["start"], body["end"]) == (TOMORROW_9, TOMORROW_11)
    assert body["status"] == "confirmed"
    assert body["purpose"] == "firmware bring-up"
    fetched = await client.get(body_location(response), headers=BOB)
    assert fetched.json() == body


def body_location(response: httpx.Response) -> str:
    return response.headers["location"]


async def test_double_booking_is_409_naming_the_conflict(client: httpx.AsyncClient) -> None:
    await add_bench(client)
    first = (await book(client)).json()
    clash = await book(client, BOB, start="2026-11-26T10:00:00Z", end="2026-11-26T12:00:00Z")
    problem = assert_problem(clash, 409)
    assert problem["conflicts"] == [
        {"reservation_id": first["reservation_id"], "start": TOMORROW_9, "end": TOMORROW_11}
    ]
    back_to_back = await book(client, BOB, start=TOMORROW_11, end="2026-11-26T12:00:00Z")
    assert back_to_back.status_code == 201


@pytest.mark.parametrize(
    ("start", "end", "status"),
    [
        ("2026-11-26T11:00:00Z", "2026-11-26T09:00:00Z", 422),  # end before start
        ("2026-11-26T09:00:00Z", "2026-11-26T09:00:00Z", 422),  # empty
        ("2026-11-25T07:58:00Z", "2026-11-25T09:00:00Z", 422),  # two minutes in the past
        ("2026-11-26T09:00:00Z", "2026-12-03T09:00:01Z", 422),  # over 168 hours
        ("2026-11-26T09:00:00", "2026-11-26T11:00:00", 422),  # naive
        ("tomorrow", "2026-11-26T11:00:00Z", 422),
    ],
)
async def test_bad_windows_are_422(
    client: httpx.AsyncClient, start: str, end: str, status: int
) -> None:
    await add_bench(client)
    assert_problem(await book(client, start=start, end=end), status)


async def test_clock_skew_and_the_longest_window_are_allowed(client: httpx.AsyncClient) -> None:
    await add_bench(client)
    assert (
        await book(client, start="2026-11-25T07:59:30Z", end="2026-11-25T09:00:00Z")
    ).status_code == 201
    longest = await book(client, start="2026-11-26T09:00:00Z", end="2026-12-03T09:00:00Z")
    assert longest.status_code == 201, longest.text


async def test_unknown_retired_and_maintenance_benches(client: httpx.AsyncClient) -> None:
    assert_problem(await book(client, bench_id="ghost"), 404)
    await add_bench(client)
    await client.patch(
        "/v1/benches/rig-1",
        json={"admin_state": "maintenance"},
        headers={**ADMIN, "If-Match": '"1"'},
    )
    problem = assert_problem(await book(client), 409)
    assert problem["admin_state"] == "maintenance"
    await client.delete("/v1/benches/rig-1", headers={**ADMIN, "If-Match": '"2"'})
    assert assert_problem(await book(client), 409)["admin_state"] == "retired"


async def test_who_may_book_and_change(client: httpx.AsyncClient) -> None:
    await add_bench(client)
    assert_problem(await book(client, AGENT1), 403)
    assert (
        await book(client, CI, start="2026-11-27T09:00:00Z", end="2026-11-27T10:00:00Z")
    ).status_code == 201
    mine = (await book(client)).json()
    url = f"/v1/reservations/{mine['reservation_id']}"
    assert_problem(await client.post(f"{url}/cancel", headers=BOB), 403)
    assert_problem(
        await client.patch(url, json={"purpose": "x"}, headers={**BOB, "If-Match": '"1"'}), 403
    )
    assert (await client.get(url, headers=BOB)).status_code == 200  # the lab is shared
    by_admin = await client.patch(
        url, json={"purpose": "admin"}, headers={**ADMIN, "If-Match": '"1"'}
    )
    assert by_admin.status_code == 200


async def test_book_by_capability_picks_a_free_matching_bench(client: httpx.AsyncClient) -> None:
    await add_bench(client, "rig-1", capabilities=["can-bus", "arm64"])
    await add_bench(client, "rig-2", capabilities=["can-bus"])
    await add_bench(client, "rig-3", capabilities=["can-bus", "arm64"])
    await add_bench(client, "rig-4", capabilities=["can-bus", "arm64"])
    await client.patch(
        "/v1/benches/rig-4",
        json={"admin_state": "maintenance"},
        headers={**ADMIN, "If-Match": '"1"'},
    )
    first = await book(client, capabilities=["can-bus", "arm64"])
    assert first.status_code == 201, first.text
    second = await book(client, BOB, capabilities=["arm64", "can-bus"])
    assert second.status_code == 201
    assert {first.json()["bench_id"], second.json()["bench_id"]} == {"rig-1", "rig-3"}
    third = await book(client, CI, capabilities=["can-bus", "arm64"])
    problem = assert_problem(third, 409)
    assert sorted(c["bench_id"] for c in problem["candidates_tried"]) == ["rig-1", "rig-3"]
    nothing = await book(client, capabilities=["quantum"])
    assert assert_problem(nothing, 409)["candidates_tried"] == []
    assert_problem(
        await client.post(
            "/v1/reservations",
            json={
                "bench_id": "rig-1",
                "capabilities": ["x"],
                "start": TOMORROW_9,
                "end": TOMORROW_11,
            },
            headers=ALICE,
        ),
        422,
    )


async def test_move_resize_and_collision(client: httpx.AsyncClient) -> None:
    await add_bench(client)
    mine = (await book(client)).json()
    await book(client, BOB, start="2026-11-26T13:00:00Z", end="2026-11-26T14:00:00Z")
    url = f"/v1/reservations/{mine['reservation_id']}"
    assert_problem(
        await client.patch(url, json={"end": "2026-11-26T12:00:00Z"}, headers=ALICE), 428
    )
    grown = await client.patch(
        url, json={"end": "2026-11-26T12:00:00Z"}, headers={**ALICE, "If-Match": '"1"'}
    )
    assert grown.status_code == 200, grown.text
    assert grown.json()["end"] == "2026-11-26T12:00:00Z"
    assert grown.headers["etag"] == '"2"'
    collide = await client.patch(
        url, json={"end": "2026-11-26T13:30:00Z"}, headers={**ALICE, "If-Match": '"2"'}
    )
    assert_problem(collide, 409)
    assert (await client.get(url, headers=ALICE)).json()["end"] == "2026-11-26T12:00:00Z"
    stale = await client.patch(url, json={"purpose": "late"}, headers={**ALICE, "If-Match": '"1"'})
    assert_problem(stale, 412)
    assert stale.headers["etag"] == '"2"'
    moved = await client.patch(
        url,
        json={"start": "2026-11-27T09:00:00+01:00", "end": "2026-11-27T10:00:00+01:00"},
        headers={**ALICE, "If-Match": '"2"'},
    )
    assert (moved.json()["start"], moved.json()["end"]) == (
        "2026-11-27T08:00:00Z",
        "2026-11-27T09:00:00Z",
    )
    # The old window is free again.
    assert (await book(client, BOB)).status_code == 201


async def test_cancel_release_and_status(client: httpx.AsyncClient, clock: ManualClock) -> None:
    await add_bench(client)
    mine = (await book(client)).json()
    url = f"/v1/reservations/{mine['reservation_id']}"
    assert_problem(await client.post(f"{url}/release", headers=ALICE), 409)  # not active yet
    clock.advance(timedelta(hours=25, minutes=30))  # 2026-11-26T09:30Z: inside the window
    assert (await client.get(url, headers=ALICE)).json()["status"] == "active"
    stale = await client.post(f"{url}/release", headers={**ALICE, "If-Match": '"7"'})
    assert_problem(stale, 412)
    released = await client.post(f"{url}/release", headers=ALICE)
    assert released.status_code == 200, released.text
    assert released.json()["status"] == "released"
    assert released.json()["end"] == "2026-11-26T09:30:00Z"
    assert released.headers["etag"] == '"2"'
    rest = await book(client, BOB, start="2026-11-26T09:30:00Z", end=TOMORROW_11)
    assert rest.status_code == 201, rest.text
    problem = assert_problem(await client.post(f"{url}/cancel", headers=ALICE), 409)
    assert problem["allowed_transitions"] == []
    theirs = rest.json()
    clock.advance(timedelta(hours=2))
    done = await client.get(f"/v1/reservations/{theirs['reservation_id']}", headers=BOB)
    assert done.json()["status"] == "completed"
    assert_problem(
        await client.post(f"/v1/reservations/{theirs['reservation_id']}/cancel", headers=BOB), 409
    )


async def test_cancel_frees_the_window_and_history_has_it_all(client: httpx.AsyncClient) -> None:
    await add_bench(client)
    mine = (await book(client, headers={**ALICE, "X-Request-ID": "book-1"})).json()
    url = f"/v1/reservations/{mine['reservation_id']}"
    await client.patch(url, json={"purpose": "moved"}, headers={**ALICE, "If-Match": '"1"'})
    cancelled = await client.post(f"{url}/cancel", headers={**ALICE, "X-Request-ID": "cancel-1"})
    assert cancelled.json()["status"] == "cancelled"
    assert (await book(client, BOB)).status_code == 201
    history = (await client.get(f"{url}/history", headers=BOB)).json()["items"]
    assert [(e["version"], e["action"], e["actor"]) for e in history] == [
        (1, "created", "alice"),
        (2, "updated", "alice"),
        (3, "cancelled", "alice"),
    ]
    assert history[0]["request_id"] == "book-1"
    assert history[2]["request_id"] == "cancel-1"
    assert history[2]["changes"] == {"status": {"from": "confirmed", "to": "cancelled"}}


async def test_lists_and_calendar(client: httpx.AsyncClient, clock: ManualClock) -> None:
    await add_bench(client)
    await add_bench(client, "rig-2")
    a = (await book(client, start="2026-11-26T12:00:00Z", end="2026-11-26T13:00:00Z")).json()
    b = (await book(client, BOB)).json()
    c = (await book(client, bench_id="rig-2")).json()
    d = (await book(client, start="2026-11-28T09:00:00Z", end="2026-11-28T10:00:00Z")).json()
    await client.post(f"/v1/reservations/{d['reservation_id']}/cancel", headers=ALICE)

    async def ids(url: str, headers: dict[str, str] = ALICE) -> list[str]:
        response = await client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        return [item["reservation_id"] for item in response.json()["items"]]

    mine = [c["reservation_id"], a["reservation_id"], d["reservation_id"]]
    assert sorted(await ids("/v1/reservations")) == sorted(mine)
    assert sorted(await ids("/v1/reservations?user_id=me")) == sorted(mine)
    assert await ids("/v1/reservations?user_id=bob") == [b["reservation_id"]]
    assert await ids("/v1/reservations?bench_id=rig-1") == [
        b["reservation_id"],
        a["reservation_id"],
        d["reservation_id"],
    ]
    assert await ids("/v1/reservations?bench_id=rig-1&status=cancelled") == [d["reservation_id"]]
    assert await ids("/v1/reservations?user_id=me&bench_id=rig-1&status=confirmed") == [
        a["reservation_id"]
    ]
    assert await ids(
        "/v1/reservations?bench_id=rig-1&from=2026-11-26T11:30:00Z&to=2026-11-27T00:00:00Z"
    ) == [a["reservation_id"]]
    calendar = await ids(
        "/v1/benches/rig-1/reservations?from=2026-11-26T00:00:00Z&to=2026-11-29T00:00:00Z"
    )
    assert calendar == [b["reservation_id"], a["reservation_id"]]
    assert_problem(await client.get("/v1/benches/ghost/reservations", headers=ALICE), 404)
    backwards = "from=2026-11-29T00:00:00Z&to=2026-11-26T00:00:00Z"
    for url in (f"/v1/benches/rig-1/reservations?{backwards}", f"/v1/reservations?{backwards}"):
        problem = assert_problem(await client.get(url, headers=ALICE), 422)
        assert problem["detail"] == "to must be after from"
    assert_problem(
        await client.get("/v1/reservations?from=2026-11-26T00:00:00", headers=ALICE), 422
    )
    clock.advance(timedelta(hours=25, minutes=30))
    assert await ids("/v1/reservations?bench_id=rig-1&status=active") == [b["reservation_id"]]


async def test_availability_finds_the_earliest_free_windows(client: httpx.AsyncClient) -> None:
    await add_bench(client, "rig-1", capabilities=["can-bus"])
    await add_bench(client, "rig-2", capabilities=["can-bus"])
    await add_bench(client, "rig-3", capabilities=["usb"])
    await book(client, start="2026-11-26T08:00:00Z", end="2026-11-26T09:00:00Z")
    await book(client, start="2026-11-26T10:00:00Z", end="2026-11-26T12:00:00Z")
    await book(client, bench_id="rig-2", start="2026-11-26T08:00:00Z", end="2026-11-26T11:30:00Z")
    url = (
        "/v1/availability?capability=can-bus&duration=PT2H"
        "&from=2026-11-26T08:00:00Z&to=2026-11-26T16:00:00Z"
    )
    response = await client.get(url, headers=BOB)
    assert response.status_code == 200, response.text
    assert response.json()["items"] == [
        {"bench_id": "rig-2", "start": "2026-11-26T11:30:00Z", "end": "2026-11-26T16:00:00Z"},
        {"bench_id": "rig-1", "start": "2026-11-26T12:00:00Z", "end": "2026-11-26T16:00:00Z"},
    ]
    one_hour = await client.get(url.replace("PT2H", "PT1H") + "&bench_id=rig-1", headers=BOB)
    assert [(i["start"], i["end"]) for i in one_hour.json()["items"]] == [
        ("2026-11-26T09:00:00Z", "2026-11-26T10:00:00Z"),
        ("2026-11-26T12:00:00Z", "2026-11-26T16:00:00Z"),
    ]
    first = response.json()["items"][0]
    booked = await book(
        client, BOB, bench_id=first["bench_id"], start=first["start"], end="2026-11-26T13:30:00Z"
    )
    assert booked.status_code == 201
    assert_problem(await client.get(url.replace("PT2H", "PT0S"), headers=BOB), 422)
    assert_problem(await client.get(url.replace("PT2H", "soon"), headers=BOB), 422)


async def test_idempotent_booking_replays_and_refuses_another_body(
    client: httpx.AsyncClient,
) -> None:
    await add_bench(client)
    key = {**ALICE, "Idempotency-Key": "book-once-1"}
    first = await book(client, key)
    again = await book(client, key)
    assert first.status_code == again.status_code == 201
    assert again.json()["reservation_id"] == first.json()["reservation_id"]
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    other_body = await book(client, key, start="2026-11-27T09:00:00Z", end="2026-11-27T10:00:00Z")
    assert_problem(other_body, 422)
    # Keys belong to their caller: bob's same key is his own.
    bobs = await book(
        client,
        {**BOB, "Idempotency-Key": "book-once-1"},
        start="2026-11-27T09:00:00Z",
        end="2026-11-27T10:00:00Z",
    )
    assert bobs.status_code == 201
    mine = (await client.get("/v1/reservations", headers=ALICE)).json()["items"]
    assert len(mine) == 1


# Rounds of 50 racing bookings on a fresh bench each: 8 make 400 racing requests per store
# (20 took 80 s on DynamoDB-on-moto, a seventh of the suite, for no finding more).
RACE_ROUNDS = 8


async def test_fifty_racing_bookings_have_one_winner(client: httpx.AsyncClient) -> None:
    """Twenty rounds of fifty overlapping bookings of one bench: one 201 each round."""
    users = [ALICE, BOB, CI, ADMIN]
    for round_ in range(RACE_ROUNDS):
        bench_id = f"race-{round_}"
        await add_bench(client, bench_id)

        async def attempt(n: int, bench_id: str = bench_id) -> httpx.Response:
            start = f"2026-11-26T09:{n:02d}:00Z"
            return await book(
                client, users[n % 4], bench_id=bench_id, start=start, end="2026-11-26T11:00:00Z"
            )

        responses = await asyncio.gather(*(attempt(n) for n in range(50)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201] + [409] * 49, (round_, statuses)
        winner = next(r for r in responses if r.status_code == 201).json()
        calendar = await client.get(
            f"/v1/benches/{bench_id}/reservations?from=2026-11-26T00:00:00Z", headers=ALICE
        )
        assert [r["reservation_id"] for r in calendar.json()["items"]] == [winner["reservation_id"]]


async def test_fifty_racing_capability_bookings_fill_ten_benches_once(
    client: httpx.AsyncClient,
) -> None:
    for n in range(10):
        await add_bench(client, f"cap-{n}", capabilities=["can-bus"])
    users = [ALICE, BOB, CI, ADMIN]
    responses = await asyncio.gather(
        *(book(client, users[n % 4], capabilities=["can-bus"]) for n in range(50))
    )
    won = [r.json()["bench_id"] for r in responses if r.status_code == 201]
    assert sorted(r.status_code for r in responses) == [201] * 10 + [409] * 40
    assert sorted(won) == [f"cap-{n}" for n in range(10)]


async def test_fifty_racing_posts_with_one_key_book_once(client: httpx.AsyncClient) -> None:
    await add_bench(client)
    key = {**ALICE, "Idempotency-Key": "ci-job-42"}
    responses = await asyncio.gather(*(book(client, key) for _ in range(50)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["reservation_id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 49


async def test_the_calendar_pages_on_without_from_while_time_moves(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await add_bench(client)
    for hour in (10, 12, 14):
        booked = await book(
            client, start=f"2026-11-26T{hour}:00:00Z", end=f"2026-11-26T{hour}:30:00Z"
        )
        assert booked.status_code == 201, booked.text
    first = (await client.get("/v1/benches/rig-1/reservations?limit=2", headers=ALICE)).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    clock.advance(timedelta(minutes=5))  # "now", the default `from`, has moved
    rest = await client.get(
        f"/v1/benches/rig-1/reservations?limit=2&cursor={first['next_cursor']}", headers=ALICE
    )
    assert rest.status_code == 200, rest.text
    assert [r["start"] for r in rest.json()["items"]] == ["2026-11-26T14:00:00Z"]
