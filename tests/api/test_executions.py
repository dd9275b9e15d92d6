"""Executions and tasks over HTTP on every store: CI creates, the agent works, a verdict."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx

from app.clock import ManualClock
from app.ops.housekeeping import Housekeeper
from tests.api.test_benches import RIG1, assert_problem
from tests.conftest import ADMIN, AGENT1, AGENT2, ALICE, BOB, CI

NOW = "2026-11-25T08:00:00Z"  # the tests' clock starts here
IN_TWO_HOURS = "2026-11-25T10:00:00Z"


async def active_reservation(client: httpx.AsyncClient, headers: dict[str, str] = ALICE) -> str:
    await client.post("/v1/benches", json=RIG1, headers=ADMIN)
    response = await client.post(
        "/v1/reservations",
        json={"bench_id": "rig-1", "start": NOW, "end": IN_TWO_HOURS},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    reservation_id: str = response.json()["reservation_id"]
    return reservation_id


def run_body(reservation_id: str, tasks: int = 2, **task: Any) -> dict[str, Any]:
    return {
        "reservation_id": reservation_id,
        "commit_sha": "9fceb02d0ae598e95dc970b74767f19372d61af8",
        "pipeline_url": "https://ci.example/jobs/42",
        "metadata": {"branch": "main"},
        "tasks": [
            {"type": "flash" if n == 0 else "test", "params": {"n": n}, "timeout_s": 300, **task}
            for n in range(tasks)
        ],
    }


async def create_run(
    client: httpx.AsyncClient, reservation_id: str, headers: dict[str, str] = CI, **kwargs: Any
) -> dict[str, Any]:
    response = await client.post(
        "/v1/executions", json=run_body(reservation_id, **kwargs), headers=headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def claim(client: httpx.AsyncClient, headers: dict[str, str] = AGENT1) -> httpx.Response:
    return await client.post("/v1/benches/rig-1/tasks/claim", headers=headers)


async def test_full_lifecycle_to_passed(client: httpx.AsyncClient, clock: ManualClock) -> None:
    reservation_id = await active_reservation(client)
    run = await create_run(client, reservation_id)
    assert run["status"] == "queued"
    assert run["bench_id"] == "rig-1"
    assert [t["status"] for t in run["tasks"]] == ["pending", "pending"]
    url = f"/v1/executions/{run['execution_id']}"

    first = await claim(client)
    assert first.status_code == 200, first.text
    task = first.json()
    assert (task["seq"], task["status"], task["attempts"]) == (0, "leased", 1)
    assert task["lease_expires_at"] == "2026-11-25T08:01:00Z"
    assert (await client.get(url, headers=CI)).json()["status"] == "running"

    clock.advance(timedelta(seconds=30))
    beat = await client.post(f"/v1/tasks/{task['task_id']}/heartbeat", headers=AGENT1)
    assert beat.json()["lease_expires_at"] == "2026-11-25T08:01:30Z"
    done = await client.post(
        f"/v1/tasks/{task['task_id']}/complete", json={"result": {"ok": True}}, headers=AGENT1
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "succeeded"

    second = (await claim(client)).json()
    assert second["seq"] == 1
    clock.advance(timedelta(seconds=50))
    last = await client.post(f"/v1/tasks/{second['task_id']}/complete", json={}, headers=AGENT1)
    assert last.status_code == 200, last.text

    final = (await client.get(url, headers=ALICE)).json()
    assert final["status"] == "passed"
    assert final["started_at"] == "2026-11-25T08:00:00Z"
    assert final["finished_at"] == "2026-11-25T08:01:20Z"
    assert final["duration_s"] == 80.0
    assert (await claim(client)).status_code == 204
    history = (await client.get(f"{url}/history", headers=ALICE)).json()["items"]
    assert [(e["version"], e["action"]) for e in history] == [
        (1, "created"),
        (2, "started"),
        (3, "verdict"),
    ]
    assert history[2]["changes"]["status"] == {"from": "running", "to": "passed"}
    listed = await client.get(f"/v1/reservations/{reservation_id}/executions", headers=ALICE)
    assert [e["execution_id"] for e in listed.json()["items"]] == [run["execution_id"]]
    one = await client.get(f"/v1/tasks/{task['task_id']}", headers=ALICE)
    assert (one.json()["status"], one.headers["etag"]) == ("succeeded", '"4"')
    task_history = (await client.get(f"/v1/tasks/{task['task_id']}/history", headers=ALICE)).json()
    assert [(e["version"], e["action"], e["actor"]) for e in task_history["items"]] == [
        (1, "created", "ci-bot"),
        (2, "claimed", "agent-rig-1"),
        (3, "lease_extended", "agent-rig-1"),
        (4, "completed", "agent-rig-1"),
    ]
    assert_problem(await client.get("/v1/tasks/nope", headers=ALICE), 404)


async def test_creation_rules(client: httpx.AsyncClient, clock: ManualClock) -> None:
    reservation_id = await active_reservation(client)
    assert_problem(await client.post("/v1/executions", json=run_body("nope"), headers=CI), 404)
    assert_problem(
        await client.post("/v1/executions", json=run_body(reservation_id), headers=BOB), 403
    )
    assert_problem(
        await client.post("/v1/executions", json=run_body(reservation_id), headers=AGENT1), 403
    )
    bad = run_body(reservation_id)
    for field, value in [("commit_sha", "xyz"), ("commit_sha", "abc12"), ("tasks", [])]:
        assert_problem(
            await client.post("/v1/executions", json={**bad, field: value}, headers=CI), 422
        )
    assert (await client.post("/v1/executions", json=bad, headers=ALICE)).status_code == 201
    await client.post(f"/v1/reservations/{reservation_id}/release", headers=ALICE)
    over = await client.post("/v1/executions", json=bad, headers=CI)
    assert assert_problem(over, 409)["reservation_status"] == "released"


async def test_illegal_transitions_are_409_with_the_allowed_ones(
    client: httpx.AsyncClient,
) -> None:
    reservation_id = await active_reservation(client)
    run = await create_run(client, reservation_id)
    url = f"/v1/executions/{run['execution_id']}"
    passed = await client.patch(url, json={"status": "passed"}, headers={**CI, "If-Match": '"1"'})
    problem = assert_problem(passed, 409)
    assert problem["allowed_transitions"] == ["cancelled", "running"]
    assert_problem(await client.patch(url, json={"summary": "x"}, headers=CI), 428)
    assert_problem(
        await client.patch(url, json={"summary": "x"}, headers={**CI, "If-Match": '"9"'}), 412
    )
    assert_problem(
        await client.patch(url, json={"started_at": NOW}, headers={**CI, "If-Match": '"1"'}), 422
    )
    cancelled = await client.post(f"{url}/cancel", headers=CI)
    assert cancelled.json()["status"] == "cancelled"
    assert [t["status"] for t in cancelled.json()["tasks"]] == ["cancelled", "cancelled"]
    for target in ["running", "passed", "failed", "errored", "timed_out", "queued"]:
        response = await client.patch(
            url, json={"status": target}, headers={**CI, "If-Match": cancelled.headers["etag"]}
        )
        assert assert_problem(response, 409)["allowed_transitions"] == []
    assert (await claim(client)).status_code == 204


async def test_client_reports_status_artifacts_and_summary(client: httpx.AsyncClient) -> None:
    reservation_id = await active_reservation(client)
    run = await create_run(client, reservation_id, tasks=1)
    url = f"/v1/executions/{run['execution_id']}"
    await claim(client)
    reported = await client.patch(
        url,
        json={"status": "failed", "artifacts_uri": "s3://logs/42", "summary": "3 tests red"},
        headers={**AGENT1, "If-Match": '"2"'},
    )
    assert reported.status_code == 200, reported.text
    body = reported.json()
    assert (body["status"], body["artifacts_uri"], body["version"]) == (
        "failed",
        "s3://logs/42",
        3,
    )
    assert body["tasks"][0]["status"] == "cancelled"
    assert_problem(
        await client.patch(url, json={"summary": "x"}, headers={**AGENT2, "If-Match": '"3"'}),
        403,
    )


async def test_failures_retries_and_dead_tasks(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    reservation_id = await active_reservation(client)
    run = await create_run(client, reservation_id, tasks=2, max_attempts=2)
    url = f"/v1/executions/{run['execution_id']}"

    task = (await claim(client)).json()
    retry = await client.post(
        f"/v1/tasks/{task['task_id']}/fail",
        json={"error": "flaky USB", "retryable": True},
        headers=AGENT1,
    )
    assert (retry.json()["status"], retry.json()["attempts"]) == ("pending", 1)

    again = (await claim(client)).json()
    assert (again["task_id"], again["attempts"]) == (task["task_id"], 2)
    # The agent dies: the lease runs out and housekeeping finds it.
    clock.advance(timedelta(seconds=61))
    assert_problem(await client.post(f"/v1/tasks/{task['task_id']}/heartbeat", headers=AGENT1), 409)
    report = await housekeeper.run_once()
    assert report.leases_expired == 1
    final = (await client.get(url, headers=CI)).json()
    assert final["status"] == "errored"
    assert [t["status"] for t in final["tasks"]] == ["dead", "cancelled"]
    assert (await housekeeper.run_once()).leases_expired == 0


async def test_non_retryable_failure_fails_the_run(client: httpx.AsyncClient) -> None:
    reservation_id = await active_reservation(client)
    run = await create_run(client, reservation_id, tasks=3)
    task = (await claim(client)).json()
    assert_problem(
        await client.post(f"/v1/tasks/{task['task_id']}/complete", json={}, headers=AGENT2), 403
    )
    failed = await client.post(
        f"/v1/tasks/{task['task_id']}/fail", json={"error": "assert"}, headers=AGENT1
    )
    assert failed.json()["status"] == "failed"
    final = (await client.get(f"/v1/executions/{run['execution_id']}", headers=CI)).json()
    assert final["status"] == "failed"
    assert [t["status"] for t in final["tasks"]] == ["failed", "cancelled", "cancelled"]


async def test_lease_expiry_returns_the_task(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    reservation_id = await active_reservation(client)
    run = await create_run(client, reservation_id, tasks=1, timeout_s=600, max_attempts=2)
    task = (await claim(client)).json()
    clock.advance(timedelta(seconds=59))
    assert (await housekeeper.run_once()).leases_expired == 0
    clock.advance(timedelta(seconds=1))
    assert (await housekeeper.run_once()).leases_expired == 1
    back = (await client.get(f"/v1/executions/{run['execution_id']}", headers=CI)).json()
    assert (back["tasks"][0]["status"], back["tasks"][0]["attempts"]) == ("pending", 1)
    assert back["tasks"][0]["error"] == "lease expired"
    assert back["status"] == "running"
    late = await client.post(f"/v1/tasks/{task['task_id']}/complete", json={}, headers=AGENT1)
    assert_problem(late, 409)
    retaken = (await claim(client)).json()
    assert (retaken["task_id"], retaken["attempts"]) == (task["task_id"], 2)


async def test_a_run_that_outlives_its_time_budget_times_out(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    reservation_id = await active_reservation(client)
    run = await create_run(client, reservation_id, tasks=2, timeout_s=60, max_attempts=1)
    first = (await claim(client)).json()
    await client.post(f"/v1/tasks/{first['task_id']}/complete", json={}, headers=AGENT1)
    # The agent never comes back for the second task: 2 x 60 s is the budget.
    clock.advance(timedelta(seconds=119))
    assert (await housekeeper.run_once()).executions_timed_out == 0
    clock.advance(timedelta(seconds=1))
    assert (await housekeeper.run_once()).executions_timed_out == 1
    final = (await client.get(f"/v1/executions/{run['execution_id']}", headers=CI)).json()
    assert final["status"] == "timed_out"
    assert [t["status"] for t in final["tasks"]] == ["succeeded", "cancelled"]
    assert (await housekeeper.run_once()).executions_timed_out == 0


async def test_claims_follow_execution_then_task_order_and_need_an_active_reservation(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await client.post("/v1/benches", json=RIG1, headers=ADMIN)
    later = await client.post(
        "/v1/reservations",
        json={"bench_id": "rig-1", "start": "2026-11-25T09:00:00Z", "end": IN_TWO_HOURS},
        headers=ALICE,
    )
    first = await create_run(client, later.json()["reservation_id"], tasks=2)
    second = await create_run(client, later.json()["reservation_id"], tasks=1)
    assert (await claim(client)).status_code == 204  # the reservation has not begun
    assert_problem(await claim(client, AGENT2), 403)
    assert_problem(await claim(client, ADMIN), 403)
    clock.advance(timedelta(hours=1))
    order = []
    for _ in range(3):
        task = (await claim(client)).json()
        # One thing at a time: nothing else is handed out until this task is done.
        assert (await claim(client)).status_code == 204
        done = await client.post(f"/v1/tasks/{task['task_id']}/complete", json={}, headers=AGENT1)
        assert done.status_code == 200, done.text
        order.append(task["task_id"])
    assert order == [
        f"{first['execution_id']}.00",
        f"{first['execution_id']}.01",
        f"{second['execution_id']}.00",
    ]


async def test_twenty_racing_claims_lease_the_next_task_once(client: httpx.AsyncClient) -> None:
    reservation_id = await active_reservation(client)
    run = await create_run(client, reservation_id, tasks=5)
    for seq in range(2):
        responses = await asyncio.gather(*(claim(client) for _ in range(20)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] + [204] * 19
        [leased] = [r.json() for r in responses if r.status_code == 200]
        assert leased["task_id"] == f"{run['execution_id']}.{seq:02d}"
        done = await client.post(f"/v1/tasks/{leased['task_id']}/complete", json={}, headers=AGENT1)
        assert done.status_code == 200, done.text


async def test_fifty_racing_creates_with_one_key_make_one_run(client: httpx.AsyncClient) -> None:
    reservation_id = await active_reservation(client)
    body = run_body(reservation_id)
    key = {**CI, "Idempotency-Key": "pipeline-42-attempt"}
    responses = await asyncio.gather(
        *(client.post("/v1/executions", json=body, headers=key) for _ in range(50))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["execution_id"] for r in responses}) == 1
    listed = await client.get(f"/v1/reservations/{reservation_id}/executions", headers=CI)
    assert len(listed.json()["items"]) == 1
    other = await client.post("/v1/executions", json={**body, "commit_sha": "abcdef1"}, headers=key)
    assert_problem(other, 422)


async def test_every_change_is_in_history_once_with_consecutive_versions(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    reservation_id = await active_reservation(client)
    runs = [await create_run(client, reservation_id, tasks=2, max_attempts=1) for _ in range(3)]
    await client.patch(
        f"/v1/executions/{runs[2]['execution_id']}",
        json={"summary": "nightly"},
        headers={**CI, "If-Match": '"1"'},
    )
    for _ in range(2):  # run 0 passes
        task = (await claim(client)).json()
        await client.post(f"/v1/tasks/{task['task_id']}/complete", json={}, headers=AGENT1)
    await claim(client)  # run 1's first task; the agent then dies
    clock.advance(timedelta(minutes=5))
    await housekeeper.run_once()
    await client.post(f"/v1/executions/{runs[2]['execution_id']}/cancel", headers=CI)
    for run in runs:
        url = f"/v1/executions/{run['execution_id']}"
        current = (await client.get(url, headers=CI)).json()
        history = (await client.get(f"{url}/history", headers=CI)).json()["items"]
        assert [e["version"] for e in history] == list(range(1, current["version"] + 1))
    statuses = [
        (await client.get(f"/v1/executions/{r['execution_id']}", headers=CI)).json()["status"]
        for r in runs
    ]
    assert statuses == ["passed", "errored", "cancelled"]


async def test_list_filters(client: httpx.AsyncClient) -> None:
    reservation_id = await active_reservation(client)
    a = await create_run(client, reservation_id)
    b = await create_run(client, reservation_id)
    await client.post(f"/v1/executions/{b['execution_id']}/cancel", headers=CI)

    async def ids(query: str) -> list[str]:
        response = await client.get(f"/v1/executions?{query}", headers=CI)
        assert response.status_code == 200, response.text
        return [e["execution_id"] for e in response.json()["items"]]

    assert await ids("bench_id=rig-1") == [a["execution_id"], b["execution_id"]]
    assert await ids("status=cancelled") == [b["execution_id"]]
    assert await ids(f"reservation_id={reservation_id}&status=queued") == [a["execution_id"]]
    assert_problem(await client.get("/v1/executions", headers=CI), 422)
