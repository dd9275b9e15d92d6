"""One name per concept and one form per instant: what history says of a resource reads
exactly as the API renders the resource itself."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.api.test_executions import active_reservation, claim
from tests.api.test_reservations import add_bench, book
from tests.conftest import AGENT1, ALICE, CI

INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")


async def _history(client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await client.get(f"{url}/history", headers=CI)).json()["items"]
    return items


def _after(entry: dict[str, Any]) -> dict[str, Any]:
    return {name: change["to"] for name, change in entry["changes"].items()}


async def test_reservation_history_speaks_the_api(client: httpx.AsyncClient) -> None:
    await add_bench(client)
    booked = (await book(client)).json()
    url = f"/v1/reservations/{booked['reservation_id']}"
    created = _after((await _history(client, url))[0])
    assert created == {
        name: booked[name] for name in ("bench_id", "user_id", "start", "end", "purpose", "status")
    }
    assert created["status"] == "confirmed"
    cancelled = (await client.post(f"{url}/cancel", headers=ALICE)).json()
    entry = (await _history(client, url))[-1]
    assert entry["changes"] == {"status": {"from": "confirmed", "to": cancelled["status"]}}
    for instant in (booked["start"], booked["created_at"], entry["at"], created["end"]):
        assert INSTANT.match(instant), instant


async def test_execution_history_speaks_the_api(client: httpx.AsyncClient) -> None:
    reservation_id = await active_reservation(client)
    run = await client.post(
        "/v1/executions",
        json={"reservation_id": reservation_id, "commit_sha": "a" * 40, "tasks": [{"type": "t"}]},
        headers=CI,
    )
    assert run.status_code == 201, run.text
    url = f"/v1/executions/{run.json()['execution_id']}"
    task = (await claim(client)).json()
    done = await client.post(
        f"/v1/tasks/{task['task_id']}/complete", json={"result": {"ok": 1}}, headers=AGENT1
    )
    assert done.status_code == 200, done.text
    finished = (await client.get(url, headers=CI)).json()
    assert finished["status"] == "passed"
    seen: dict[str, Any] = {}
    for entry in await _history(client, url):
        seen.update(_after(entry))
    for name in ("status", "started_at", "finished_at"):
        assert seen[name] == finished[name], name
    assert INSTANT.match(seen["started_at"]) and INSTANT.match(seen["finished_at"])
