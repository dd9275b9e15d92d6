"""`make bench`: every benchmark, then docs/performance.md from what they measured.

moto's server is started as the tests start it (single-threaded, real HTTP). The HTTP
scenarios run the service against the floor app on each store; growth and memory run on
SQLite; the DynamoDB cost meter and the change-feed throughput run last and print only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import report
from bench.harness import wrk_path
from tests.support.moto_server import running_moto_server

METHOD = (
    "Method: for each scenario the service (`orchestrator serve`, rate limit and webhook"
    " delivery off: no webhook is subscribed, and the relay's polls would load moto for the"
    " floor too) and the"
    " floor app (`bench/floor.py`: bare FastAPI on the same uvicorn doing the one store"
    " operation) take the same wrk load (2 threads, 32 connections; 50 for the one-bench"
    " bookings) in the order A B B A A B; the table gives the medians, their ratio, the"
    " service's p50/p99, and its p99/p50 in one more run at 64 connections. Round trips are"
    " per request, from docs/data-model.md (tests/api/test_round_trips.py holds it to the"
    " code)."
)


def _json_run(module: str, args: list[str], env: dict[str, str] | None = None) -> Any:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [sys.executable, "-m", module, *args, "--json", out.name],
            check=True,
            env={**os.environ, **(env or {})},
        )
        return json.loads(Path(out.name).read_text() or "null")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per wrk run")
    parser.add_argument("--no-write", action="store_true", help="leave docs/performance.md")
    args = parser.parse_args()
    wrk_path()  # fail first, with the way out, when wrk is missing
    seconds = ["--seconds", str(args.seconds)]
    results: dict[str, Any] = {"method": METHOD}
    status = 0
    with running_moto_server() as endpoint:
        for store in ("sqlite", "dynamodb"):
            print(f"service against floor, {store}:", flush=True)
            results[store] = _json_run(
                "bench.http_bench", ["--store", store, *seconds, "--dynamodb-endpoint", endpoint]
            )
        print("python calls per request:", flush=True)
        results["calls"] = _json_run("bench.calls", [])
        for name in ("growth", "memory"):
            if importlib.util.find_spec(f"bench.{name}") is None:
                print(f"{name}: not measured (bench/{name}.py is not here yet)", flush=True)
                continue
            print(f"{name}:", flush=True)
            results[name] = _json_run(f"bench.{name}", [])
        print("dashboard timeline:", flush=True)
        results["timeline"] = _json_run("bench.timeline_render", [])
        print("webhooks:", flush=True)
        results["webhooks"] = _json_run(
            "bench.webhook_latency",
            ["--events", "200"],
            env={"ORCH_BENCH_DYNAMODB_ENDPOINT": endpoint},
        )
        for name in ("dynamodb_costs", "feed_throughput"):
            status |= subprocess.call(
                [sys.executable, "-m", f"bench.{name}"],
                env={**os.environ, "ORCH_BENCH_DYNAMODB_ENDPOINT": endpoint},
            )
    if not args.no_write:
        print(f"wrote {report.write(results)}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
