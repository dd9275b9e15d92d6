"""What housekeeping does is counted in the app's own metrics registry: by the loop the API
process runs, and by a housekeeper handed that registry."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import generate_latest

from app.clock import ManualClock
from app.main import create_app
from app.ops.housekeeping import Housekeeper
from app.ops.metrics import Metrics
from app.settings import Settings
from app.store.base import Store
from tests.api.test_benches import RIG1
from tests.conftest import ADMIN, AGENT1

LIVENESS_COUNTER = 'orchestrator_housekeeping_actions_total{action="liveness_changes_recorded"}'


async def test_a_housekeeper_counts_its_actions_in_the_registry_it_is_given(
    client: httpx.AsyncClient, store: Store, clock: ManualClock, settings: Settings
) -> None:
    metrics = Metrics()
    housekeeper = Housekeeper(store, clock, settings, metrics)
    await client.post("/v1/benches", json=RIG1, headers=ADMIN)
    await client.post("/v1/benches/rig-1/heartbeats", json={"agent_version": "1"}, headers=AGENT1)
    assert (await housekeeper.run_once()).liveness_changes_recorded == 1
    assert f"{LIVENESS_COUNTER} 1.0" in generate_latest(metrics.registry).decode()
    assert (await housekeeper.run_once()).liveness_changes_recorded == 0
    assert f"{LIVENESS_COUNTER} 1.0" in generate_latest(metrics.registry).decode()


@pytest.mark.parametrize("store_kind", ["sqlite-memory"], indirect=True)
async def test_the_api_process_loop_reports_to_the_served_metrics(
    settings: Settings, store: Store, clock: ManualClock
) -> None:
    looping = settings.model_copy(update={"housekeeping_interval_s": 0.02})
    app = create_app(looping, store=store, clock=clock)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            await http.post("/v1/benches", json=RIG1, headers=ADMIN)
            await http.post(
                "/v1/benches/rig-1/heartbeats", json={"agent_version": "1"}, headers=AGENT1
            )
            # The loop runs on its own period: poll the endpoint until it has counted.
            deadline = time.monotonic() + 10
            while LIVENESS_COUNTER not in (text := (await http.get("/metrics")).text):
                assert time.monotonic() < deadline, "housekeeping never reached /metrics"
                await asyncio.sleep(0.02)
            assert f"{LIVENESS_COUNTER} 1.0" in text
