"""Bench health on every store: bookings that know their bench is down (at risk, healed
onto a spare, recovered), health reports and run outcomes that quarantine a bench,
maintenance windows, the pre-booking health check, and a bench's record. Liveness is
driven by the test clock and housekeeping's pass, as in production."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.clock import ManualClock
from app.ops.housekeeping import Housekeeper
from app.settings import Settings
from app.store.base import Store
from tests.api.test_advancing import AT, created, get
from tests.api.test_events import page
from tests.api.test_reservations import add_bench
from tests.conftest import ADMIN, AGENT1, AGENT2, ALICE, BOB, CI

BOOTH = ["can-bus", "arm64"]  # every test bench's capabilities (RIG1's)


async def beat(
    client: httpx.AsyncClient, bench_id: str, headers: dict[str, str] = ADMIN, **details: Any
) -> dict[str, Any]:
    answer = await client.post(
        f"/v1/benches/{bench_id}/heartbeats",
        json={"agent_version": "1.0.0", "details": details},
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def bench(client: httpx.AsyncClient, bench_id: str) -> dict[str, Any]:
    answer = await client.get(f"/v1/benches/{bench_id}", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def reserve(
    client: httpx.AsyncClient, start: str, end: str, headers: dict[str, str] = ALICE, **body: Any
) -> dict[str, Any]:
    payload = {"start": AT.format(start), "end": AT.format(end), **body}
    if "capabilities" not in payload:
        payload.setdefault("bench_id", "rig-1")
    return created(await client.post("/v1/reservations", json=payload, headers=headers))


async def history(client: httpx.AsyncClient, reservation_id: str) -> list[dict[str, Any]]:
    answer = await client.get(f"/v1/reservations/{reservation_id}/history", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def events(client: httpx.AsyncClient, type: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await page(client, type=type))["items"]
    return items


async def online(client: httpx.AsyncClient, *bench_ids: str) -> None:
    for bench_id in bench_ids:
        await add_bench(client, bench_id)
        await beat(client, bench_id)


async def test_a_bench_going_offline_marks_its_bookings_and_coming_back_clears_them(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    await online(client, "rig-1")
    under_way = await reserve(client, "08:00", "12:00")  # mid-booking: it started at 08:00
    soon = await reserve(client, "12:00", "13:00", headers=BOB)
    far = created(
        await client.post(
            "/v1/reservations",
            json={
                "bench_id": "rig-1",
                "start": "2026-11-28T09:00:00Z",
                "end": "2026-11-28T10:00:00Z",
            },
            headers=ALICE,
        )
    )
    await housekeeper.run_once()
    assert (await get(client, under_way["reservation_id"]))["at_risk"] is None

    clock.advance(timedelta(seconds=89))  # 3 x 30 s without a heartbeat: still online
    await housekeeper.run_once()
    assert (await get(client, under_way["reservation_id"]))["at_risk"] is None
    clock.advance(timedelta(seconds=1))
    report = await housekeeper.run_once()
    assert report.reservations_protected == 2
    for marked in (under_way, soon):
        body = await get(client, marked["reservation_id"])
        assert body["at_risk"] == {"reason": "offline", "since": "2026-11-25T08:01:30Z"}
        assert body["version"] == 1  # not the holder's change: their If-Match still holds
    assert (await get(client, far["reservation_id"]))["at_risk"] is None  # beyond 24 h
    told = await events(client, "reservation.at_risk")
    assert sorted(e["user_id"] for e in told) == ["alice", "bob"]
    assert {e["data"]["at_risk"]["reason"] for e in told} == {"offline"}
    assert (await housekeeper.run_once()).reservations_protected == 0  # marked once

    await beat(client, "rig-1")  # back before bob's window starts
    assert (await housekeeper.run_once()).reservations_protected == 2
    assert (await get(client, soon["reservation_id"]))["at_risk"] is None
    assert len(await events(client, "reservation.recovered")) == 2
    cancelled = await client.post(
        f"/v1/reservations/{soon['reservation_id']}/cancel",
        headers={**BOB, "If-Match": '"1"'},
    )
    assert cancelled.status_code == 200, cancelled.text


async def test_a_capability_booking_moves_to_the_spare_bench(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    await online(client, "rig-1")
    booked = await reserve(client, "10:00", "11:00", capabilities=["can-bus"])
    assert booked["bench_id"] == "rig-1"
    await online(client, "rig-2")  # the spare
    await housekeeper.run_once()
    clock.advance(timedelta(seconds=60))
    await beat(client, "rig-2")  # rig-1's agent stopped; rig-2's goes on
    clock.advance(timedelta(seconds=30))
    await housekeeper.run_once()

    moved = await get(client, booked["reservation_id"])
    assert (moved["bench_id"], moved["at_risk"]) == ("rig-2", None)
    assert (moved["start"], moved["end"]) == (AT.format("10:00"), AT.format("11:00"))
    [swap] = await events(client, "reservation.swapped")
    assert swap["data"]["from_bench_id"] == "rig-1" and swap["data"]["reason"] == "offline"
    assert (swap["actor"], swap["user_id"]) == ("health-monitor", "alice")
    last = (await history(client, booked["reservation_id"]))[-1]
    assert last["action"] == "swapped"
    assert last["changes"]["bench_id"] == {"from": "rig-1", "to": "rig-2"}
    assert last["changes"]["reason"] == {"from": None, "to": "offline"}


async def test_a_booking_by_id_stays_and_is_offered_alternatives_and_a_swap(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    await online(client, "rig-1", "rig-2", "rig-3")
    mine = await reserve(client, "10:00", "11:00")
    await reserve(client, "09:30", "10:30", headers=BOB, bench_id="rig-3")  # rig-3 is taken
    clock.advance(timedelta(seconds=60))
    await beat(client, "rig-2")
    await beat(client, "rig-3")
    clock.advance(timedelta(seconds=30))
    await housekeeper.run_once()
    body = await get(client, mine["reservation_id"])
    assert (body["bench_id"], body["at_risk"]["reason"]) == ("rig-1", "offline")  # no allow_swap

    offered = await client.get(
        f"/v1/reservations/{mine['reservation_id']}/alternatives", headers=ALICE
    )
    assert offered.status_code == 200, offered.text
    assert offered.json()["items"] == [
        {
            "bench_id": "rig-2",
            "start": AT.format("10:00"),
            "end": AT.format("11:00"),
            "same_window": True,
        }
    ]
    url = f"/v1/reservations/{mine['reservation_id']}/swap"
    refused = await client.post(url, json={"bench_id": "rig-3"}, headers=ALICE)
    assert refused.status_code == 409, refused.text  # taken 09:30-10:30
    assert (await client.post(url, json={"bench_id": "rig-2"}, headers=BOB)).status_code == 403
    stale = await client.post(url, json={"bench_id": "rig-2"}, headers={**ALICE, "If-Match": '"7"'})
    assert stale.status_code == 412
    swapped = await client.post(url, json={"bench_id": "rig-2"}, headers=ALICE)
    assert swapped.status_code == 200, swapped.text
    assert (swapped.json()["bench_id"], swapped.json()["at_risk"]) == ("rig-2", None)
    assert swapped.headers["etag"] == '"2"'


async def test_two_heals_race_for_one_spare_one_gets_it_the_other_is_offered_the_nearest(
    client: httpx.AsyncClient, clock: ManualClock, settings: Settings, store: Store
) -> None:
    await online(client, "rig-1", "rig-2", "rig-3")
    first = await reserve(client, "10:00", "11:00", bench_id="rig-1", allow_swap=True)
    second = await reserve(client, "10:00", "11:00", headers=BOB, bench_id="rig-2", allow_swap=True)
    clock.advance(timedelta(seconds=60))
    await beat(client, "rig-3")
    clock.advance(timedelta(seconds=30))  # rig-1 and rig-2 are offline; rig-3 is the spare
    keepers = [Housekeeper(store, clock, settings) for _ in range(4)]
    reports = await asyncio.gather(*(keeper.run_once() for keeper in keepers))

    after = [await get(client, r["reservation_id"]) for r in (first, second)]
    on_spare = [r for r in after if r["bench_id"] == "rig-3"]
    stuck = [r for r in after if r["bench_id"] != "rig-3"]
    assert len(on_spare) == 1 and len(stuck) == 1
    assert on_spare[0]["at_risk"] is None and stuck[0]["at_risk"]["reason"] == "offline"
    assert len(await events(client, "reservation.swapped")) == 1
    assert sum(r.reservations_protected for r in reports) >= 3  # 2 marks + 1 swap at least
    offered = await client.get(
        f"/v1/reservations/{stuck[0]['reservation_id']}/alternatives", headers=ADMIN
    )
    assert offered.json()["items"] == [
        {
            "bench_id": "rig-3",
            "start": AT.format("11:00"),
            "end": AT.format("12:00"),
            "same_window": False,
        }
    ]


async def test_concurrent_swaps_onto_one_bench_exactly_one_wins(
    client: httpx.AsyncClient,
) -> None:
    await online(client, "rig-1", "rig-2", "rig-3", "rig-4", "rig-5")
    holders = [ALICE, BOB, CI, ADMIN]
    bookings = [
        await reserve(client, "10:00", "11:00", headers=who, bench_id=f"rig-{n}")
        for n, who in enumerate(holders, start=1)
    ]
    answers = await asyncio.gather(
        *(
            client.post(
                f"/v1/reservations/{r['reservation_id']}/swap",
                json={"bench_id": "rig-5"},
                headers=who,
            )
            for r, who in zip(bookings, holders, strict=True)
        )
    )
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
    calendar = await client.get("/v1/benches/rig-5/reservations", headers=ADMIN)
    assert len(calendar.json()["items"]) == 1


async def test_booking_an_offline_bench_by_id_is_marked_at_once_and_capability_booking_skips_it(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    await online(client, "rig-1", "rig-2")
    await add_bench(client, "rig-3")  # hand-operated: never heartbeats
    clock.advance(timedelta(seconds=60))
    await beat(client, "rig-2")
    clock.advance(timedelta(seconds=30))  # rig-1 is offline
    by_id = await reserve(client, "10:00", "11:00")
    assert by_id["at_risk"] == {"reason": "offline", "since": "2026-11-25T08:01:30Z"}
    manual = await reserve(client, "10:00", "11:00", bench_id="rig-3")
    assert manual["at_risk"] is None  # unmonitored: liveness never marks it
    for _ in range(3):  # every capability booking soon goes to the online bench first
        got = await reserve(client, "12:00", "13:00", headers=BOB, capabilities=["can-bus"])
        assert got["bench_id"] in ("rig-2", "rig-3") and got["at_risk"] is None
        cancel = await client.post(f"/v1/reservations/{got['reservation_id']}/cancel", headers=BOB)
        assert cancel.status_code == 200
    await housekeeper.run_once()
    assert (await get(client, manual["reservation_id"]))["at_risk"] is None
    assert (await bench(client, "rig-3"))["status"] == "unmonitored"


async def test_quarantine_after_n_failing_health_reports_not_n_minus_one(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await online(client, "rig-1", "rig-2")
    booked = await reserve(client, "10:00", "11:00", capabilities=["can-bus"])
    sick = booked["bench_id"]
    agent = AGENT1 if sick == "rig-1" else AGENT2
    for n in (1, 2):
        await beat(client, sick, agent, health="failing", health_message="no JTAG")
        state = await bench(client, sick)
        assert state["admin_state"] == "active"
        assert state["health"]["status"] == "failing" and state["health"]["consecutive"] == n
    assert (await get(client, booked["reservation_id"]))["bench_id"] != sick  # healed at 1
    await beat(client, sick, agent, health="failing", health_message="no JTAG")
    state = await bench(client, sick)
    assert state["admin_state"] == "quarantined"
    assert state["quarantine"]["reason"] == "health_failures"
    assert state["quarantine"]["by"] == "health-monitor"
    assert state["quarantine"]["evidence"]["consecutive_failures"] == 3
    [event] = await events(client, "bench.quarantined")
    assert event["actor"] == "health-monitor"
    entries = (await client.get(f"/v1/benches/{sick}/history", headers=ADMIN)).json()["items"]
    assert entries[-1]["action"] == "quarantined"
    assert entries[-1]["changes"]["quarantine"]["to"]["evidence"]["message"] == "no JTAG"
    refused = await client.post(
        "/v1/reservations",
        json={"bench_id": sick, "start": AT.format("14:00"), "end": AT.format("15:00")},
        headers=ALICE,
    )
    assert refused.status_code == 409  # quarantined benches are not booked

    for _ in range(5):  # passing reports do not clear an automatic quarantine by default
        await beat(client, sick, agent, health="ok")
    assert (await bench(client, sick))["admin_state"] == "quarantined"
    no_if_match = await client.patch(
        f"/v1/benches/{sick}", json={"admin_state": "active"}, headers=ADMIN
    )
    assert no_if_match.status_code == 428
    cleared = await client.patch(
        f"/v1/benches/{sick}",
        json={"admin_state": "active"},
        headers={**ADMIN, "If-Match": f'"{state["version"]}"'},
    )
    assert cleared.status_code == 200, cleared.text
    assert (cleared.json()["admin_state"], cleared.json()["quarantine"]) == ("active", None)


async def test_an_admin_s_clearing_restarts_the_count(client: httpx.AsyncClient) -> None:
    await online(client, "rig-1")
    for _ in range(4):
        await beat(client, "rig-1", AGENT1, health="failing", health_message="fan")
    state = await bench(client, "rig-1")
    assert state["admin_state"] == "quarantined"
    cleared = await client.patch(
        "/v1/benches/rig-1",
        json={"admin_state": "active"},
        headers={**ADMIN, "If-Match": f'"{state["version"]}"'},
    )
    assert cleared.status_code == 200, cleared.text
    # Still failing, but it takes three new failing reports to quarantine it again.
    for _ in range(2):
        await beat(client, "rig-1", AGENT1, health="failing", health_message="fan")
    assert (await bench(client, "rig-1"))["admin_state"] == "active"
    await beat(client, "rig-1", AGENT1, health="failing", health_message="fan")
    assert (await bench(client, "rig-1"))["admin_state"] == "quarantined"


async def test_an_agent_reports_its_bench_broken_at_once(client: httpx.AsyncClient) -> None:
    await online(client, "rig-1")
    await beat(client, "rig-1", AGENT1, health="failing", health_message="PSU", quarantine=True)
    state = await bench(client, "rig-1")
    assert (state["admin_state"], state["quarantine"]["reason"]) == ("quarantined", "agent_report")
    bad = await client.post(
        "/v1/benches/rig-1/heartbeats",
        json={"agent_version": "1", "details": {"health": "so-so"}},
        headers=AGENT1,
    )
    assert bad.status_code == 422, bad.text


@pytest.fixture
def auto_clear(settings: Settings) -> Settings:
    return settings.model_copy(update={"quarantine_auto_clear": 2})


async def test_passing_reports_clear_an_automatic_quarantine_when_configured(
    auto_clear: Settings, store: Store, clock: ManualClock
) -> None:
    from asgi_lifespan import LifespanManager

    from app.main import create_app

    app = create_app(auto_clear, store=store, clock=clock)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await online(client, "rig-1")
            for _ in range(3):
                await beat(client, "rig-1", AGENT1, health="failing")
            assert (await bench(client, "rig-1"))["admin_state"] == "quarantined"
            await beat(client, "rig-1", AGENT1, health="ok")
            assert (await bench(client, "rig-1"))["admin_state"] == "quarantined"
            await beat(client, "rig-1", AGENT1, health="ok")
            state = await bench(client, "rig-1")
            assert (state["admin_state"], state["quarantine"]) == ("active", None)
            entries = (await client.get("/v1/benches/rig-1/history", headers=ADMIN)).json()
            assert [e["actor"] for e in entries["items"][-2:]] == ["health-monitor"] * 2


async def errored_run(client: httpx.AsyncClient, reservation_id: str) -> dict[str, Any]:
    run = created(
        await client.post(
            "/v1/executions",
            json={
                "reservation_id": reservation_id,
                "commit_sha": "9fceb02",
                "tasks": [{"type": "flash", "max_attempts": 1}],
            },
            headers=CI,
        )
    )
    task = (await client.post("/v1/benches/rig-1/tasks/claim", headers=AGENT1)).json()
    failed = await client.post(
        f"/v1/tasks/{task['task_id']}/fail",
        json={"error": "USB hub gone", "retryable": True},
        headers=AGENT1,
    )
    assert failed.status_code == 200, failed.text
    done = await client.get(f"/v1/executions/{run['execution_id']}", headers=CI)
    assert done.json()["status"] == "errored"
    return run


async def test_quarantine_after_n_infrastructure_failures_and_no_new_work_after(
    client: httpx.AsyncClient,
) -> None:
    await online(client, "rig-1")
    held = await reserve(client, "08:00", "12:00", headers=CI)
    for _ in range(2):
        await errored_run(client, held["reservation_id"])
    assert (await bench(client, "rig-1"))["admin_state"] == "active"
    last = await errored_run(client, held["reservation_id"])
    state = await bench(client, "rig-1")
    assert (state["admin_state"], state["quarantine"]["reason"]) == (
        "quarantined",
        "infrastructure_failures",
    )
    assert state["quarantine"]["evidence"]["executions"] == [last["execution_id"]]
    run = created(
        await client.post(
            "/v1/executions",
            json={
                "reservation_id": held["reservation_id"],
                "commit_sha": "abc1234",
                "tasks": [{"type": "flash"}],
            },
            headers=CI,
        )
    )
    assert run["status"] == "queued"
    nothing = await client.post("/v1/benches/rig-1/tasks/claim", headers=AGENT1)
    assert nothing.status_code == 204  # a run made after the quarantine waits
    stats = await client.get("/v1/benches/rig-1/stats", headers=ALICE)
    assert stats.status_code == 200, stats.text
    week = stats.json()["periods"]["7d"]
    assert week["executions"]["errored"] == 3 and week["infrastructure_failure_rate"] == 1.0
    assert stats.json()["consecutive_infrastructure_failures"] == 3


async def test_a_failed_test_is_not_the_bench_s_fault(client: httpx.AsyncClient) -> None:
    await online(client, "rig-1")
    held = await reserve(client, "08:00", "12:00", headers=CI)
    await errored_run(client, held["reservation_id"])
    await errored_run(client, held["reservation_id"])
    run = created(
        await client.post(
            "/v1/executions",
            json={
                "reservation_id": held["reservation_id"],
                "commit_sha": "f00dbee",
                "tasks": [{"type": "test"}],
            },
            headers=CI,
        )
    )
    task = (await client.post("/v1/benches/rig-1/tasks/claim", headers=AGENT1)).json()
    await client.post(f"/v1/tasks/{task['task_id']}/fail", json={"error": "1 != 2"}, headers=AGENT1)
    assert (await client.get(f"/v1/executions/{run['execution_id']}", headers=CI)).json()[
        "status"
    ] == "failed"
    await errored_run(client, held["reservation_id"])  # 1 in a row again, not 3
    assert (await bench(client, "rig-1"))["admin_state"] == "active"
    week = (await client.get("/v1/benches/rig-1/stats", headers=ALICE)).json()["periods"]["7d"]
    assert week["executions"]["failed"] == 1 and week["infrastructure_failure_rate"] == 0.75


async def test_maintenance_dry_run_equals_the_real_run(
    client: httpx.AsyncClient, clock: ManualClock, settings: Settings, store: Store
) -> None:
    await online(client, "rig-1", "rig-2")
    movable = await reserve(client, "10:00", "11:00")
    stuck = await reserve(client, "12:00", "13:00", headers=BOB)
    await reserve(client, "12:00", "13:00", headers=CI, bench_id="rig-2")  # the spare is busy
    outside = await reserve(client, "15:00", "16:00")
    body = {"start": AT.format("09:00"), "end": AT.format("14:00"), "reason": "firmware"}
    url = "/v1/benches/rig-1/maintenance"
    assert (await client.post(url, json=body, headers=ALICE)).status_code == 403
    dry = await client.post(url, json={**body, "dry_run": True}, headers=ADMIN)
    assert dry.status_code == 200, dry.text
    planned = [(d["reservation_id"], d["outcome"], d["bench_id"]) for d in dry.json()["displaced"]]
    assert planned == [
        (movable["reservation_id"], "swapped", "rig-2"),
        (stuck["reservation_id"], "cancelled", None),
    ]
    assert (await get(client, movable["reservation_id"]))["bench_id"] == "rig-1"  # untouched

    real = await client.post(url, json=body, headers=ADMIN)
    assert real.status_code == 201, real.text
    done = [(d["reservation_id"], d["outcome"], d["bench_id"]) for d in real.json()["displaced"]]
    assert done == planned
    assert (await get(client, movable["reservation_id"]))["bench_id"] == "rig-2"
    assert (await get(client, stuck["reservation_id"]))["status"] == "cancelled"
    assert (await get(client, outside["reservation_id"]))["bench_id"] == "rig-1"
    [told] = await events(client, "reservation.displaced")
    assert (told["user_id"], told["data"]["reason"]) == ("bob", "maintenance")
    state = await bench(client, "rig-1")
    assert state["admin_state"] == "active"  # 08:00: not yet
    assert state["maintenance"][0]["reason"] == "firmware"
    taken = await client.post(
        "/v1/reservations",
        json={"bench_id": "rig-1", "start": AT.format("13:00"), "end": AT.format("14:00")},
        headers=ALICE,
    )
    assert taken.status_code == 409
    overlapping = await client.post(url, json=body, headers=ADMIN)
    assert overlapping.status_code == 409
    clock.advance(timedelta(hours=1, minutes=20))  # 09:20: nobody checks in to maintenance
    strict = settings.model_copy(update={"no_show_grace_min": 15, "idle_release_min": 30})
    await Housekeeper(store, clock, strict).run_once()
    assert (await bench(client, "rig-1"))["admin_state"] == "maintenance"
    blocker = await get(client, real.json()["reservation_id"])
    assert (blocker["kind"], blocker["status"]) == ("maintenance", "active")
    clock.advance(timedelta(hours=5))
    assert (await bench(client, "rig-1"))["admin_state"] == "active"


async def test_a_cancelled_maintenance_window_frees_the_bench(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await online(client, "rig-1")
    body = {"start": AT.format("09:00"), "end": AT.format("10:00"), "reason": "calibration"}
    scheduled = await client.post("/v1/benches/rig-1/maintenance", json=body, headers=ADMIN)
    assert scheduled.status_code == 201, scheduled.text
    assert scheduled.headers["location"] == f"/v1/reservations/{scheduled.json()['reservation_id']}"
    assert scheduled.headers["etag"] == '"1"'  # the window's reservation's
    again = await client.post(
        "/v1/benches/rig-1/maintenance",
        json={**body, "start": AT.format("11:00"), "end": AT.format("12:00")},
        headers={**ADMIN, "Idempotency-Key": "maint-1"},
    )
    assert again.status_code == 201, again.text
    replay = await client.post(
        "/v1/benches/rig-1/maintenance",
        json={**body, "start": AT.format("11:00"), "end": AT.format("12:00")},
        headers={**ADMIN, "Idempotency-Key": "maint-1"},
    )
    assert replay.status_code == 201, replay.text
    assert replay.json()["reservation_id"] == again.json()["reservation_id"]
    assert len((await bench(client, "rig-1"))["maintenance"]) == 2  # not three
    url = f"/v1/reservations/{scheduled.json()['reservation_id']}"
    moved = await client.patch(
        url, json={"end": AT.format("11:00")}, headers={**ADMIN, "If-Match": '"1"'}
    )
    assert moved.status_code == 409, moved.text
    assert (await client.post(f"{url}/cancel", headers=ADMIN)).status_code == 200
    [left] = (await bench(client, "rig-1"))["maintenance"]
    assert left["reservation_id"] == again.json()["reservation_id"]
    clock.advance(timedelta(hours=1, minutes=30))
    assert (await bench(client, "rig-1"))["admin_state"] == "active"
    await reserve(client, "09:30", "10:00")


async def test_the_agent_is_asked_to_check_health_before_a_window(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    await online(client, "rig-1")
    await beat(client, "rig-1", AGENT1, health="ok")
    await reserve(client, "09:00", "10:00")
    clock.advance(timedelta(minutes=45))  # 08:45: 15 minutes before
    await beat(client, "rig-1", AGENT1)
    assert (await housekeeper.run_once()).health_checks_requested == 0
    assert (await beat(client, "rig-1", AGENT1))["run_health_check"] is False
    clock.advance(timedelta(minutes=6))  # 08:51: within 10 minutes, last report 08:00
    assert (await housekeeper.run_once()).health_checks_requested == 1
    assert (await beat(client, "rig-1", AGENT1))["run_health_check"] is True
    assert (await beat(client, "rig-1", AGENT1, health="ok"))["run_health_check"] is False
    assert (await beat(client, "rig-1", AGENT1))["run_health_check"] is False


async def test_stats_give_uptime_and_the_peers(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    await online(client, "rig-1", "rig-2")
    await housekeeper.run_once()  # both came online at 08:00
    clock.advance(timedelta(hours=1))
    await beat(client, "rig-2")
    await housekeeper.run_once()  # rig-1 went offline at 09:00 (noticed then)
    clock.advance(timedelta(hours=1))
    await beat(client, "rig-2")
    stats = (await client.get("/v1/benches/rig-1/stats", headers=ALICE)).json()
    assert stats["periods"]["7d"]["uptime"] == 0.5  # of the 2 h since it was registered
    assert stats["peers"]["benches"] == 1
    assert stats["peers"]["periods"]["7d"]["uptime"] == 1.0
    assert (await client.get("/v1/benches/nope/stats", headers=ALICE)).status_code == 404
