"""Round trips and read units per API operation on the DynamoDB adapter.

Counts come from the adapter's own meter (every DynamoDB call goes through it), so they
are exact and do not depend on the machine. Read units are as moto reports them; moto
reports none for TransactWriteItems, whose cost docs/data-model.md computes from the
pricing rule. Needs a DynamoDB endpoint: `make bench` starts moto and passes it on.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from app.clock import SystemClock
from app.http.auth import token_digest
from app.main import create_app
from app.settings import Settings
from app.store.dynamodb.store import DynamoStore
from app.store.factory import open_store

ADMIN = {"Authorization": "Bearer cost-admin"}
AGENT = {"Authorization": "Bearer cost-agent"}


async def main(endpoint: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        tokens = Path(folder) / "tokens.json"
        tokens.write_text(
            json.dumps(
                [
                    {
                        "token_sha256": token_digest("cost-admin"),
                        "subject": "root",
                        "role": "admin",
                    },
                    {
                        "token_sha256": token_digest("cost-agent"),
                        "subject": "agent",
                        "role": "agent",
                        "bench_id": "rig-1",
                    },
                ]
            )
        )
        settings = Settings(
            store="dynamodb",
            dynamodb_endpoint_url=endpoint,
            table_prefix=f"cost{uuid.uuid4().hex[:6]}-",
            create_tables=True,
            tokens_file=tokens,
            cursor_secret="x",
            housekeeping_interval_s=0,
            rate_limit_per_s=0,
            log_level="WARNING",
        )
        store = await open_store(settings)
        assert isinstance(store, DynamoStore)
        app = create_app(settings, store=store, clock=SystemClock())
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://cost") as http:

                async def cost(
                    name: str, call: Callable[[], Awaitable[httpx.Response]]
                ) -> httpx.Response:
                    store.calls.clear()
                    store.capacity.clear()
                    response = await call()
                    assert response.status_code < 300, response.text
                    trips = sum(store.calls.values())
                    reads = sum(store.capacity.values())
                    detail = ", ".join(f"{op} {n}" for op, n in sorted(store.calls.items()))
                    print(f"{name:<44} {trips:>2} round trips ({detail}); {reads:g} units reported")
                    return response

                now = datetime.now(UTC)
                await cost(
                    "register a bench (2 capabilities)",
                    lambda: http.post(
                        "/v1/benches",
                        json={
                            "bench_id": "rig-1",
                            "name": "r",
                            "type": "hil",
                            "capabilities": ["can-bus", "arm64"],
                        },
                        headers=ADMIN,
                    ),
                )
                await cost(
                    "heartbeat",
                    lambda: http.post(
                        "/v1/benches/rig-1/heartbeats", json={"agent_version": "1"}, headers=AGENT
                    ),
                )
                await cost("get a bench", lambda: http.get("/v1/benches/rig-1", headers=ADMIN))
                await cost(
                    "list benches by capability",
                    lambda: http.get("/v1/benches?capability=can-bus", headers=ADMIN),
                )
                tomorrow = now + timedelta(days=1)
                booked = await cost(
                    "book a bench (one day)",
                    lambda: http.post(
                        "/v1/reservations",
                        json={
                            "bench_id": "rig-1",
                            "start": tomorrow.isoformat(),
                            "end": (tomorrow + timedelta(hours=2)).isoformat(),
                        },
                        headers=ADMIN,
                    ),
                )
                await cost(
                    "book a bench (one day, Idempotency-Key)",
                    lambda: http.post(
                        "/v1/reservations",
                        json={
                            "bench_id": "rig-1",
                            "start": (tomorrow + timedelta(hours=3)).isoformat(),
                            "end": (tomorrow + timedelta(hours=4)).isoformat(),
                        },
                        headers={**ADMIN, "Idempotency-Key": "k1"},
                    ),
                )
                await cost(
                    "book by capability (1 candidate)",
                    lambda: http.post(
                        "/v1/reservations",
                        json={
                            "capabilities": ["can-bus"],
                            "start": (tomorrow + timedelta(hours=5)).isoformat(),
                            "end": (tomorrow + timedelta(hours=6)).isoformat(),
                        },
                        headers=ADMIN,
                    ),
                )
                rid = booked.json()["reservation_id"]
                await cost(
                    "cancel a reservation",
                    lambda: http.post(f"/v1/reservations/{rid}/cancel", headers=ADMIN),
                )
                active = await http.post(
                    "/v1/reservations",
                    json={
                        "bench_id": "rig-1",
                        "start": now.isoformat(),
                        "end": (now + timedelta(hours=1)).isoformat(),
                    },
                    headers=ADMIN,
                )
                run = await cost(
                    "create an execution (3 tasks)",
                    lambda: http.post(
                        "/v1/executions",
                        json={
                            "reservation_id": active.json()["reservation_id"],
                            "commit_sha": "abcdef1",
                            "tasks": [{"type": "t"}] * 3,
                        },
                        headers=ADMIN,
                    ),
                )
                for n in range(3):
                    claimed = await cost(
                        f"claim task {n + 1} of 3",
                        lambda: http.post("/v1/benches/rig-1/tasks/claim", headers=AGENT),
                    )
                    task_id = claimed.json()["task_id"]
                    task_url = f"/v1/tasks/{task_id}"
                    await cost(
                        "task heartbeat",
                        partial(http.post, f"{task_url}/heartbeat", headers=AGENT),
                    )
                    await cost(
                        f"complete task {n + 1} of 3",
                        partial(http.post, f"{task_url}/complete", json={}, headers=AGENT),
                    )
                status = (
                    await http.get(f"/v1/executions/{run.json()['execution_id']}", headers=ADMIN)
                ).json()["status"]
                print("execution ended", status)
        await store.close()


if __name__ == "__main__":
    endpoint = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ORCH_BENCH_DYNAMODB_ENDPOINT")
    if not endpoint:
        print("dynamodb_costs: no DynamoDB endpoint given; skipped")
    else:
        asyncio.run(main(endpoint))
