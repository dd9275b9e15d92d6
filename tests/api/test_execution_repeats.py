"""The HTTP contract's rules on executions and tasks, on every store: who may report on a
task (403 before any state), repeated actions (200, nothing changes) against actions the
state does not allow (409 with ``allowed_transitions``), and 404 before 428."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.test_benches import assert_problem
from tests.api.test_executions import active_reservation, claim, create_run
from tests.conftest import ADMIN, AGENT1, AGENT2, ALICE, BOB, CI


async def started_run(client: httpx.AsyncClient, tasks: int = 2) -> tuple[str, dict[str, Any]]:
    """A run's id and its first task, leased to rig-1's agent."""
    run = await create_run(client, await active_reservation(client), tasks=tasks)
    leased = await claim(client)
    assert leased.status_code == 200, leased.text
    task: dict[str, Any] = leased.json()
    return run["execution_id"], task


async def history(client: httpx.AsyncClient, url: str) -> list[Any]:
    items: list[Any] = (await client.get(f"{url}/history", headers=CI)).json()["items"]
    return items


REPORTS: list[tuple[str, dict[str, Any] | None]] = [
    ("heartbeat", None),
    ("complete", {"result": {}}),
    ("fail", {"error": "x"}),
]


@pytest.mark.parametrize(("report", "body"), REPORTS)
async def test_task_reports_by_callers_who_are_not_agents_are_403(
    client: httpx.AsyncClient, report: str, body: dict[str, Any] | None
) -> None:
    _, task = await started_run(client)
    url = f"/v1/tasks/{task['task_id']}/{report}"
    for headers in (ADMIN, ALICE, CI):
        assert_problem(await client.post(url, json=body, headers=headers), 403)
        # Whatever the task's state, even none at all.
        assert_problem(
            await client.post(f"/v1/tasks/nope/{report}", json=body, headers=headers), 403
        )
    # Another bench's agent is refused before the task's state: nothing about it leaks.
    other = assert_problem(await client.post(url, json=body, headers=AGENT2), 403)
    assert "current_status" not in other
    assert (await client.post(url, json=body, headers=AGENT1)).status_code == 200
    stored = (await client.get(f"/v1/tasks/{task['task_id']}", headers=CI)).json()
    assert stored["version"] == 3  # created, claimed, and the holder's one report


async def test_a_repeated_completion_answers_the_task_as_it_is(client: httpx.AsyncClient) -> None:
    execution_id, task = await started_run(client)
    url = f"/v1/tasks/{task['task_id']}"
    done = await client.post(f"{url}/complete", json={"result": {"ok": 1}}, headers=AGENT1)
    assert (done.status_code, done.json()["version"]) == (200, 3)
    entries = await history(client, url)
    run_version = (await client.get(f"/v1/executions/{execution_id}", headers=CI)).json()["version"]

    again = await client.post(f"{url}/complete", json={"result": {"ok": 1}}, headers=AGENT1)
    assert again.status_code == 200, again.text
    assert again.json() == done.json() and again.headers["etag"] == done.headers["etag"] == '"3"'
    assert await history(client, url) == entries
    current = (await client.get(f"/v1/executions/{execution_id}", headers=CI)).json()
    assert current["version"] == run_version

    different = await client.post(f"{url}/complete", json={"result": {"ok": 2}}, headers=AGENT1)
    problem = assert_problem(different, 409)
    assert (problem["current_status"], problem["allowed_transitions"]) == ("succeeded", [])
    assert_problem(
        await client.post(f"{url}/complete", json={"result": {"ok": 1}}, headers=AGENT2), 403
    )
    failing = await client.post(f"{url}/fail", json={"error": "late"}, headers=AGENT1)
    assert assert_problem(failing, 409)["allowed_transitions"] == []
    beat = assert_problem(await client.post(f"{url}/heartbeat", headers=AGENT1), 409)
    assert (beat["current_status"], beat["allowed_transitions"]) == ("succeeded", [])
    assert await history(client, url) == entries


async def test_a_repeated_failure_answers_the_task_as_it_is(client: httpx.AsyncClient) -> None:
    execution_id, task = await started_run(client)
    url = f"/v1/tasks/{task['task_id']}"
    failed = await client.post(f"{url}/fail", json={"error": "assert"}, headers=AGENT1)
    assert failed.json()["status"] == "failed"
    run = (await client.get(f"/v1/executions/{execution_id}", headers=CI)).json()
    assert run["status"] == "failed"

    again = await client.post(f"{url}/fail", json={"error": "assert"}, headers=AGENT1)
    assert (again.status_code, again.json()) == (200, failed.json())
    for body in ({"error": "other"}, {"error": "assert", "retryable": True}):
        problem = assert_problem(await client.post(f"{url}/fail", json=body, headers=AGENT1), 409)
        assert problem["allowed_transitions"] == []
    assert_problem(await client.post(f"{url}/fail", json={"error": "assert"}, headers=AGENT2), 403)
    assert [e["version"] for e in await history(client, url)] == [1, 2, 3]
    after = (await client.get(f"/v1/executions/{execution_id}", headers=CI)).json()
    assert after["version"] == run["version"]


async def test_a_repeated_retryable_failure_spends_no_attempt(client: httpx.AsyncClient) -> None:
    _, task = await started_run(client)
    url = f"/v1/tasks/{task['task_id']}"
    body = {"error": "flaky USB", "retryable": True}
    retried = await client.post(f"{url}/fail", json=body, headers=AGENT1)
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 1)
    again = await client.post(f"{url}/fail", json=body, headers=AGENT1)
    assert (again.status_code, again.json()) == (200, retried.json())
    final = assert_problem(
        await client.post(f"{url}/fail", json={"error": "flaky USB"}, headers=AGENT1), 409
    )
    assert final["allowed_transitions"] == ["cancelled", "leased"]
    # Taken again, the report is about the new attempt.
    assert (await claim(client)).json()["attempts"] == 2


async def test_cancelling_a_cancelled_run_changes_nothing_and_a_finished_one_is_409(
    client: httpx.AsyncClient,
) -> None:
    reservation_id = await active_reservation(client)
    run = await create_run(client, reservation_id, tasks=1)
    url = f"/v1/executions/{run['execution_id']}"
    cancelled = await client.post(f"{url}/cancel", headers=CI)
    assert (cancelled.status_code, cancelled.json()["version"]) == (200, 2)
    entries = await history(client, url)
    again = await client.post(f"{url}/cancel", headers=ADMIN)
    assert again.status_code == 200, again.text
    assert again.json() == cancelled.json() and again.headers["etag"] == '"2"'
    assert await history(client, url) == entries
    with_tag = await client.post(f"{url}/cancel", headers={**CI, "If-Match": '"2"'})
    assert with_tag.json()["version"] == 2

    passed = await create_run(client, reservation_id, tasks=1)
    task = (await claim(client)).json()
    await client.post(f"/v1/tasks/{task['task_id']}/complete", json={}, headers=AGENT1)
    refused = await client.post(f"/v1/executions/{passed['execution_id']}/cancel", headers=CI)
    problem = assert_problem(refused, 409)
    assert (problem["current_status"], problem["allowed_transitions"]) == ("passed", [])


async def test_patching_an_unknown_run_is_404_whatever_its_preconditions(
    client: httpx.AsyncClient,
) -> None:
    for headers in (CI, {**CI, "If-Match": '"1"'}, {**CI, "If-Match": "*"}):
        response = await client.patch("/v1/executions/nope", json={"summary": "x"}, headers=headers)
        assert_problem(response, 404)
    run = await create_run(client, await active_reservation(client))
    url = f"/v1/executions/{run['execution_id']}"
    assert_problem(await client.patch(url, json={"summary": "x"}, headers=CI), 428)
    # Who may not change the run at all is told so first.
    assert_problem(await client.patch(url, json={"summary": "x"}, headers=BOB), 403)
    assert_problem(await client.patch(url, json={"summary": "x"}, headers=ADMIN), 428)
