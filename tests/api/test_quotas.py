"""Quotas and usage over HTTP, on every store: admins set a user's or a team's limits,
bookings over them are 403 with the figures, admins are exempt, two bookings at once
cannot both squeeze under a limit, and usage says booked and used hours per day."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx

from app.clock import ManualClock
from tests.api.test_advancing import AT, created
from tests.api.test_benches import assert_problem
from tests.api.test_reservations import add_bench, book
from tests.conftest import ADMIN, AGENT1, ALICE, BOB, CAROL, CI, DAVE

DAY2 = "2026-11-26T{}:00Z"


async def set_quota(
    client: httpx.AsyncClient, kind: str, name: str, **limits: Any
) -> dict[str, Any]:
    url = f"/v1/quotas/{kind}/{name}"
    current = await client.get(url, headers=ADMIN)
    assert current.status_code == 200, current.text
    answer = await client.put(
        url, json=limits, headers={**ADMIN, "If-Match": current.headers["etag"]}
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_admins_set_quotas_with_if_match_and_users_read_their_own(
    client: httpx.AsyncClient,
) -> None:
    default = await client.get("/v1/quotas/user/alice", headers=ALICE)
    assert default.status_code == 200 and default.headers["etag"] == '"0"'
    assert default.json()["max_booked_hours_7d"] is None
    assert_problem(
        await client.put("/v1/quotas/user/alice", json={"max_concurrent": 2}, headers=ADMIN), 428
    )
    quota = await set_quota(client, "user", "alice", max_booked_hours_7d=40, max_concurrent=2)
    assert (quota["version"], quota["max_booked_hours_7d"]) == (1, 40)
    stale = await client.put(
        "/v1/quotas/user/alice", json={"max_concurrent": 3}, headers={**ADMIN, "If-Match": '"0"'}
    )
    assert_problem(stale, 412)
    assert_problem(
        await client.put("/v1/quotas/user/alice", json={}, headers={**ALICE, "If-Match": '"1"'}),
        403,
    )
    assert_problem(await client.get("/v1/quotas/user/alice", headers=BOB), 403)
    assert (await client.get("/v1/quotas/team/hw", headers=CAROL)).status_code == 200
    history = await client.get("/v1/quotas/user/alice", headers=ADMIN)
    assert history.json()["version"] == 1


async def test_over_quota_is_403_saying_which_limit_the_figures_and_when_room_frees(
    client: httpx.AsyncClient,
) -> None:
    await add_bench(client)
    await add_bench(client, "rig-2")
    await set_quota(client, "user", "alice", max_booked_hours_7d=5, max_window_hours=4)
    created(await book(client, start=AT.format("09:00"), end=AT.format("12:00")))
    too_long = assert_problem(
        await book(client, start=DAY2.format("09:00"), end=DAY2.format("14:00")), 403
    )
    assert too_long["limit"] == "max_window_hours"
    assert "a window of 5 h > 4 h" in too_long["detail"]
    over = assert_problem(
        await book(client, bench_id="rig-2", start=DAY2.format("09:00"), end=DAY2.format("12:00")),
        403,
    )
    assert over["limit"] == "max_booked_hours_7d"
    assert "requested 3 h + 3 h booked in the 7 days to its end > 5 h" in over["detail"]
    assert over["frees_at"] == "2026-12-02T12:00:00Z"
    assert "3 h frees on 2026-12-02T12:00:00Z" in over["detail"]
    # Two hours fit; admins are exempt.
    created(
        await book(client, bench_id="rig-2", start=DAY2.format("09:00"), end=DAY2.format("11:00"))
    )
    created(
        await book(
            client, ADMIN, bench_id="rig-2", start=DAY2.format("13:00"), end=DAY2.format("23:00")
        )
    )


async def test_a_cancel_gives_room_back_and_extend_is_checked_too(
    client: httpx.AsyncClient,
) -> None:
    await add_bench(client)
    await set_quota(client, "user", "alice", max_booked_hours_7d=3)
    first = created(await book(client, start=AT.format("09:00"), end=AT.format("12:00")))
    assert_problem(await book(client, start=DAY2.format("09:00"), end=DAY2.format("10:00")), 403)
    extend = await client.post(
        f"/v1/reservations/{first['reservation_id']}/extend", json={"by": "PT1H"}, headers=ALICE
    )
    assert assert_problem(extend, 403)["limit"] == "max_booked_hours_7d"
    await client.post(f"/v1/reservations/{first['reservation_id']}/cancel", headers=ALICE)
    created(await book(client, start=DAY2.format("09:00"), end=DAY2.format("10:00")))


async def test_team_limits_count_every_member(client: httpx.AsyncClient) -> None:
    await add_bench(client)
    await add_bench(client, "rig-2")
    await set_quota(client, "team", "hw", max_concurrent=1)
    created(await book(client, CAROL, start=AT.format("09:00"), end=AT.format("12:00")))
    refused = assert_problem(
        await book(
            client, DAVE, bench_id="rig-2", start=AT.format("10:00"), end=AT.format("11:00")
        ),
        403,
    )
    assert "team 'hw'" in refused["detail"] and refused["limit"] == "max_concurrent"
    created(
        await book(client, DAVE, bench_id="rig-2", start=AT.format("12:00"), end=AT.format("13:00"))
    )
    created(
        await book(
            client, ALICE, bench_id="rig-2", start=AT.format("10:00"), end=AT.format("11:00")
        )
    )


async def test_concurrent_bookings_cannot_both_squeeze_under_a_limit(
    client: httpx.AsyncClient,
) -> None:
    benches = [f"rig-{n}" for n in range(1, 9)]
    for bench in benches:
        await add_bench(client, bench)
    await set_quota(client, "user", "alice", max_booked_hours_7d=2)
    answers = await asyncio.gather(
        *(
            book(client, bench_id=bench, start=AT.format("09:00"), end=AT.format("11:00"))
            for bench in benches
        )
    )
    assert sorted(answer.status_code for answer in answers) == [201] + [403] * 7


async def test_usage_says_booked_and_used_hours_per_day(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await add_bench(client)
    booked = created(await book(client, CI, start=AT.format("08:00"), end=AT.format("12:00")))
    run = await client.post(
        "/v1/executions",
        json={
            "reservation_id": booked["reservation_id"],
            "commit_sha": "9fceb02",
            "tasks": [{"type": "flash", "timeout_s": 3600}],
        },
        headers=CI,
    )
    assert run.status_code == 201
    clock.advance(timedelta(minutes=30))
    task = (await client.post("/v1/benches/rig-1/tasks/claim", headers=AGENT1)).json()
    for _ in range(90):  # 45 minutes of work, the agent heartbeating its lease every 30 s
        clock.advance(timedelta(seconds=30))
        beat = await client.post(f"/v1/tasks/{task['task_id']}/heartbeat", headers=AGENT1)
        assert beat.status_code == 200, beat.text
    done = await client.post(
        f"/v1/tasks/{task['task_id']}/complete", json={"result": {}}, headers=AGENT1
    )
    assert done.status_code == 200, done.text
    clock.advance(timedelta(hours=4))  # 13:15: the booking is over
    usage = await client.get("/v1/usage", params={"user_id": "me"}, headers=CI)
    assert usage.status_code == 200, usage.text
    body = usage.json()
    assert (body["user_id"], body["booked_hours"], body["used_hours"]) == ("ci-bot", 4.0, 0.75)
    today = [day for day in body["days"] if day["booked_hours"]]
    assert today == [{"day": "2026-11-25T00:00:00Z", "booked_hours": 4.0, "used_hours": 0.75}]
    assert len(body["days"]) == 30
    assert_problem(await client.get("/v1/usage", params={"user_id": "ci-bot"}, headers=BOB), 403)
    assert (
        await client.get("/v1/usage", params={"user_id": "ci-bot"}, headers=ADMIN)
    ).status_code == 200
