"""docs/performance.md, written from one `make bench` run's results."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.data_model import documented

REPO = Path(__file__).resolve().parents[1]
PERFORMANCE = REPO / "docs" / "performance.md"

# Which access pattern of docs/data-model.md each scenario's requests are.
ACCESS_PATTERN = {
    "heartbeat": "heartbeat",
    "get": "get a bench / reservation / task",
    "get_not_modified": "get a bench / reservation / task",
    "book_distinct": "book a bench, one day",
    "book_one_bench": "book a bench, one day",
    "capability_list": "list benches by capabilities",
    "calendar": "bench calendar",
    "claim_complete": "claim a task",
    "history": "history of a bench / reservation / task",
}
TARGETS = {
    ("sqlite", "heartbeat"): 0.7,
    ("sqlite", "get"): 0.7,
    ("sqlite", "get_not_modified"): 0.7,
    ("sqlite", "book_distinct"): 0.5,
}
DYNAMODB_TARGET = 0.8


def _round_trips() -> dict[str, tuple[str, str]]:
    """(DynamoDB, SQLite) round trips by access pattern, as docs/data-model.md gives them
    (tests/api/test_round_trips.py holds the doc to what the code does)."""
    dynamo, sqlite = documented("round trips"), documented("SQLite round trips")
    return {pattern: (cell, sqlite[pattern]) for pattern, cell in dynamo.items()}


def _short(cell: str) -> str:
    return cell.split(" (", 1)[0].split(";", 1)[0]


def machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    wrk_version = (wrk.stdout or wrk.stderr).split("[", 1)[0].strip()
    return (
        f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, {wrk_version}"
    )


def _mark(ratio: float, target: float | None) -> str:
    if target is None:
        return f"{ratio:.2f}"
    return f"{ratio:.2f} {'(meets ' if ratio >= target else '(below '}{target})"


def _scenario_table(store: str, outcomes: list[dict[str, Any]], trips: dict[str, Any]) -> str:
    lines = [
        "| scenario | service req/s | floor req/s | ratio (target) | p50 ms | p99 ms |"
        " p99/p50 at 64 conn. | store round trips |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        target = DYNAMODB_TARGET if store == "dynamodb" else TARGETS.get((store, o["scenario"]))
        dynamo_trips, sqlite_trips = trips.get(ACCESS_PATTERN[o["scenario"]], ("?", "?"))
        lines.append(
            f"| {o['title']} | {o['service_rps']:.0f} | {o['floor_rps']:.0f} |"
            f" {_mark(o['ratio'], target)} | {o['p50_ms']:.1f} | {o['p99_ms']:.1f} |"
            f" {o['p99_over_p50_at_64']:.1f} |"
            f" {_short(dynamo_trips if store == 'dynamodb' else sqlite_trips)} |"
        )
    return "\n".join(lines)


GROWTH_TARGET = 1.3
RSS_TARGET = 0.10


def _growth_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "## Growth: the same request on a small and a large lab (SQLite)",
        "",
        "`bench/growth.py`: p50 at 4 connections, small and large labs alternating"
        " (S L L S S L); the answer is the same size in both.",
        "",
        "| request | grows | small | large | p50 small ms | p50 large ms | ratio (target ≤ 1.3) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        verdict = "meets" if row["ratio"] <= GROWTH_TARGET else "above"
        lines.append(
            f"| {row['query']} | {row['grows']} | {row['small']:,} | {row['large']:,} |"
            f" {row['p50_small_ms']:.2f} | {row['p50_large_ms']:.2f} |"
            f" {row['ratio']:.2f} ({verdict}) |"
        )
    return "\n".join(lines)


def _memory_table(memory: dict[str, Any]) -> str:
    samples = memory["samples_kib"]
    spread = memory["spread_after_warm_up"]
    verdict = "meets" if abs(spread) <= RSS_TARGET else "above"
    return "\n".join(
        [
            "## Memory: RSS of the API process (SQLite)",
            "",
            f"`bench/memory.py`: {memory['requests']:,} mixed requests (heartbeat, GET, capability"
            f" list, history), RSS sampled every {memory['chunk_requests'][0]:,}; the first two"
            " samples are the warm-up.",
            "",
            f"- Samples (KiB): {', '.join(f'{s:,}' for s in samples)} (at start:"
            f" {memory['start_kib']:,})",
            f"- Spread after warm-up, (max - min) / median: {spread:.2%} ({verdict} ±10 %);"
            f" 3rd sample to last: {memory['drift_3rd_to_last_pct']:+.2f} %",
        ]
    )


READING = """## Reading these figures
- The floor app does, per request, the one store operation the service's request cannot
  do without, on tables of its own, and nothing else: no authentication, rate limit,
  request id, access log, metrics, validation, history or change feed. A ratio is the
  share of the floor's throughput the service keeps; 1 - ratio is what the service's
  own work costs. Both run on the same uvicorn (httptools, uvloop) and settings.
- DynamoDB runs on moto's server, single-threaded, as in the tests, on the same two
  cores as the service and wrk. moto answers a Query by walking every item of the table
  (so list, calendar, history and claim slow down as the run writes; reads go first),
  and it is the bottleneck of most scenarios: these ratios say more about moto's cost
  per request than about DynamoDB's. The floor sends its requests as the service's
  adapter does (same client settings, ReturnConsumedCapacity, a table with a stream).
- Store round trips come from docs/data-model.md, which tests/api/test_round_trips.py
  holds to what each request really sends.
"""


def _calls_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "## Python calls per request (SQLite, in-process)",
        "",
        "`bench/calls.py`: the function calls a request makes (cProfile's count, builtins"
        " included) in the service and in the floor app, each request sent straight into the"
        " ASGI app (no HTTP parsing, which is uvicorn's and the same for both), the access log"
        " on. A count, not a time: it does not move with the machine's noise, so it shows a"
        " change of a tenth that the ratios above can hide.",
        "",
        "| request | service calls | floor calls | floor / service |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['scenario']} | {row['service_calls']:,} | {row['floor_calls']:,} |"
            f" {row['ratio']:.2f} |"
        )
    return "\n".join(lines)


def _webhook_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "## Webhook delivery: commit to receipt",
        "",
        "`bench/webhook_latency.py`: one `orchestrator serve` with delivery on (poll 250 ms),"
        " a change every 50 ms, a receiver on loopback; latency is the receipt time minus the"
        " event's `at`. DynamoDB reads the log up to `ORCH_EVENT_SETTLE_MS` (1 s) ago.",
        "",
        "| store | events | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['store']} | {row['events']} | {row['p50_ms']} | {row['p90_ms']} |"
            f" {row['p99_ms']} | {row['max_ms']} |"
        )
    return "\n".join(lines)


def _timeline_table(timeline: dict[str, Any]) -> str:
    return "\n".join(
        [
            "## Dashboard: the timeline's week view (SQLite)",
            "",
            f"`bench/timeline_render.py`: {timeline['benches']} benches with"
            f" {timeline['bookings']:,} bookings over the next 7 days"
            f" ({timeline['bars']:,} bars in the week shown); `GET /ui/timeline?view=week`"
            " signed in, one calendar read per bench.",
            "",
            "| in process, median | min | max | renders | over HTTP (`orchestrator serve`) |"
            " page |",
            "|---|---|---|---|---|---|",
            f"| {timeline['median_ms']} ms | {timeline['min_ms']} ms | {timeline['max_ms']} ms |"
            f" {timeline['runs']} | {timeline['http_ms']} ms | {timeline['page_kib']:,} KiB |",
        ]
    )


def write(results: dict[str, Any]) -> Path:
    trips = _round_trips()
    parts = [
        "# Performance",
        "",
        "Written by `make bench` (`bench/run_all.py`); do not edit by hand. Every figure is",
        "from one run on one machine, so compare ratios, not absolute numbers across runs.",
        "",
        f"- Run: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {machine()}.",
        f"- {results.get('method', '')}",
        "",
    ]
    for store in ("sqlite", "dynamodb"):
        outcomes = results.get(store)
        if not outcomes:
            continue
        title = "SQLite (file)" if store == "sqlite" else "DynamoDB (moto's server, serialised)"
        parts += [
            f"## Service against its floor: {title}",
            "",
            _scenario_table(store, outcomes, trips),
            "",
        ]
    if results.get("calls"):
        parts += [_calls_table(results["calls"]), ""]
    if results.get("growth"):
        parts += [_growth_table(results["growth"]), ""]
    if results.get("memory"):
        parts += [_memory_table(results["memory"]), ""]
    if results.get("webhooks"):
        parts += [_webhook_table(results["webhooks"]), ""]
    if results.get("timeline"):
        parts += [_timeline_table(results["timeline"]), ""]
    parts += [READING.rstrip(), ""]
    PERFORMANCE.write_text("\n".join(parts))
    return PERFORMANCE
