"""Webhook delivery latency: from the commit of a change to its receipt by a receiver.

The service runs as `orchestrator serve` with webhook delivery on (one process, the
default poll of 250 ms), a Standard Webhooks receiver listens on loopback, and a client
makes a change every 50 ms (a bench registered); each event's latency is the receipt
time minus the event's `at` (the service's clock at the change, a few ms before its
commit). Prints p50, p90 and p99 per store; `--json` writes them.

    python -m bench.webhook_latency --events 200
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.harness import service_command, serving
from bench.http_bench import ADMIN_TOKEN, write_tokens
from tests.support.moto_server import running_moto_server
from tests.support.receiver import receiving

PACE_S = 0.05


def _quantile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(store: str, events: int, endpoint: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-hooks-") as name, receiving() as receiver:
        folder = Path(name)
        env = {
            "ORCH_STORE": store,
            "ORCH_TOKENS_FILE": str(write_tokens(folder)),
            "ORCH_RATE_LIMIT_PER_S": "0",
            "ORCH_CURSOR_SECRET": "bench",
            "ORCH_LOG_LEVEL": "WARNING",
            "ORCH_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
            "ORCH_SQLITE_PATH": str(folder / "service.db"),
        }
        if store == "dynamodb":
            assert endpoint is not None
            env |= {
                "ORCH_DYNAMODB_ENDPOINT_URL": endpoint,
                "ORCH_TABLE_PREFIX": f"hooks-{uuid.uuid4().hex[:8]}-",
                "ORCH_CREATE_TABLES": "true",
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
            }
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with (
            serving(service_command(), env, folder / "service.log", "/readyz") as server,
            httpx.Client(base_url=server.url, headers=admin, timeout=30) as http,
        ):
            created = http.post(
                "/v1/webhooks", json={"url": receiver.url, "events": ["bench.registered"]}
            )
            created.raise_for_status()
            for n in range(events):
                started = time.monotonic()
                http.post(
                    "/v1/benches", json={"bench_id": f"b-{n:05d}", "name": "b", "type": "hil"}
                ).raise_for_status()
                time.sleep(max(0.0, PACE_S - (time.monotonic() - started)))
            arrived = receiver.wait_for(lambda got: len(got) >= events, timeout=120)
    latencies = [
        (message.at - datetime.fromisoformat(message.json["data"]["at"]).timestamp()) * 1000
        for message in arrived
    ]
    return {
        "store": store,
        "events": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1),
        "p90_ms": round(_quantile(latencies, 0.9), 1),
        "p99_ms": round(_quantile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    endpoint = os.environ.get("ORCH_BENCH_DYNAMODB_ENDPOINT")
    given = contextlib.nullcontext(endpoint) if endpoint is not None else None
    with given or running_moto_server() as moto:
        for store in ("sqlite", "dynamodb"):
            result = measure(store, args.events, moto)
            print(
                f"  webhooks, {store}: {result['events']} events, commit to receipt p50"
                f" {result['p50_ms']} ms, p90 {result['p90_ms']} ms, p99 {result['p99_ms']} ms",
                flush=True,
            )
            results.append(result)
    if args.json is not None:
        args.json.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
