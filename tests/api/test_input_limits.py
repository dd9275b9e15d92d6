"""Input that would break stored data is refused at the boundary with a Problem, and is
never stored; items stored before the limits existed do not break a list (issue 9)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import httpx
import pytest

from app.executions.domain import TaskSpec, new_execution
from app.history.domain import HistoryEntry
from app.store.base import Store, Write
from tests.api.test_benches import assert_problem
from tests.api.test_executions import active_reservation, run_body
from tests.conftest import ADMIN, ALICE, CI, START


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


async def runs_of(client: httpx.AsyncClient, reservation_id: str) -> list[str]:
    listed = await client.get(f"/v1/executions?reservation_id={reservation_id}", headers=CI)
    assert listed.status_code == 200, listed.text
    return [run["execution_id"] for run in listed.json()["items"]]


async def post_raw(client: httpx.AsyncClient, url: str, text: str) -> httpx.Response:
    """A body as written (NaN, lone surrogates): what a careless client can send."""
    return await client.post(
        url, content=text.encode(), headers={**CI, "Content-Type": "application/json"}
    )


async def test_bad_free_form_objects_are_422_and_nothing_is_stored(
    client: httpx.AsyncClient,
) -> None:
    reservation_id = await active_reservation(client)
    body = run_body(reservation_id)
    cases = {
        "900 levels deep": json.dumps({**body, "metadata": nested(900)}),
        "33 levels deep": json.dumps({**body, "metadata": nested(33)}),
        "a lone surrogate": json.dumps(body)[:-1] + ', "metadata": {"k": "\\udfff\\ud800"}}',
        "1e999": json.dumps(body)[:-1] + ', "metadata": {"n": 1e999}}',
        "NaN": json.dumps(body)[:-1] + ', "metadata": {"n": NaN}}',
        "over 16 KiB": json.dumps({**body, "metadata": {"blob": ["x" * 4000] * 5}}),
        "a NaN task parameter": json.dumps(body).replace(
            '"params": {"n": 0}', '"params": {"n": NaN}'
        ),
    }
    for name, text in cases.items():
        response = await post_raw(client, "/v1/executions", text)
        problem = assert_problem(response, 422)
        assert problem["instance"] == "/v1/executions", name
    assert await runs_of(client, reservation_id) == []
    deepest_allowed = await client.post(
        "/v1/executions", json={**body, "metadata": nested(32)}, headers=CI
    )
    assert deepest_allowed.status_code == 201, deepest_allowed.text


@pytest.mark.parametrize(
    "start",
    ["9999-12-31T20:00:00-14:00", "0001-01-01T00:00:00+14:00", "9100-01-01T00:00:00Z"],
)
async def test_instants_that_cannot_be_stored_are_422(
    client: httpx.AsyncClient, start: str
) -> None:
    await client.post(
        "/v1/benches", json={"bench_id": "rig-1", "name": "r", "type": "hil"}, headers=ADMIN
    )
    response = await client.post(
        "/v1/reservations",
        json={"bench_id": "rig-1", "start": start, "end": "9999-12-31T23:00:00Z"},
        headers=ALICE,
    )
    assert_problem(response, 422)


async def test_query_instants_and_durations_must_be_what_they_say(
    client: httpx.AsyncClient,
) -> None:
    for query in ("to=0.5", "to=1732521600", "from=tomorrow"):
        assert_problem(await client.get(f"/v1/reservations?{query}", headers=ALICE), 422)
    spaced = await client.get("/v1/reservations?from=2026-11-25T09:00:00 01:00", headers=ALICE)
    assert "%2B" in json.dumps(assert_problem(spaced, 422))
    two_hours = await client.get("/v1/availability?duration=2h", headers=ALICE)
    assert "PT2H" in json.dumps(assert_problem(two_hours, 422))
    encoded = await client.get("/v1/reservations?from=2026-11-25T09:00:00%2B01:00", headers=ALICE)
    assert encoded.status_code == 200, encoded.text
    assert (await client.get("/v1/availability?duration=PT2H", headers=ALICE)).status_code == 200


async def test_precondition_headers_have_a_length_limit(client: httpx.AsyncClient) -> None:
    await client.post(
        "/v1/benches", json={"bench_id": "rig-1", "name": "r", "type": "hil"}, headers=ADMIN
    )
    huge = await client.patch(
        "/v1/benches/rig-1",
        json={"name": "x"},
        headers={**ADMIN, "If-Match": '"' + "9" * 10_000 + '"'},
    )
    assert_problem(huge, 400)
    long_number = await client.patch(
        "/v1/benches/rig-1",
        json={"name": "x"},
        headers={**ADMIN, "If-Match": '"' + "9" * 500 + '"'},
    )
    assert_problem(long_number, 412)  # a number, but not a version of this bench
    none_match = await client.get(
        "/v1/benches/rig-1", headers={**ALICE, "If-None-Match": "x" * 2000}
    )
    assert_problem(none_match, 400)


@pytest.mark.parametrize("store_kind", ["sqlite-memory", "sqlite-file"], indirect=True)
async def test_a_stored_item_that_cannot_be_rendered_does_not_break_lists(
    client: httpx.AsyncClient, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Such items can only predate the limits: written here straight into the store."""
    reservation_id = await active_reservation(client)
    good = (await client.post("/v1/executions", json=run_body(reservation_id), headers=CI)).json()
    reservation = await store.reservations.get(reservation_id)
    assert reservation is not None
    for bad_metadata in (nested(900), {"k": "\udfff\ud800"}):
        execution, tasks = new_execution(
            execution_id=f"bad-{len(str(bad_metadata))}",
            reservation_id=reservation_id,
            bench_id="rig-1",
            created_by="ci-bot",
            commit_sha="9fceb02",
            pipeline_url=None,
            metadata={},
            tasks=[TaskSpec(type="flash", params={}, timeout_s=60, max_attempts=1)],
            now=START,
        )
        entry = HistoryEntry(
            "execution", execution.execution_id, 1, START, "ci-bot", "r", "created"
        )
        bad = replace(execution, metadata=bad_metadata)
        await store.executions.apply([Write(None, bad)], [Write(None, t) for t in tasks], [entry])
    with caplog.at_level(logging.ERROR, logger="app.http"):
        assert await runs_of(client, reservation_id) == [good["execution_id"]]
        by_bench = await client.get("/v1/executions?bench_id=rig-1", headers=CI)
        assert [r["execution_id"] for r in by_bench.json()["items"]] == [good["execution_id"]]
        nested_route = await client.get(f"/v1/reservations/{reservation_id}/executions", headers=CI)
        assert len(nested_route.json()["items"]) == 1
    assert sum("cannot be rendered" in record.getMessage() for record in caplog.records) == 6
