"""Benches over HTTP, on every store: the issue's rules, one test each."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.clock import ManualClock
from tests.conftest import ADMIN, AGENT1, AGENT2, ALICE, CI

RIG1 = {
    "bench_id": "rig-1",
    "name": "HIL rig 1",
    "type": "hil",
    "capabilities": ["can-bus", "arm64"],
    "labels": {"room": "b2"},
}


async def create(client: httpx.AsyncClient, **overrides: Any) -> httpx.Response:
    response = await client.post("/v1/benches", json={**RIG1, **overrides}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"]
    return body


async def test_create_answers_201_with_location_etag_and_defaults(
    client: httpx.AsyncClient,
) -> None:
    response = await create(client)
    assert response.headers["location"] == "/v1/benches/rig-1"
    assert response.headers["etag"] == '"1"'
    body = response.json()
    assert body["capabilities"] == ["arm64", "can-bus"]
    assert body["heartbeat_interval_s"] == 30
    assert body["admin_state"] == "active"
    assert body["status"] == "unmonitored"  # no heartbeat yet: liveness marks nothing
    assert body["version"] == 1
    assert body["created_at"].endswith("Z")
    fetched = await client.get("/v1/benches/rig-1", headers=ALICE)
    assert fetched.json() == body
    assert fetched.headers["etag"] == '"1"'


async def test_duplicate_id_is_409(client: httpx.AsyncClient) -> None:
    await create(client)
    again = await client.post("/v1/benches", json={**RIG1, "name": "other"}, headers=ADMIN)
    assert_problem(again, 409)
    assert (await client.get("/v1/benches/rig-1", headers=ADMIN)).json()["name"] == "HIL rig 1"


@pytest.mark.parametrize("headers", [ALICE, CI, AGENT1])
async def test_only_admins_manage_benches(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    assert_problem(await client.post("/v1/benches", json=RIG1, headers=headers), 403)
    await create(client)
    patch = await client.patch(
        "/v1/benches/rig-1", json={"name": "x"}, headers={**headers, "If-Match": '"1"'}
    )
    assert_problem(patch, 403)
    delete = await client.delete("/v1/benches/rig-1", headers={**headers, "If-Match": '"1"'})
    assert_problem(delete, 403)
    assert (await client.get("/v1/benches/rig-1", headers=headers)).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}],
)
async def test_missing_or_unknown_token_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/v1/benches", headers=headers)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_get_unknown_is_404_and_if_none_match_is_304(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/benches/nope", headers=ALICE), 404)
    await create(client)
    cached = await client.get("/v1/benches/rig-1", headers={**ALICE, "If-None-Match": '"1"'})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == '"1"'
    stale = await client.get("/v1/benches/rig-1", headers={**ALICE, "If-None-Match": '"7"'})
    assert stale.status_code == 200


async def test_patch_needs_if_match_and_refuses_stale(client: httpx.AsyncClient) -> None:
    await create(client)
    missing = await client.patch("/v1/benches/rig-1", json={"name": "x"}, headers=ADMIN)
    assert_problem(missing, 428)
    fresh = await client.patch(
        "/v1/benches/rig-1",
        json={"name": "Renamed", "capabilities": ["usb"], "heartbeat_interval_s": 10},
        headers={**ADMIN, "If-Match": '"1"'},
    )
    assert fresh.status_code == 200, fresh.text
    assert fresh.headers["etag"] == '"2"'
    assert fresh.json()["capabilities"] == ["usb"]
    assert fresh.json()["heartbeat_interval_s"] == 10
    stale = await client.patch(
        "/v1/benches/rig-1", json={"name": "late"}, headers={**ADMIN, "If-Match": '"1"'}
    )
    assert_problem(stale, 412)
    assert stale.headers["etag"] == '"2"'
    assert (await client.get("/v1/benches/rig-1", headers=ADMIN)).json()["name"] == "Renamed"


async def test_patch_unknown_bench_is_404_whatever_the_precondition(
    client: httpx.AsyncClient,
) -> None:
    response = await client.patch(
        "/v1/benches/ghost", json={"name": "x"}, headers={**ADMIN, "If-Match": '"1"'}
    )
    assert_problem(response, 404)
    delete = await client.delete("/v1/benches/ghost", headers={**ADMIN, "If-Match": '"1"'})
    assert_problem(delete, 404)


async def test_patch_without_change_keeps_the_version(client: httpx.AsyncClient) -> None:
    await create(client)
    same = await client.patch(
        "/v1/benches/rig-1", json={"name": "HIL rig 1"}, headers={**ADMIN, "If-Match": '"1"'}
    )
    assert same.status_code == 200
    assert same.headers["etag"] == '"1"'
    history = await client.get("/v1/benches/rig-1/history", headers=ADMIN)
    assert len(history.json()["items"]) == 1


async def test_admin_state_transitions_and_retire(client: httpx.AsyncClient) -> None:
    await create(client)
    maintenance = await client.patch(
        "/v1/benches/rig-1",
        json={"admin_state": "maintenance"},
        headers={**ADMIN, "If-Match": '"1"'},
    )
    assert maintenance.json()["admin_state"] == "maintenance"
    assert_problem(await client.delete("/v1/benches/rig-1", headers=ADMIN), 428)
    retired = await client.delete("/v1/benches/rig-1", headers={**ADMIN, "If-Match": '"2"'})
    assert retired.status_code == 200
    assert retired.json()["admin_state"] == "retired"
    assert retired.headers["etag"] == '"3"'
    revive = await client.patch(
        "/v1/benches/rig-1", json={"admin_state": "active"}, headers={**ADMIN, "If-Match": '"3"'}
    )
    body = assert_problem(revive, 409)
    assert body["allowed_transitions"] == []
    kept = await client.get("/v1/benches/rig-1", headers=ALICE)
    assert kept.json()["admin_state"] == "retired"
    history = (await client.get("/v1/benches/rig-1/history", headers=ALICE)).json()["items"]
    assert [e["action"] for e in history] == ["created", "updated", "retired"]
    assert history[2]["changes"] == {"admin_state": {"from": "maintenance", "to": "retired"}}


async def test_history_records_actor_request_id_and_changes(client: httpx.AsyncClient) -> None:
    await client.post("/v1/benches", json=RIG1, headers={**ADMIN, "X-Request-ID": "create-rig-1"})
    await client.patch(
        "/v1/benches/rig-1",
        json={"labels": {"room": "c1"}},
        headers={**ADMIN, "If-Match": '"1"', "X-Request-ID": "move-rig-1"},
    )
    entries = (await client.get("/v1/benches/rig-1/history", headers=ALICE)).json()["items"]
    assert [(e["version"], e["actor"], e["request_id"]) for e in entries] == [
        (1, "root", "create-rig-1"),
        (2, "root", "move-rig-1"),
    ]
    assert entries[0]["changes"]["name"] == {"from": None, "to": "HIL rig 1"}
    assert entries[1]["changes"] == {"labels": {"from": {"room": "b2"}, "to": {"room": "c1"}}}
    assert_problem(await client.get("/v1/benches/ghost/history", headers=ALICE), 404)


async def test_heartbeats_are_liveness_not_configuration(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await create(client, heartbeat_interval_s=10)
    beat = await client.post(
        "/v1/benches/rig-1/heartbeats",
        json={"agent_version": "1.4.2", "details": {"temp_c": 41}},
        headers=AGENT1,
    )
    assert beat.status_code == 200, beat.text
    body = beat.json()
    assert body["status"] == "online"
    assert body["next_heartbeat_due_at"] == "2026-11-25T08:00:10Z"
    assert body["offline_after"] == "2026-11-25T08:00:30Z"
    bench = await client.get("/v1/benches/rig-1", headers=ALICE)
    assert bench.headers["etag"] == '"1"'
    assert bench.json()["status"] == "online"
    assert bench.json()["agent_version"] == "1.4.2"
    history = await client.get("/v1/benches/rig-1/history", headers=ALICE)
    assert len(history.json()["items"]) == 1

    clock.advance(timedelta(seconds=29))
    assert (await client.get("/v1/benches/rig-1", headers=ALICE)).json()["status"] == "online"
    clock.advance(timedelta(seconds=1))
    assert (await client.get("/v1/benches/rig-1", headers=ALICE)).json()["status"] == "offline"


async def test_heartbeat_permissions(client: httpx.AsyncClient) -> None:
    await create(client)
    await create(client, bench_id="rig-2")
    body = {"agent_version": "1"}
    assert_problem(
        await client.post("/v1/benches/rig-1/heartbeats", json=body, headers=AGENT2), 403
    )
    assert_problem(await client.post("/v1/benches/rig-1/heartbeats", json=body, headers=ALICE), 403)
    ok = await client.post("/v1/benches/rig-2/heartbeats", json=body, headers=AGENT2)
    assert ok.status_code == 200
    by_admin = await client.post("/v1/benches/rig-1/heartbeats", json=body, headers=ADMIN)
    assert by_admin.status_code == 200
    assert_problem(await client.post("/v1/benches/ghost/heartbeats", json=body, headers=ADMIN), 404)


async def test_list_filters_and_status(client: httpx.AsyncClient, clock: ManualClock) -> None:
    await create(client)  # rig-1: arm64, can-bus
    await create(client, bench_id="rig-2", capabilities=["can-bus"], type="scope")
    await create(client, bench_id="rig-3", capabilities=[])
    await client.post("/v1/benches/rig-2/heartbeats", json={"agent_version": "1"}, headers=AGENT2)

    async def ids(query: str) -> list[str]:
        response = await client.get(f"/v1/benches?{query}", headers=ALICE)
        assert response.status_code == 200, response.text
        return [item["bench_id"] for item in response.json()["items"]]

    assert await ids("") == ["rig-1", "rig-2", "rig-3"]
    assert await ids("capability=can-bus") == ["rig-1", "rig-2"]
    assert await ids("capability=can-bus&capability=arm64") == ["rig-1"]
    assert await ids("type=scope") == ["rig-2"]
    assert await ids("admin_state=active") == ["rig-1", "rig-2", "rig-3"]
    assert await ids("admin_state=maintenance") == []
    assert await ids("status=online") == ["rig-2"]
    assert await ids("status=unmonitored") == ["rig-1", "rig-3"]
    assert await ids("status=offline") == []
    clock.advance(timedelta(minutes=5))
    assert await ids("status=online") == []
    assert await ids("status=offline") == ["rig-2"]


async def test_pagination_walks_every_bench_once(client: httpx.AsyncClient) -> None:
    for n in range(7):
        await create(client, bench_id=f"rig-{n}")
    seen: list[str] = []
    url = "/v1/benches?limit=3&capability=can-bus"
    while True:
        page = (await client.get(url, headers=ALICE)).json()
        assert len(page["items"]) <= 3
        seen += [item["bench_id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        url = f"/v1/benches?limit=3&capability=can-bus&cursor={page['next_cursor']}"
    assert seen == [f"rig-{n}" for n in range(7)]


async def test_cursors_are_tamper_evident_and_bound_to_their_query(
    client: httpx.AsyncClient,
) -> None:
    for n in range(3):
        await create(client, bench_id=f"rig-{n}")
    cursor = (await client.get("/v1/benches?limit=1", headers=ALICE)).json()["next_cursor"]
    assert cursor
    other_query = await client.get(f"/v1/benches?limit=1&type=hil&cursor={cursor}", headers=ALICE)
    assert_problem(other_query, 400)
    payload, signature = cursor.split(".")
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
    assert_problem(await client.get(f"/v1/benches?cursor={forged}", headers=ALICE), 400)
    for garbage in ["x", "a.b.c", "%00", "....", "é"]:
        assert_problem(
            await client.get("/v1/benches", params={"cursor": garbage}, headers=ALICE), 400
        )


async def test_fifty_racing_patches_with_one_etag_have_one_winner(
    client: httpx.AsyncClient,
) -> None:
    await create(client)

    async def patch(n: int) -> httpx.Response:
        return await client.patch(
            "/v1/benches/rig-1",
            json={"name": f"writer {n}"},
            headers={**ADMIN, "If-Match": '"1"'},
        )

    responses = await asyncio.gather(*(patch(n) for n in range(50)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * 49
    winner = next(r for r in responses if r.status_code == 200).json()["name"]
    assert all(r.headers["etag"] == '"2"' for r in responses)
    stored = (await client.get("/v1/benches/rig-1", headers=ADMIN)).json()
    assert stored["name"] == winner
    assert stored["version"] == 2
    history = (await client.get("/v1/benches/rig-1/history", headers=ADMIN)).json()["items"]
    assert [e["version"] for e in history] == [1, 2]
