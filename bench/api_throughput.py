"""API throughput on each store, as ratios to a baseline measured in the same run.

The machines are shared and noisy, so absolute numbers travel badly: every figure is also
given relative to GET /healthz through the same stack (middleware, auth-free routing,
JSON), measured just before. Run with `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from app.clock import SystemClock
from app.http.auth import token_digest
from app.main import create_app
from app.settings import Settings
from app.store.factory import open_store

ADMIN = {"Authorization": "Bearer bench-admin"}
AGENT = {"Authorization": "Bearer bench-agent"}


def _tokens(folder: Path) -> Path:
    path = folder / "tokens.json"
    path.write_text(
        json.dumps(
            [
                {"token_sha256": token_digest("bench-admin"), "subject": "root", "role": "admin"},
                {
                    "token_sha256": token_digest("bench-agent"),
                    "subject": "agent",
                    "role": "agent",
                    "bench_id": "b-0",
                },
            ]
        )
    )
    return path


async def _rate(count: int, concurrency: int, make: Callable[[int], Awaitable[Any]]) -> float:
    """Operations per second for ``count`` calls, ``concurrency`` at a time."""
    queue = iter(range(count))

    async def worker() -> None:
        for n in queue:
            await make(n)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def measure(settings: Settings, count: int) -> dict[str, float]:
    store = await open_store(settings)
    app = create_app(settings, store=store, clock=SystemClock())
    results: dict[str, float] = {}
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:

            async def ok(response: Awaitable[httpx.Response], status: int = 200) -> None:
                answered = await response
                assert answered.status_code == status, answered.text

            results["healthz"] = await _rate(count, 8, lambda n: ok(http.get("/healthz")))
            for n in range(8):
                await ok(
                    http.post(
                        "/v1/benches",
                        json={
                            "bench_id": f"b-{n}",
                            "name": "b",
                            "type": "hil",
                            "capabilities": ["can-bus"],
                        },
                        headers=ADMIN,
                    ),
                    201,
                )
            results["get_bench"] = await _rate(
                count, 8, lambda n: ok(http.get(f"/v1/benches/b-{n % 8}", headers=ADMIN))
            )
            start = datetime.now(UTC) + timedelta(days=1)

            def booking(n: int) -> Awaitable[None]:
                window_start = start + timedelta(hours=n)
                return ok(
                    http.post(
                        "/v1/reservations",
                        json={
                            "bench_id": f"b-{n % 8}",
                            "start": window_start.isoformat(),
                            "end": (window_start + timedelta(minutes=30)).isoformat(),
                        },
                        headers=ADMIN,
                    ),
                    201,
                )

            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            results["book"] = await _rate(count, 8, booking)
            results["rss_growth_kib_per_1000_bookings"] = (
                (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1000 / count
            )

            # Claim and complete: one active reservation on b-0 with `count` one-task runs.
            now = datetime.now(UTC)
            booked = await http.post(
                "/v1/reservations",
                json={
                    "bench_id": "b-0",
                    "start": now.isoformat(),
                    "end": (now + timedelta(minutes=50)).isoformat(),
                },
                headers=ADMIN,
            )
            assert booked.status_code == 201, booked.text
            rid = booked.json()["reservation_id"]
            runs = max(count // 4, 10)
            for _ in range(runs):
                await ok(
                    http.post(
                        "/v1/executions",
                        json={
                            "reservation_id": rid,
                            "commit_sha": "abcdef1",
                            "tasks": [{"type": "t"}],
                        },
                        headers=ADMIN,
                    ),
                    201,
                )

            async def claim_and_complete(_: int) -> None:
                claimed = await http.post("/v1/benches/b-0/tasks/claim", headers=AGENT)
                assert claimed.status_code == 200, claimed.text
                task_id = claimed.json()["task_id"]
                await ok(http.post(f"/v1/tasks/{task_id}/complete", json={}, headers=AGENT))

            results["claim_complete"] = await _rate(runs, 1, claim_and_complete)
    await store.close()
    return results


def _report(kind: str, results: dict[str, float]) -> None:
    base = results["healthz"]
    print(f"\n{kind}: baseline GET /healthz {base:,.0f}/s")
    for name, value in results.items():
        if name in ("healthz",) or name.startswith("rss"):
            continue
        print(f"  {name:<16} {value:>9,.1f}/s   {value / base:6.3f} x baseline")
    growth = results["rss_growth_kib_per_1000_bookings"]
    print(f"  peak RSS growth  {growth:,.0f} KiB per 1000 bookings")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--dynamodb-endpoint", help="moto or DynamoDB Local URL; else skipped")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tokens = _tokens(Path(folder))
        common: dict[str, Any] = {
            "tokens_file": tokens,
            "cursor_secret": "bench",
            "housekeeping_interval_s": 0,
            "rate_limit_per_s": 0,
            "log_level": "WARNING",
        }
        kinds: dict[str, Settings] = {
            "sqlite :memory:": Settings(store="sqlite", sqlite_path=":memory:", **common),
            "sqlite file": Settings(store="sqlite", sqlite_path=f"{folder}/o.db", **common),
        }
        if args.dynamodb_endpoint:
            kinds["dynamodb (moto)"] = Settings(
                store="dynamodb",
                dynamodb_endpoint_url=args.dynamodb_endpoint,
                table_prefix=f"bench{uuid.uuid4().hex[:6]}-",
                create_tables=True,
                **common,
            )
        for kind, settings in kinds.items():
            _report(kind, await measure(settings, args.count))


if __name__ == "__main__":
    asyncio.run(main())
