"""The service against its floor, scenario by scenario, on each store.

For every scenario the service (A) and the floor app (B, ``bench/floor.py``) take the
same wrk load in the order A B B A A B; the table gives the median of each, their
ratio, the service's p50 and p99, and its p99/p50 at 64 connections. Both servers run
for the whole store's pass, seeded alike before the first run.

    python -m bench.http_bench --store sqlite --seconds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from app.http.auth import token_digest
from bench.floor_sqlite import CAPABILITIES, bench_doc
from bench.harness import Server, WrkResult, floor_command, run_wrk, service_command, serving

ADMIN_TOKEN = "bench-admin"
AGENT_TOKEN = "bench-agent"


@dataclass(frozen=True)
class Lab:
    benches: int
    claim_benches: int  # even: the two wrk threads take alternate benches
    tasks_per_claim_bench: int


# moto serves one request at a time and copies every table on each transaction (its
# rollback), so the DynamoDB lab is smaller; still 20 benches per capability: a full
# page of the listing.
LABS = {"sqlite": Lab(200, 32, 2000), "dynamodb": Lab(60, 8, 60)}
# Tasks per run: a run is created in one transaction (2 items per task); moto answers
# transactions of ~100 items slowly enough to time out under load.
RUN_TASKS = 20
MAX_CLAIM_BENCHES = 32
HISTORY = 50
CONNECTIONS = 32
TAIL_CONNECTIONS = 64
ORDER = "ABBAAB"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    bench_id: str = "b-0000"
    # Answers that are decisions, not failures (a 409 for a taken window, a 204 claim).
    refusals_expected: bool = False


# Reads first, then the writes that grow the store: moto answers a Query by going through
# every item of the table, so on DynamoDB a read timed after the bookings would measure
# moto's scan of them. The claim loop goes last: it writes thousands of history entries
# and events (the floor's claims write none), and moto copies every table a transaction
# touches, so a booking timed after it would measure moto copying them.
SCENARIOS = (
    Scenario("heartbeat", "heartbeat (agent)"),
    Scenario("get", "GET a bench"),
    Scenario("get_not_modified", "GET a bench, matching If-None-Match (304)"),
    Scenario("capability_list", "list benches by capability"),
    Scenario("calendar", "bench calendar, one day"),
    Scenario("history", "history read, 20 entries"),
    Scenario("book_distinct", "booking, distinct benches"),
    Scenario("book_one_bench", "booking, 50 clients on one bench", "b-0001", True),
    Scenario("claim_complete", "claim and complete loop", refusals_expected=True),
)


@dataclass(frozen=True)
class Outcome:
    scenario: Scenario
    service: list[WrkResult]
    floor: list[WrkResult]
    tail: WrkResult

    @property
    def service_rate(self) -> float:
        return statistics.median(r.rate for r in self.service)

    @property
    def floor_rate(self) -> float:
        return statistics.median(r.rate for r in self.floor)

    @property
    def ratio(self) -> float:
        return self.service_rate / self.floor_rate if self.floor_rate else 0.0

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.service)

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.service)

    @property
    def tail_ratio(self) -> float:
        return self.tail.p99_ms / max(self.tail.p50_ms, 0.001)

    def as_json(self) -> dict[str, object]:
        return {
            "scenario": self.scenario.name,
            "title": self.scenario.title,
            "service_rps": round(self.service_rate, 1),
            "floor_rps": round(self.floor_rate, 1),
            "ratio": round(self.ratio, 3),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "p99_over_p50_at_64": round(self.tail_ratio, 2),
            "service_runs_rps": [round(r.rate, 1) for r in self.service],
            "floor_runs_rps": [round(r.rate, 1) for r in self.floor],
            "refused": sum(r.status_errors for r in self.service),
        }


def write_tokens(folder: Path) -> Path:
    records: list[dict[str, str]] = [
        {"token_sha256": token_digest(ADMIN_TOKEN), "subject": "bench-admin", "role": "admin"},
        {
            "token_sha256": token_digest(AGENT_TOKEN),
            "subject": "agent-b-0000",
            "role": "agent",
            "bench_id": "b-0000",
        },
    ]
    for n in range(MAX_CLAIM_BENCHES):
        name = f"c-{n:04d}"
        records.append(
            {
                "token_sha256": token_digest(f"agent-{name}"),
                "subject": f"agent-{name}",
                "role": "agent",
                "bench_id": name,
            }
        )
    path = folder / "tokens.json"
    path.write_text(json.dumps(records))
    return path


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _day_window(now: datetime) -> tuple[datetime, datetime]:
    """The calendar scenario's day: tomorrow, where the seed puts 8 reservations."""
    start = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def seed_service(url: str, lab: Lab) -> None:
    """The service's lab, through its own API: what the floor's ``seed`` puts in its tables."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    now = datetime.now(UTC)
    with httpx.Client(base_url=url, headers=admin, timeout=60) as http:

        def ok(answer: httpx.Response) -> httpx.Response:
            if answer.status_code >= 300:
                raise RuntimeError(
                    f"seeding: {answer.request.url} {answer.status_code} {answer.text}"
                )
            return answer

        for n in range(lab.benches):
            doc = bench_doc(n)
            ok(
                http.post(
                    "/v1/benches",
                    json={
                        key: doc[key]
                        for key in ("bench_id", "name", "type", "capabilities", "labels")
                    },
                )
            )
        version = 1
        for n in range(HISTORY - 1):  # b-0000 gets HISTORY entries in all
            answer = ok(
                http.patch(
                    "/v1/benches/b-0000",
                    json={"labels": {"room": "lab-1", "edit": str(n)}},
                    headers={"If-Match": f'"{version}"'},
                )
            )
            version = answer.json()["version"]
        day, _ = _day_window(now)
        for hour in range(8):
            start = day + timedelta(hours=2 * hour)
            ok(
                http.post(
                    "/v1/reservations",
                    json={
                        "bench_id": "b-0000",
                        "start": _iso(start),
                        "end": _iso(start + timedelta(hours=1)),
                    },
                )
            )
        # Claim benches: each with a reservation under way and runs of RUN_TASKS queued.
        for n in range(lab.claim_benches):
            name = f"c-{n:04d}"
            ok(http.post("/v1/benches", json={"bench_id": name, "name": name, "type": "hil"}))
            reservation = ok(
                http.post(
                    "/v1/reservations",
                    json={
                        "bench_id": name,
                        "start": _iso(datetime.now(UTC)),  # seeding takes a while on moto
                        "end": _iso(now + timedelta(hours=12)),
                    },
                )
            ).json()
            for _ in range(max(1, lab.tasks_per_claim_bench // RUN_TASKS)):
                ok(
                    http.post(
                        "/v1/executions",
                        json={
                            "reservation_id": reservation["reservation_id"],
                            "commit_sha": "9fceb02",
                            "tasks": [{"type": "flash"} for _ in range(RUN_TASKS)],
                        },
                    )
                )


def _env_for(scenario: Scenario, run: int, etag: str, lab: Lab) -> dict[str, str]:
    now = datetime.now(UTC)
    day, day_end = _day_window(now)
    # Each run books its own stretch of the future, so no run finds the last one's windows.
    base = (now + timedelta(days=30 + 400 * run)).replace(minute=0, second=0, microsecond=0)
    return {
        "BENCH_ADMIN_TOKEN": ADMIN_TOKEN,
        "BENCH_AGENT_TOKEN": AGENT_TOKEN,
        "BENCH_BENCH_ID": scenario.bench_id,
        "BENCH_BENCHES": str(lab.benches),
        "BENCH_CLAIM_BENCHES": str(lab.claim_benches),
        "BENCH_ETAG": etag,
        "BENCH_CAPABILITY": CAPABILITIES[0],
        "BENCH_FROM": _iso(day),
        "BENCH_TO": _iso(day_end),
        "BENCH_BASE_EPOCH": str(int(base.timestamp())),
    }


def _etag(server: Server) -> str:
    answer = httpx.get(
        f"{server.url}/v1/benches/b-0000", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    return answer.headers["etag"]


def _checked(scenario: Scenario, result: WrkResult, who: str) -> WrkResult:
    if result.socket_errors or (result.status_errors and not scenario.refusals_expected):
        raise RuntimeError(
            f"{scenario.name} on the {who}: {result.status_errors} error answers,"
            f" {result.socket_errors} socket errors in {result.requests} requests"
        )
    return result


def measure(
    service: Server, floor: Server, scenarios: tuple[Scenario, ...], seconds: float, lab: Lab
) -> Iterator[Outcome]:
    service_etag, floor_etag = _etag(service), _etag(floor)
    for scenario in scenarios:
        runs: dict[str, list[WrkResult]] = {"A": [], "B": []}
        connections = 50 if scenario.name == "book_one_bench" else CONNECTIONS
        for run, who in enumerate(ORDER):
            server, etag = (service, service_etag) if who == "A" else (floor, floor_etag)
            env = _env_for(scenario, run, etag, lab)
            result = run_wrk(server.url, scenario.name, connections, seconds, env)
            runs[who].append(_checked(scenario, result, "service" if who == "A" else "floor"))
        tail = run_wrk(
            service.url,
            scenario.name,
            TAIL_CONNECTIONS,
            seconds,
            _env_for(scenario, 9, service_etag, lab),
        )
        outcome = Outcome(scenario, runs["A"], runs["B"], _checked(scenario, tail, "service"))
        print(
            f"  {scenario.name:<18} service {outcome.service_rate:8.0f}/s"
            f"  floor {outcome.floor_rate:8.0f}/s  ratio {outcome.ratio:5.2f}"
            f"  p50 {outcome.p50_ms:6.1f} ms  p99 {outcome.p99_ms:6.1f} ms"
            f"  p99/p50@64 {outcome.tail_ratio:4.1f}",
            flush=True,
        )
        yield outcome


@contextmanager
def servers(
    store: str, folder: Path, dynamodb_endpoint: str | None
) -> Iterator[tuple[Server, Server]]:
    lab = LABS[store]
    tokens = write_tokens(folder)
    service_env = {
        "ORCH_STORE": store,
        "ORCH_TOKENS_FILE": str(tokens),
        "ORCH_RATE_LIMIT_PER_S": "0",
        "ORCH_CURSOR_SECRET": "bench",
        "ORCH_LOG_FORMAT": "json",
        "ORCH_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
        # No webhook is subscribed in the lab, and the relay polling the event log would
        # load the store for the floor as well: moto serves one request at a time and
        # walks a whole table for each Query, so its polls of a growing log slow every
        # DynamoDB scenario, floor included, by half or more.
        "ORCH_WEBHOOK_DELIVERY": "false",
    }
    floor_env = {
        "FLOOR_STORE": store,
        "FLOOR_BENCHES": str(lab.benches),
        "FLOOR_CLAIM_BENCHES": str(lab.claim_benches),
        "FLOOR_HISTORY": str(HISTORY),
        "FLOOR_TASKS_PER_BENCH": str(lab.tasks_per_claim_bench),
    }
    if store == "sqlite":
        service_env["ORCH_SQLITE_PATH"] = str(folder / "service.db")
        floor_env["FLOOR_SQLITE_PATH"] = str(folder / "floor.db")
    else:
        assert dynamodb_endpoint is not None
        prefix = f"bench-{uuid.uuid4().hex[:8]}-"
        service_env |= {
            "ORCH_DYNAMODB_ENDPOINT_URL": dynamodb_endpoint,
            "ORCH_TABLE_PREFIX": prefix,
            "ORCH_CREATE_TABLES": "true",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
        }
        floor_env |= {"FLOOR_DYNAMODB_ENDPOINT": dynamodb_endpoint, "FLOOR_TABLE": f"{prefix}floor"}
    with ExitStack() as stack:
        service = stack.enter_context(
            serving(service_command(), service_env, folder / "service.log", "/readyz")
        )
        started = time.monotonic()
        seed_service(service.url, lab)
        print(f"  seeded the service in {time.monotonic() - started:.1f} s", flush=True)
        floor = stack.enter_context(
            serving(floor_command(), floor_env, folder / "floor.log", "/v1/benches/b-0000")
        )
        yield service, floor


def run(
    store: str, seconds: float, dynamodb_endpoint: str | None, only: Callable[[Scenario], bool]
) -> list[Outcome]:
    chosen = tuple(s for s in SCENARIOS if only(s))
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{store}-") as name,
        servers(store, Path(name), dynamodb_endpoint) as (service, floor),
    ):
        return list(measure(service, floor, chosen, seconds, LABS[store]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=("sqlite", "dynamodb"), default="sqlite")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dynamodb-endpoint")
    parser.add_argument("--scenario", action="append", help="only these (repeatable)")
    parser.add_argument("--json", type=Path, help="write the outcomes here")
    args = parser.parse_args()
    wanted = set(args.scenario or [])
    outcomes = run(
        args.store, args.seconds, args.dynamodb_endpoint, lambda s: not wanted or s.name in wanted
    )
    if args.json:
        args.json.write_text(json.dumps([o.as_json() for o in outcomes], indent=2))


if __name__ == "__main__":
    main()
