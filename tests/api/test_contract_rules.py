"""The HTTP contract's rules on every endpoint they touch (issue 9): 404 before any
precondition, unknown query parameters, trailing slashes, `instance` on every Problem,
authorisation before state, repeated actions, replays whatever happened since."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.clock import ManualClock
from app.main import create_app
from app.settings import Settings
from app.store.base import Store, StoreUnavailable
from tests.api.test_benches import RIG1, assert_problem
from tests.api.test_executions import active_reservation, run_body
from tests.api.test_http_contract import BrokenStore
from tests.api.test_reservations import book
from tests.conftest import ADMIN, ALICE, BOB, CI


async def test_an_unknown_resource_is_404_whatever_its_preconditions(
    client: httpx.AsyncClient,
) -> None:
    for method, url, body in [
        ("PATCH", "/v1/benches/nope", {"name": "x"}),
        ("DELETE", "/v1/benches/nope", None),
        ("PATCH", "/v1/reservations/nope", {"purpose": "x"}),
        ("PATCH", "/v1/executions/nope", {"summary": "x"}),
    ]:
        response = await client.request(method, url, json=body, headers=ADMIN)
        assert_problem(response, 404)
    await client.post("/v1/benches", json=RIG1, headers=ADMIN)
    required = await client.patch("/v1/benches/rig-1", json={"name": "x"}, headers=ADMIN)
    assert_problem(required, 428)


async def test_unknown_query_parameters_are_400_naming_the_known_ones(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/v1/benches", json=RIG1, headers=ADMIN)
    typo = await client.get("/v1/benches?capabilities=can-bus", headers=ALICE)
    problem = assert_problem(typo, 400)
    assert problem["unknown"] == ["capabilities"]
    assert "capability" in problem["known"] and "cursor" in problem["known"]
    assert (await client.get("/v1/benches?capability=can-bus", headers=ALICE)).status_code == 200
    assert_problem(await client.get("/v1/benches/rig-1?verbose=1", headers=ALICE), 400)


async def test_a_trailing_slash_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/benches/", headers=ALICE)
    assert assert_problem(response, 404)["instance"] == "/v1/benches/"
    assert "location" not in response.headers


async def test_every_problem_names_its_instance(client: httpx.AsyncClient) -> None:
    url = "/v1/benches"
    not_json = await client.post(url, content=b"x", headers={**ADMIN, "Content-Type": "text/plain"})
    too_long = await client.post(
        url,
        content=b"{}",
        headers={**ADMIN, "Content-Type": "application/json", "Content-Length": "x"},
    )
    for response, status in [(not_json, 415), (too_long, 400)]:
        assert assert_problem(response, status)["instance"] == url
    no_token = await client.get("/v1/benches")
    assert assert_problem(no_token, 401)["instance"] == url


async def test_a_field_that_may_not_be_null_says_so_in_the_schema(
    client: httpx.AsyncClient,
) -> None:
    patch = (await client.get("/openapi.json")).json()["components"]["schemas"]["BenchPatch"]
    for name, field in patch["properties"].items():
        assert "anyOf" not in field and field.get("type") != "null", name
    await client.post("/v1/benches", json=RIG1, headers=ADMIN)
    refused = await client.patch(
        "/v1/benches/rig-1", json={"admin_state": None}, headers={**ADMIN, "If-Match": '"1"'}
    )
    assert_problem(refused, 422)


async def history_versions(client: httpx.AsyncClient, url: str) -> list[int]:
    items = (await client.get(f"{url}/history", headers=ADMIN)).json()["items"]
    return [entry["version"] for entry in items]


async def test_repeating_an_action_that_is_done_changes_nothing(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await client.post("/v1/benches", json=RIG1, headers=ADMIN)
    booked = (await book(client)).json()
    url = f"/v1/reservations/{booked['reservation_id']}"
    first = await client.post(f"{url}/cancel", headers=ALICE)
    again = await client.post(f"{url}/cancel", headers=ALICE)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json() and again.headers["etag"] == first.headers["etag"]
    assert await history_versions(client, url) == [1, 2]
    # Authorisation before state: another user hears 403, not "already cancelled".
    assert_problem(await client.post(f"{url}/cancel", headers=BOB), 403)
    # Not allowed from the current state: 409 with what is allowed.
    refused = assert_problem(await client.post(f"{url}/release", headers=ALICE), 409)
    assert refused["allowed_transitions"] == []

    active = (await book(client, start="2026-11-25T08:00:00Z", end="2026-11-25T09:00:00Z")).json()
    active_url = f"/v1/reservations/{active['reservation_id']}"
    clock.advance(timedelta(minutes=10))
    released = await client.post(f"{active_url}/release", headers=ALICE)
    released_again = await client.post(f"{active_url}/release", headers=ALICE)
    assert released_again.status_code == 200
    assert released_again.json()["version"] == released.json()["version"] == 2
    assert await history_versions(client, active_url) == [1, 2]

    retired = await client.delete("/v1/benches/rig-1", headers={**ADMIN, "If-Match": '"1"'})
    retired_again = await client.delete("/v1/benches/rig-1", headers={**ADMIN, "If-Match": "*"})
    assert retired_again.status_code == 200
    assert retired_again.json()["version"] == retired.json()["version"] == 2


async def test_a_key_replays_its_answer_whatever_happened_since(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    reservation_id = await active_reservation(client)
    key = {"Idempotency-Key": "run-42"}
    created = await client.post(
        "/v1/executions", json=run_body(reservation_id), headers={**CI, **key}
    )
    assert created.status_code == 201
    await client.post(f"/v1/reservations/{reservation_id}/cancel", headers=ALICE)
    replayed = await client.post(
        "/v1/executions", json=run_body(reservation_id), headers={**CI, **key}
    )
    assert replayed.status_code == 201, replayed.text
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json()["execution_id"] == created.json()["execution_id"]

    soon: dict[str, Any] = {
        "bench_id": "rig-1",
        "start": "2026-11-25T12:00:00Z",
        "end": "2026-11-25T13:00:00Z",
    }
    first = await client.post("/v1/reservations", json=soon, headers={**ALICE, **key})
    clock.advance(timedelta(hours=6))  # the window is over: a new request would be refused
    late = await client.post("/v1/reservations", json=soon, headers={**ALICE, **key})
    assert (first.status_code, late.status_code) == (201, 201), late.text
    assert late.json()["reservation_id"] == first.json()["reservation_id"]
    fresh = await client.post("/v1/reservations", json=soon, headers=ALICE)
    assert_problem(fresh, 422)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("store_kind", ["sqlite-memory"], indirect=True)
async def test_unhandled_errors_are_logged_with_the_request_id(
    settings: Settings, store: Store
) -> None:
    # create_app configures the root logger, so the records are caught on the logger itself.
    caught = _Records()
    logging.getLogger("app.http").addHandler(caught)
    try:
        app = create_app(settings, store=BrokenStore(store, RuntimeError("boom")))
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                response = await http.get(
                    "/v1/benches/rig-1", headers={**ALICE, "X-Request-ID": "trace-me-7"}
                )
    finally:
        logging.getLogger("app.http").removeHandler(caught)
    assert_problem(response, 500)
    logged = [r for r in caught.records if r.getMessage() == "unhandled error"]
    assert [getattr(r, "request_id", None) for r in logged] == ["trace-me-7"]


@pytest.mark.parametrize("store_kind", ["sqlite-memory"], indirect=True)
async def test_readiness_does_not_echo_the_store_error(settings: Settings, store: Store) -> None:
    secret_text = "connect to 10.1.2.3:8000 as svc-orchestrator failed"
    app = create_app(settings, store=BrokenStore(store, StoreUnavailable(secret_text)))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            ready = await http.get("/readyz")
    problem = assert_problem(ready, 503)
    assert ready.headers["retry-after"]
    assert "10.1.2.3" not in ready.text and "svc-orchestrator" not in problem["detail"]
