"""How a bench's tasks are handed out, over HTTP on every store: the tasks of a run in
order, the runs of a reservation in creation order, at most ``concurrency`` at once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx

from app.clock import ManualClock
from app.ops.housekeeping import Housekeeper
from tests.api.test_benches import RIG1, assert_problem
from tests.api.test_executions import active_reservation, claim, create_run
from tests.conftest import ADMIN, AGENT1, ALICE, CI


async def complete(client: httpx.AsyncClient, task: dict[str, Any]) -> None:
    done = await client.post(f"/v1/tasks/{task['task_id']}/complete", json={}, headers=AGENT1)
    assert done.status_code == 200, done.text


async def claimed(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await claim(client)
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


async def bench_with(client: httpx.AsyncClient, concurrency: int) -> None:
    response = await client.post(
        "/v1/benches", json={**RIG1, "concurrency": concurrency}, headers=ADMIN
    )
    assert response.status_code == 201, response.text


async def test_concurrency_is_a_bench_attribute(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/benches", json=RIG1, headers=ADMIN)
    assert created.json()["concurrency"] == 1
    for value in (0, 65, None):
        bad = await client.post(
            "/v1/benches", json={**RIG1, "bench_id": "rig-2", "concurrency": value}, headers=ADMIN
        )
        assert_problem(bad, 422)
    patched = await client.patch(
        "/v1/benches/rig-1", json={"concurrency": 4}, headers={**ADMIN, "If-Match": '"1"'}
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["concurrency"], patched.json()["version"]) == (4, 2)
    assert (await client.get("/v1/benches/rig-1", headers=ALICE)).json()["concurrency"] == 4
    same = await client.patch(
        "/v1/benches/rig-1", json={"concurrency": 4}, headers={**ADMIN, "If-Match": '"2"'}
    )
    assert same.json()["version"] == 2
    for value in (0, 65, None):
        bad = await client.patch(
            "/v1/benches/rig-1", json={"concurrency": value}, headers={**ADMIN, "If-Match": '"2"'}
        )
        assert_problem(bad, 422)
    history = (await client.get("/v1/benches/rig-1/history", headers=ADMIN)).json()["items"]
    assert history[0]["changes"]["concurrency"] == {"from": None, "to": 1}
    assert history[1]["changes"] == {"concurrency": {"from": 1, "to": 4}}


async def test_a_task_is_handed_out_only_after_every_earlier_one_completed(
    client: httpx.AsyncClient,
) -> None:
    reservation_id = await active_reservation(client)
    run = await create_run(client, reservation_id, tasks=3)
    for seq in range(3):
        task = await claimed(client)
        assert task["task_id"] == f"{run['execution_id']}.{seq:02d}"
        # While it runs the bench has nothing else to hand out: test never starts
        # before flash has finished.
        assert (await claim(client)).status_code == 204
        await complete(client, task)
    assert (await claim(client)).status_code == 204
    final = await client.get(f"/v1/executions/{run['execution_id']}", headers=CI)
    assert final.json()["status"] == "passed"


async def test_retries_and_expired_leases_keep_the_order(
    client: httpx.AsyncClient, clock: ManualClock, housekeeper: Housekeeper
) -> None:
    reservation_id = await active_reservation(client)
    run = await create_run(client, reservation_id, tasks=2, max_attempts=3)
    first = await claimed(client)
    retry = await client.post(
        f"/v1/tasks/{first['task_id']}/fail",
        json={"error": "flaky USB", "retryable": True},
        headers=AGENT1,
    )
    assert retry.json()["status"] == "pending"
    again = await claimed(client)
    assert (again["task_id"], again["attempts"]) == (first["task_id"], 2)
    # The agent dies: until housekeeping takes the lease back, the bench is busy.
    clock.advance(timedelta(seconds=61))
    assert (await claim(client)).status_code == 204
    assert (await housekeeper.run_once()).leases_expired == 1
    third = await claimed(client)
    assert (third["task_id"], third["attempts"]) == (first["task_id"], 3)
    await complete(client, third)
    second = await claimed(client)
    assert second["task_id"] == f"{run['execution_id']}.01"


async def test_the_runs_of_a_reservation_run_one_after_another(
    client: httpx.AsyncClient,
) -> None:
    reservation_id = await active_reservation(client)
    runs = [await create_run(client, reservation_id, tasks=2) for _ in range(3)]
    first = await claimed(client)
    assert first["execution_id"] == runs[0]["execution_id"]
    await complete(client, first)
    # The first run's second task, not the second run's first.
    assert (await claimed(client))["task_id"] == f"{runs[0]['execution_id']}.01"
    # Cancelling the first run hands the bench to the second.
    cancelled = await client.post(f"/v1/executions/{runs[0]['execution_id']}/cancel", headers=CI)
    assert cancelled.json()["status"] == "cancelled"
    assert (await claimed(client))["task_id"] == f"{runs[1]['execution_id']}.00"
    assert (await claim(client)).status_code == 204
    statuses = [
        (await client.get(f"/v1/executions/{run['execution_id']}", headers=CI)).json()["status"]
        for run in runs
    ]
    assert statuses == ["cancelled", "running", "queued"]


async def test_twenty_racing_claims_on_a_bench_of_three_lease_each_runs_first_task_once(
    client: httpx.AsyncClient,
) -> None:
    await bench_with(client, concurrency=3)
    reservation_id = await active_reservation(client)
    runs = [await create_run(client, reservation_id, tasks=2) for _ in range(3)]
    responses = await asyncio.gather(*(claim(client) for _ in range(20)))
    assert sorted(r.status_code for r in responses) == [200] * 3 + [204] * 17
    leased = sorted(r.json()["task_id"] for r in responses if r.status_code == 200)
    assert leased == sorted(f"{run['execution_id']}.00" for run in runs)
    # Full: a fourth run waits, and so do the second tasks.
    await create_run(client, reservation_id, tasks=1)
    assert (await claim(client)).status_code == 204


async def test_a_lowered_concurrency_holds_claims_until_the_bench_is_under_it(
    client: httpx.AsyncClient,
) -> None:
    await bench_with(client, concurrency=2)
    reservation_id = await active_reservation(client)
    runs = [await create_run(client, reservation_id, tasks=1) for _ in range(3)]
    one, two = await claimed(client), await claimed(client)
    assert [one["execution_id"], two["execution_id"]] == [r["execution_id"] for r in runs[:2]]
    lowered = await client.patch(
        "/v1/benches/rig-1", json={"concurrency": 1}, headers={**ADMIN, "If-Match": '"1"'}
    )
    assert lowered.status_code == 200, lowered.text
    await complete(client, one)
    assert (await claim(client)).status_code == 204  # one still leased: the bench is full
    await complete(client, two)
    assert (await claimed(client))["execution_id"] == runs[2]["execution_id"]


async def test_a_lease_held_past_the_end_of_its_reservation_keeps_the_bench_busy(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await client.post("/v1/benches", json=RIG1, headers=ADMIN)
    booked = []
    for start, end in [("08:00", "09:00"), ("09:00", "10:00")]:
        response = await client.post(
            "/v1/reservations",
            json={
                "bench_id": "rig-1",
                "start": f"2026-11-25T{start}:00Z",
                "end": f"2026-11-25T{end}:00Z",
            },
            headers=ALICE,
        )
        assert response.status_code == 201, response.text
        booked.append(response.json()["reservation_id"])
    earlier = await create_run(client, booked[0], tasks=2)
    later = await create_run(client, booked[1], tasks=1)
    clock.advance(timedelta(minutes=59, seconds=30))
    flashing = await claimed(client)
    assert flashing["execution_id"] == earlier["execution_id"]

    clock.advance(timedelta(seconds=30))  # 09:00: the second reservation is active
    assert (await claim(client)).status_code == 204  # the earlier run's lease still holds
    await complete(client, flashing)
    # The earlier reservation is over: its run hands out nothing more, and the bench is
    # the later one's.
    task = await claimed(client)
    assert task["task_id"] == f"{later['execution_id']}.00"
