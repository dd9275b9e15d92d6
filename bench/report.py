"""docs/performance.md, written from one `make bench` run's results."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PERFORMANCE = REPO / "docs" / "performance.md"
DATA_MODEL = REPO / "docs" / "data-model.md"

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
    section = DATA_MODEL.read_text().split("\n## Access patterns\n", 1)[1].split("\n## ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|")
    ]
    header, _rule, *body = rows
    dynamo, sqlite = header.index("round trips"), header.index("SQLite round trips")
    return {row[0]: (row[dynamo], row[sqlite]) for row in body}


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
    for key in ("growth", "memory"):
        section = results.get(key)
        if section:
            parts += [section.rstrip(), ""]
    PERFORMANCE.write_text("\n".join(parts))
    return PERFORMANCE
