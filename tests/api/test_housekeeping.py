"""Housekeeping chores that time makes necessary, driven by the test clock."""

from __future__ import annotations

from datetime import timedelta

import httpx

from app.clock import ManualClock
from app.ops.housekeeping import Housekeeper
from tests.api.test_benches import RIG1
from tests.conftest import ADMIN, AGENT1, ALICE


async def test_ended_reservations_are_marked_completed_once(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    await client.post("/v1/benches", json=RIG1, headers=ADMIN)
    booked = await client.post(
        "/v1/reservations",
        json={"bench_id": "rig-1", "start": "2026-11-25T09:00:00Z", "end": "2026-11-25T10:00:00Z"},
        headers=ALICE,
    )
    url = f"/v1/reservations/{booked.json()['reservation_id']}"
    clock.advance(timedelta(hours=1, minutes=59))
    assert (await housekeeper.run_once()).reservations_completed == 0
    clock.advance(timedelta(minutes=1))  # 10:00, the window's end
    assert (await housekeeper.run_once()).reservations_completed == 1
    assert (await housekeeper.run_once()).reservations_completed == 0
    done = (await client.get(url, headers=ALICE)).json()
    assert (done["status"], done["version"]) == ("completed", 2)
    history = (await client.get(f"{url}/history", headers=ALICE)).json()["items"]
    assert [(e["action"], e["actor"]) for e in history] == [
        ("created", "alice"),
        ("completed", "housekeeping"),
    ]
    completed = await client.get("/v1/reservations?bench_id=rig-1&status=completed", headers=ALICE)
    assert [r["reservation_id"] for r in completed.json()["items"]] == [done["reservation_id"]]
    calendar = await client.get(
        "/v1/benches/rig-1/reservations?from=2026-11-25T00:00:00Z", headers=ALICE
    )
    assert len(calendar.json()["items"]) == 1


async def test_a_bench_going_offline_is_recorded_in_its_history(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    await client.post("/v1/benches", json={**RIG1, "heartbeat_interval_s": 10}, headers=ADMIN)
    assert (await housekeeper.run_once()).liveness_changes_recorded == 0  # never online
    await client.post("/v1/benches/rig-1/heartbeats", json={"agent_version": "1"}, headers=AGENT1)
    assert (await housekeeper.run_once()).liveness_changes_recorded == 1
    clock.advance(timedelta(seconds=29))
    assert (await housekeeper.run_once()).liveness_changes_recorded == 0
    clock.advance(timedelta(seconds=1))
    assert (await housekeeper.run_once()).liveness_changes_recorded == 1
    assert (await housekeeper.run_once()).liveness_changes_recorded == 0
    history = (await client.get("/v1/benches/rig-1/history", headers=ALICE)).json()["items"]
    assert [(e["version"], e["action"]) for e in history] == [
        (1, "created"),
        (2, "came_online"),
        (3, "went_offline"),
    ]
    assert history[2]["changes"] == {"liveness": {"from": "online", "to": "offline"}}
    assert history[2]["actor"] == "housekeeping"
