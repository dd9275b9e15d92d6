"""Housekeeping chores that time makes necessary, driven by the test clock."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from app.benches.domain import Bench, Liveness
from app.clock import ManualClock
from app.history.domain import HistoryEntry
from app.ops.housekeeping import Housekeeper
from app.settings import Settings
from app.store.base import Store
from tests.api.test_benches import RIG1
from tests.conftest import ADMIN, AGENT1, AGENT2, ALICE


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


async def passes(housekeeper: Housekeeper) -> int:
    """One housekeeping pass; how many liveness transitions it recorded."""
    return (await housekeeper.run_once()).liveness_changes_recorded


async def test_liveness_transitions_are_logged_apart_from_configuration(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    await client.post("/v1/benches", json={**RIG1, "heartbeat_interval_s": 10}, headers=ADMIN)
    assert await passes(housekeeper) == 0  # never online
    await client.post("/v1/benches/rig-1/heartbeats", json={"agent_version": "1"}, headers=AGENT1)
    assert await passes(housekeeper) == 1
    clock.advance(timedelta(seconds=29))
    assert await passes(housekeeper) == 0
    clock.advance(timedelta(seconds=1))
    assert await passes(housekeeper) == 1
    assert await passes(housekeeper) == 0
    await client.post("/v1/benches/rig-1/heartbeats", json={"agent_version": "1"}, headers=AGENT1)
    assert await passes(housekeeper) == 1

    log = (await client.get("/v1/benches/rig-1/liveness", headers=ALICE)).json()
    assert [(e["version"], e["action"]) for e in log["items"]] == [
        (1, "came_online"),
        (2, "went_offline"),
        (3, "came_online"),
    ]
    assert log["next_cursor"] is None
    assert [e["changes"] for e in log["items"]] == [
        {"liveness": {"from": "offline", "to": "online"}},
        {"liveness": {"from": "online", "to": "offline"}},
        {"liveness": {"from": "offline", "to": "online"}},
    ]
    assert {e["actor"] for e in log["items"]} == {"housekeeping"}
    assert log["items"][1]["at"] == "2026-11-25T08:00:30Z"
    history = (await client.get("/v1/benches/rig-1/history", headers=ALICE)).json()["items"]
    assert [(e["version"], e["action"]) for e in history] == [(1, "created")]
    assert "liveness" not in history[0]["changes"]


async def test_the_liveness_log_pages_and_404s_for_an_unknown_bench(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    await client.post("/v1/benches", json={**RIG1, "heartbeat_interval_s": 10}, headers=ADMIN)
    for _ in range(3):  # online, offline: two transitions a round
        await client.post(
            "/v1/benches/rig-1/heartbeats", json={"agent_version": "1"}, headers=AGENT1
        )
        assert await passes(housekeeper) == 1
        clock.advance(timedelta(seconds=30))
        assert await passes(housekeeper) == 1
    versions: list[int] = []
    url = "/v1/benches/rig-1/liveness?limit=4"
    while True:
        page = (await client.get(url, headers=ALICE)).json()
        versions += [e["version"] for e in page["items"]]
        if page["next_cursor"] is None:
            break
        url = f"/v1/benches/rig-1/liveness?limit=4&cursor={page['next_cursor']}"
    assert versions == [1, 2, 3, 4, 5, 6]
    history_cursor = (await client.get("/v1/benches/rig-1/history?limit=1", headers=ALICE)).json()
    assert history_cursor["next_cursor"] is None  # one configuration entry only
    unknown = await client.get("/v1/benches/ghost/liveness", headers=ALICE)
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"


async def test_liveness_never_moves_the_version_nor_breaks_an_admins_if_match(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    created = await client.post(
        "/v1/benches", json={**RIG1, "heartbeat_interval_s": 10}, headers=ADMIN
    )
    read = await client.get("/v1/benches/rig-1", headers=ADMIN)
    etag = read.headers["etag"]
    assert etag == created.headers["etag"] == '"1"'

    async def bench() -> httpx.Response:
        response = await client.get("/v1/benches/rig-1", headers=ADMIN)
        assert response.headers["etag"] == etag
        assert response.json()["version"] == 1
        assert response.json()["updated_at"] == read.json()["updated_at"]
        return response

    await client.post("/v1/benches/rig-1/heartbeats", json={"agent_version": "1"}, headers=AGENT1)
    assert await passes(housekeeper) == 1
    assert (await bench()).json()["status"] == "online"
    clock.advance(timedelta(seconds=30))
    assert await passes(housekeeper) == 1
    assert (await bench()).json()["status"] == "offline"
    await client.post("/v1/benches/rig-1/heartbeats", json={"agent_version": "1"}, headers=AGENT1)
    assert await passes(housekeeper) == 1
    assert (await bench()).json()["status"] == "online"
    cached = await client.get("/v1/benches/rig-1", headers={**ADMIN, "If-None-Match": etag})
    assert cached.status_code == 304

    # The admin's If-Match, read before any of it, still names the stored version.
    patched = await client.patch(
        "/v1/benches/rig-1", json={"name": "Renamed"}, headers={**ADMIN, "If-Match": etag}
    )
    assert patched.status_code == 200, patched.text
    assert patched.headers["etag"] == '"2"'
    history = (await client.get("/v1/benches/rig-1/history", headers=ALICE)).json()["items"]
    assert [(e["version"], e["action"]) for e in history] == [(1, "created"), (2, "updated")]
    assert history[1]["changes"] == {"name": {"from": "HIL rig 1", "to": "Renamed"}}
    # The PATCH, made from a read older than the transitions, undid none of them: the
    # bench is still recorded online, so the next pass records nothing, and the next
    # transition takes the next number.
    assert await passes(housekeeper) == 0
    clock.advance(timedelta(seconds=30))
    assert await passes(housekeeper) == 1
    log = (await client.get("/v1/benches/rig-1/liveness", headers=ALICE)).json()["items"]
    assert [(e["version"], e["action"]) for e in log] == [
        (1, "came_online"),
        (2, "went_offline"),
        (3, "came_online"),
        (4, "went_offline"),
    ]
    assert (await client.get("/v1/benches/rig-1", headers=ADMIN)).headers["etag"] == '"2"'


async def test_a_retired_bench_is_offline_refuses_heartbeats_and_logs_nothing(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    await client.post("/v1/benches", json={**RIG1, "heartbeat_interval_s": 10}, headers=ADMIN)
    beat = await client.post(
        "/v1/benches/rig-1/heartbeats", json={"agent_version": "1"}, headers=AGENT1
    )
    assert beat.status_code == 200
    assert await passes(housekeeper) == 1
    retired = await client.delete("/v1/benches/rig-1", headers={**ADMIN, "If-Match": '"1"'})
    assert retired.status_code == 200, retired.text
    # Its last heartbeat is a second old, yet a retired bench is offline, everywhere.
    assert retired.json()["status"] == "offline"
    bench = await client.get("/v1/benches/rig-1", headers=ALICE)
    assert (bench.json()["admin_state"], bench.json()["status"]) == ("retired", "offline")
    online = await client.get("/v1/benches?status=online", headers=ALICE)
    assert online.json()["items"] == []
    offline = await client.get("/v1/benches?status=offline", headers=ALICE)
    assert [b["bench_id"] for b in offline.json()["items"]] == ["rig-1"]

    for headers in (AGENT1, ADMIN):
        refused = await client.post(
            "/v1/benches/rig-1/heartbeats", json={"agent_version": "2"}, headers=headers
        )
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["admin_state"] == "retired"
    # Refused means unchanged: the heartbeat the bench had is still the last one.
    after = await client.get("/v1/benches/rig-1", headers=ALICE)
    assert after.json()["agent_version"] == "1"
    assert after.headers["etag"] == bench.headers["etag"]
    # Authorisation still comes first: another bench's agent is 403, not 409.
    other = await client.post(
        "/v1/benches/rig-1/heartbeats", json={"agent_version": "1"}, headers=AGENT2
    )
    assert other.status_code == 403

    assert await passes(housekeeper) == 0
    clock.advance(timedelta(minutes=5))
    assert await passes(housekeeper) == 0
    log = (await client.get("/v1/benches/rig-1/liveness", headers=ALICE)).json()["items"]
    assert [e["action"] for e in log] == ["came_online"]


async def test_two_replicas_noticing_one_transition_record_it_once(
    client: httpx.AsyncClient,
    clock: ManualClock,
    housekeeper: Housekeeper,
    store: Store,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await client.post("/v1/benches", json={**RIG1, "heartbeat_interval_s": 10}, headers=ADMIN)
    await client.post("/v1/benches/rig-1/heartbeats", json={"agent_version": "1"}, headers=AGENT1)
    other = Housekeeper(store, clock, settings)
    record = store.benches.record_liveness
    raced: list[int] = []
    calls = 0

    async def racing_record(current: Bench, liveness: Liveness, entry: HistoryEntry) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            # Another replica's pass, between this one's read and its write, records the
            # very transition this one is about to.
            raced.append((await other.run_once()).liveness_changes_recorded)
        await record(current, liveness, entry)

    monkeypatch.setattr(store.benches, "record_liveness", racing_record)
    # This pass lost the race, decided again on the stored bench, and found it recorded.
    assert await passes(housekeeper) == 0
    assert raced == [1]
    assert calls == 2  # this pass's write, and the other's: none after the lost race
    log = (await client.get("/v1/benches/rig-1/liveness", headers=ALICE)).json()["items"]
    assert [(e["version"], e["action"]) for e in log] == [(1, "came_online")]
    bench = await client.get("/v1/benches/rig-1", headers=ALICE)
    assert bench.headers["etag"] == '"1"'
