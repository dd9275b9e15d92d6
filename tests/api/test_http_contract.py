"""The cross-cutting HTTP rules: problems for bad input, request ids, limits, health."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.main import create_app
from app.settings import Settings
from app.store.base import Store, StoreUnavailable
from tests.api.test_benches import RIG1, assert_problem
from tests.conftest import ADMIN, ALICE


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b'{"bench_id": "rig-1"}', 422),
        (b'{"bench_id": 7, "name": "x", "type": "hil"}', 422),
        (b'{"bench_id": "Rig One!", "name": "x", "type": "hil"}', 422),
        (b'{"bench_id": "rig-1", "name": "x", "type": "hil", "colour": "red"}', 422),
        (b'{"bench_id": "rig-1", "name": "x", "type": "hil", "capabilities": "can"}', 422),
        (b'{"bench_id": "rig-1", "name": "x", "type": "hil", "heartbeat_interval_s": 0}', 422),
        (b"[]", 422),
        (b"null", 422),
    ],
)
async def test_bad_bodies_get_problem_details(
    client: httpx.AsyncClient, body: bytes, status: int
) -> None:
    response = await client.post(
        "/v1/benches", content=body, headers={**ADMIN, "Content-Type": "application/json"}
    )
    problem = assert_problem(response, status)
    assert problem["errors"]


async def test_validation_problem_lists_each_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/benches", json={"bench_id": "BAD ID"}, headers=ADMIN)
    problem = assert_problem(response, 422)
    locations = {tuple(error["location"]) for error in problem["errors"]}
    assert ("body", "bench_id") in locations
    assert ("body", "name") in locations


async def test_patch_refuses_nulls_and_unknown_fields(client: httpx.AsyncClient) -> None:
    await client.post("/v1/benches", json=RIG1, headers=ADMIN)
    headers = {**ADMIN, "If-Match": '"1"'}
    assert_problem(
        await client.patch("/v1/benches/rig-1", json={"name": None}, headers=headers), 422
    )
    assert_problem(
        await client.patch("/v1/benches/rig-1", json={"version": 9}, headers=headers), 422
    )
    assert_problem(
        await client.patch("/v1/benches/rig-1", json={"admin_state": "gone"}, headers=headers), 422
    )


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    big = {**RIG1, "name": "x" * (1024 * 1024 + 1)}
    assert_problem(await client.post("/v1/benches", json=big, headers=ADMIN), 413)


async def test_oversized_streamed_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 32768

    response = await client.post(
        "/v1/benches",
        content=chunks(),
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert_problem(response, 413)


async def test_non_json_body_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/benches", content=b"bench_id=rig-1", headers={**ADMIN, "Content-Type": "text/plain"}
    )
    assert_problem(response, 415)


async def test_bad_path_id_and_limits_are_4xx(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/benches/NOT..valid!", headers=ALICE), 422)
    assert_problem(await client.get("/v1/benches?limit=0", headers=ALICE), 422)
    assert_problem(await client.get("/v1/benches?limit=501", headers=ALICE), 422)
    assert_problem(await client.get("/v1/benches?status=sleepy", headers=ALICE), 422)
    assert_problem(await client.get("/v1/unknown", headers=ALICE), 404)
    not_allowed = await client.put("/v1/benches/rig-1", json={}, headers=ADMIN)
    assert_problem(not_allowed, 405)
    assert not_allowed.headers["allow"] == "DELETE, GET, PATCH"


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    made = await client.get("/v1/benches/nope", headers=ALICE)
    assert len(made.headers["x-request-id"]) == 36
    hostile = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert hostile.headers["x-request-id"] != "bad id\twith spaces"


async def test_health_needs_no_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    assert (await client.get("/openapi.json")).status_code == 200


class BrokenStore:
    """A store whose every call fails: what a lost database looks like to the service."""

    def __init__(self, real: Store, error: Exception) -> None:
        self.real = real
        self.error = error

    def __getattr__(self, name: str) -> Any:
        raise self.error

    async def ping(self) -> None:
        raise self.error


@pytest.mark.parametrize("store_kind", ["sqlite-memory"], indirect=True)
async def test_store_down_is_503_and_crashes_are_500_problems(
    settings: Settings, store: Store
) -> None:
    for error, status in [(StoreUnavailable("gone"), 503), (RuntimeError("boom"), 500)]:
        app = create_app(settings, store=BrokenStore(store, error))
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                response = await http.get("/v1/benches/rig-1", headers=ALICE)
                problem = assert_problem(response, status)
                assert "boom" not in problem["detail"]
                if status == 503:
                    assert response.headers["retry-after"]
                    ready = await http.get("/readyz")
                    assert_problem(ready, 503)


async def test_metrics_count_requests_conflicts_and_liveness(client: httpx.AsyncClient) -> None:
    await client.post("/v1/benches", json=RIG1, headers=ADMIN)
    await client.post("/v1/benches", json=RIG1, headers=ADMIN)  # 409
    await client.patch(
        "/v1/benches/rig-1", json={"name": "x"}, headers={**ADMIN, "If-Match": '"7"'}
    )  # 412
    await client.post("/v1/benches/rig-1/heartbeats", json={"agent_version": "1"}, headers=ADMIN)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        'orchestrator_http_requests_total{method="POST",route="/v1/benches",status="201"} 1.0'
        in text
    )
    assert 'orchestrator_conflicts_total{route="/v1/benches"} 1.0' in text
    assert 'orchestrator_precondition_failures_total{route="/v1/benches/{bench_id}"} 1.0' in text
    assert 'orchestrator_benches{status="online"} 1.0' in text
    assert 'orchestrator_task_queue_depth{status="pending"} 0.0' in text
    assert "orchestrator_http_request_duration_seconds_bucket" in text


@pytest.mark.parametrize("store_kind", ["sqlite-memory"], indirect=True)
async def test_a_caller_over_its_rate_gets_429_with_retry_after(
    settings: Settings, store: Store
) -> None:
    limited = settings.model_copy(update={"rate_limit_per_s": 0.5, "rate_limit_burst": 2})
    app = create_app(limited, store=store)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            statuses = [
                (await http.get("/v1/benches", headers=ALICE)).status_code for _ in range(3)
            ]
            assert statuses == [200, 200, 429]
            refused = await http.get("/v1/benches", headers=ALICE)
            assert_problem(refused, 429)
            assert int(refused.headers["retry-after"]) >= 1
            assert (await http.get("/v1/benches", headers=ADMIN)).status_code == 200
            assert (await http.get("/healthz")).status_code == 200
