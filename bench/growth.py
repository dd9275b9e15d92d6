"""Growth: the same request on a small and a large lab, and how much slower it gets.

Issue 12 wants four requests to cost an index lookup whatever the lab's size (large/small
p50 <= 1.3): a bench's calendar for one day (1k vs 100k reservations), benches by
capability (100 vs 10k benches), a bench's history (20 vs 10k entries of it) and a task
claim (3 vs 3,000 queued runs on the bench's active reservation). SQLite only.

Why the ratios mean what they say:
- Between the two labs of a request only that dimension grows, and the answer is the same:
  the same 8 reservations of b-0000 on day D (the rest on 24 other benches and on days of
  b-0000 before and after D); the same 20 benches with ``rare``, spread over the whole key
  range, so that a scan in key order would show; the first 20 history entries of b-0000
  (scenario.lua asks ``limit=20``, so the small lab has 20, not 10); one task per claim.
- The labs are seeded in process before their servers start, through the SQLite adapter's
  own code: its repositories' create paths write into a recorder standing in for the
  connection, whose statements then run as executemany in large transactions. Rows,
  history entries and outbox events are the service's; each lab is read back through the
  API (counts and ids) before anything is timed.
- Both servers of a request are up together and take the same load in the order
  S L L S S L (``--rounds`` times, after a warm-up run each); medians. Reads: wrk at 4
  connections, its p50. Housekeeping is off: its pass pages through every bench and would
  land in the large lab's runs.
- Claim: a bench of concurrency 1 leases one task at a time, so its agent claims and
  completes in turn on a keep-alive connection (http.client), on the small and the large
  server alternately, claim by claim; the p50 is of the claims alone, each of which must
  lease a task (a 204 is cheaper: it stops the run). Not wrk: its ``claim_complete``
  loop puts claims and completes in one latency histogram, whose p50 lands between the
  two, and serial claims on one server then the other would let the machine's noise fall
  on one lab only. Before each block of claims the small lab's runs are cancelled and 3
  fresh ones queued (144 tasks).
Afterwards the SELECTs each request's service call issues are traced in process on both
labs, timed there and explained (EXPLAIN QUERY PLAN): where a ratio grows, they say why.

    python -m bench.growth [--seconds 1] [--rounds 2] [--lab NAME] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import aiosqlite
import httpx

from app.benches.domain import BenchChanges, apply_changes, new_bench
from app.benches.service import AUDIT as BENCH_AUDIT
from app.benches.service import BenchService
from app.clock import SystemClock
from app.deps import reservation_service
from app.executions.changes import EXECUTION_AUDIT, TASK_AUDIT
from app.executions.domain import MAX_TASKS, TaskSpec, new_execution
from app.executions.service import ExecutionService
from app.history.domain import HistoryEntry
from app.identity import Actor, Principal, Role
from app.ids import sortable_uuid
from app.reservations.domain import Reservation, ReservationState, Window
from app.reservations.trail import AUDIT as RESERVATION_AUDIT
from app.settings import Settings
from app.store.base import Write
from app.store.sqlite.benches import SqliteBenchRepository
from app.store.sqlite.database import SqliteDatabase
from app.store.sqlite.executions import SqliteExecutionRepository
from app.store.sqlite.reservations import _RESERVATIONS
from app.store.sqlite.store import SqliteStore
from bench.floor import CAPABILITIES
from bench.harness import Server, run_wrk, service_command, serving
from bench.http_bench import ADMIN_TOKEN, write_tokens

ADMIN = Actor(Principal("bench-admin", Role.ADMIN), "growth-seed")
AGENT = Actor(Principal("agent-c-0000", Role.AGENT, bench_id="c-0000"), "growth-plan")
CONNECTIONS = 4
ORDER = "SLLSSL"
CALENDAR_BENCHES = 25
CLAIMS = 120  # per block of claims, on each server; the small lab's 3 fresh runs hold 144
NOW = datetime.now(UTC).replace(microsecond=0)
# Far enough ahead that the large lab's 250 days of b-0000 before D are all to come.
DAY = (NOW + timedelta(days=300)).replace(hour=0, minute=0, second=0)
NEXT_DAY = DAY + timedelta(days=1)
Plan = Callable[[SqliteStore], Awaitable[object]]
SERVICE_ENV = {
    "ORCH_STORE": "sqlite",
    "ORCH_RATE_LIMIT_PER_S": "0",
    "ORCH_CURSOR_SECRET": "bench",
    "ORCH_LOG_FORMAT": "json",
    "ORCH_HOUSEKEEPING_INTERVAL_S": "0",
}


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Recorder:
    """Stands in for the connection: keeps each statement's parameters, in first-use order."""

    def __init__(self) -> None:
        self.statements: dict[str, list[tuple[Any, ...]]] = {}

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> None:
        self.statements.setdefault(sql, []).append(tuple(parameters))

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            await self.execute(sql, row)


class _Recording(SqliteDatabase):
    """The adapter's database with the recorder for a connection: the repositories' create
    paths (claim_key, Table.insert, insert_history) run unchanged and write into it."""

    def __init__(self, recorder: _Recorder) -> None:
        super().__init__(cast(aiosqlite.Connection, recorder))
        self.recorder = recorder

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        yield cast(aiosqlite.Connection, self.recorder)


class Seeder:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self._recording = _Recording(_Recorder())
        self.benches = SqliteBenchRepository(self._recording)
        self.executions = SqliteExecutionRepository(self._recording)

    async def history(self, entry: HistoryEntry) -> None:
        async with self._recording.write() as connection:
            await self._recording.insert_history(connection, entry)

    async def bench(self, bench_id: str, capabilities: set[str], versions: int = 1) -> None:
        """A bench created, then PATCHed ``versions - 1`` times: its row and every entry."""
        bench = new_bench(
            bench_id=bench_id,
            name=bench_id,
            type="hil",
            capabilities=frozenset(capabilities),
            labels={"room": "lab-1"},
            heartbeat_interval_s=30,
            now=NOW,
        )
        entries = [BENCH_AUDIT.entry(bench, ADMIN, "created", None)]
        for n in range(1, versions):
            before = bench
            bench = apply_changes(bench, BenchChanges(labels={"edit": str(n)}), NOW)
            entries.append(BENCH_AUDIT.entry(bench, ADMIN, "updated", before))
        await self.benches.create(bench, entries[0])
        for entry in entries[1:]:
            await self.history(entry)

    async def reservation(self, reservation: Reservation) -> None:
        """What SqliteReservationRepository.create writes once its checks have passed."""
        async with self._recording.write() as connection:
            await _RESERVATIONS.insert(connection, reservation)
        await self.history(RESERVATION_AUDIT.entry(reservation, ADMIN, "created", None))

    async def flush(self) -> None:
        statements = self._recording.recorder.statements
        async with self._db.write() as connection:
            for sql, rows in statements.items():
                await connection.executemany(sql, rows)
        statements.clear()


def _reservation(bench_id: str, start: datetime, hours: float = 1) -> Reservation:
    return Reservation(
        reservation_id=sortable_uuid(NOW),
        bench_id=bench_id,
        user_id=ADMIN.subject,
        start=start,
        end=start + timedelta(hours=hours),
        purpose="",
        state=ReservationState.BOOKED,
        version=1,
        created_at=NOW,
        updated_at=NOW,
    )


# The 8 reservations of b-0000 on day D: the same objects in both calendar labs.
DAY_RESERVATIONS = [_reservation("b-0000", DAY + timedelta(hours=2 * n)) for n in range(8)]
CLAIM_RESERVATION = _reservation("c-0000", NOW - timedelta(hours=1), hours=12)
RARE = [f"b-{k:02d}" for k in range(20)]


async def seed_calendar(seeder: Seeder, size: int) -> None:
    days = size // (8 * CALENDAR_BENCHES)  # each bench: 8 a day, on days around D
    for b in range(CALENDAR_BENCHES):
        await seeder.bench(f"b-{b:04d}", {"can"})
        for day in range(-(days // 2), days - days // 2):
            for n in range(8):
                start = DAY + timedelta(days=day, hours=2 * n)
                timed = b == 0 and day == 0
                await seeder.reservation(
                    DAY_RESERVATIONS[n] if timed else _reservation(f"b-{b:04d}", start)
                )
        await seeder.flush()


async def seed_capability(seeder: Seeder, size: int) -> None:
    for name in RARE:
        await seeder.bench(name, {"rare", "can"})
    for j in range(size - len(RARE)):  # "b-07-00123" sorts between b-07 and b-08
        await seeder.bench(f"b-{j % 20:02d}-{j:05d}", {CAPABILITIES[j % len(CAPABILITIES)]})


async def seed_history(seeder: Seeder, size: int) -> None:
    await seeder.bench("b-0000", {"can"}, versions=size)
    for n in range(1, 100):
        await seeder.bench(f"b-{n:04d}", {"can"})


async def seed_claim(seeder: Seeder, size: int) -> None:
    await seeder.bench("c-0000", set())
    await seeder.reservation(CLAIM_RESERVATION)
    for n in range(size):
        at = NOW - timedelta(minutes=30) + timedelta(milliseconds=n)
        run, tasks = new_execution(
            execution_id=sortable_uuid(at),
            reservation_id=CLAIM_RESERVATION.reservation_id,
            bench_id="c-0000",
            created_by=ADMIN.subject,
            commit_sha="9fceb02",
            pipeline_url=None,
            metadata={},
            tasks=[TaskSpec("flash", {}, 600)] * MAX_TASKS,  # what the API's defaults make
            now=at,
        )
        entries = [EXECUTION_AUDIT.entry(run, ADMIN, "created", None)]
        entries += [TASK_AUDIT.entry(task, ADMIN, "created", None) for task in tasks]
        await seeder.executions.apply([Write(None, run)], [Write(None, t) for t in tasks], entries)
        if n % 200 == 199:
            await seeder.flush()


def _pages(http: httpx.Client, path: str, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    query = {**params, "limit": "500"}
    while True:
        page = http.get(path, params=query).raise_for_status().json()
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        query["cursor"] = page["next_cursor"]


def _expect(what: str, got: object, wanted: object) -> None:
    if got != wanted:
        raise RuntimeError(f"lab check failed, {what}: {got!r} instead of {wanted!r}")


def check_calendar(http: httpx.Client, size: int) -> None:
    path, far = "/v1/benches/b-0000/reservations", timedelta(days=400)
    day = _pages(http, path, **{"from": _iso(DAY), "to": _iso(NEXT_DAY)})
    wanted = [r.reservation_id for r in DAY_RESERVATIONS]
    _expect("day D", [r["reservation_id"] for r in day], wanted)
    every = _pages(http, path, **{"from": _iso(DAY - far), "to": _iso(DAY + far)})
    _expect("reservations of b-0000", len(every), size // CALENDAR_BENCHES)


def check_capability(http: httpx.Client, size: int) -> None:
    rare = http.get("/v1/benches", params={"capability": "rare", "limit": "20"}).json()
    found = [b["bench_id"] for b in rare["items"]]
    _expect("rare benches", (found, rare["next_cursor"]), (RARE, None))
    _expect("benches", len(_pages(http, "/v1/benches")), size)


def check_history(http: httpx.Client, size: int) -> None:
    page = http.get("/v1/benches/b-0000/history", params={"limit": "20"}).json()
    _expect("first versions", [e["version"] for e in page["items"]], list(range(1, 21)))
    _expect("entries", len(_pages(http, "/v1/benches/b-0000/history")), size)
    _expect("bench version", http.get("/v1/benches/b-0000").json()["version"], size)


def check_claim(http: httpx.Client, size: int) -> None:
    runs = _pages(http, "/v1/executions", reservation_id=CLAIM_RESERVATION.reservation_id)
    _expect("runs", [r["status"] for r in runs], ["queued"] * size)


@dataclass(frozen=True)
class Lab:
    name: str
    grows: str
    small: int
    large: int
    scenario: str  # of scenario.lua, or "claim"
    seed: Callable[[Seeder, int], Awaitable[None]]
    check: Callable[[httpx.Client, int], None]
    plan: Plan
    env: dict[str, str] = field(default_factory=dict)


CLOCK = SystemClock()
LABS = (
    Lab("calendar", "reservations", 1_000, 100_000, "calendar", seed_calendar, check_calendar,
        lambda store: reservation_service(store, CLOCK, Settings()).calendar(
            "b-0000", Window(DAY, NEXT_DAY), 50, None),
        {"BENCH_FROM": _iso(DAY), "BENCH_TO": _iso(NEXT_DAY)}),
    Lab("capability_list", "benches", 100, 10_000, "capability_list", seed_capability,
        check_capability,
        lambda store: BenchService(store, CLOCK).find(
            capabilities=frozenset({"rare"}), limit=20, after=None),
        {"BENCH_CAPABILITY": "rare"}),
    Lab("history", "entries of the bench", 20, 10_000, "history", seed_history, check_history,
        lambda store: BenchService(store, CLOCK).history("b-0000", 20, None)),
    Lab("claim", "queued runs", 3, 3_000, "claim", seed_claim, check_claim,
        lambda store: ExecutionService(store, CLOCK, timedelta(seconds=60)).claim_next(
            "c-0000", AGENT)),
)  # fmt: skip


async def _seed_file(lab: Lab, size: int, path: Path) -> float:
    started = time.monotonic()
    db = await SqliteDatabase.open(str(path))
    try:
        seeder = Seeder(db)
        await lab.seed(seeder, size)
        await seeder.flush()
    finally:
        await db.close()
    return time.monotonic() - started


def _admin(server: Server) -> httpx.Client:
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    return httpx.Client(base_url=server.url, headers=auth, timeout=60)


def _fresh_runs(server: Server) -> None:
    """Cancel the small claim lab's open runs and queue 3 new ones through the API."""
    reservation_id = CLAIM_RESERVATION.reservation_id
    with _admin(server) as http:
        for status in ("running", "queued"):
            for run in _pages(http, "/v1/executions", reservation_id=reservation_id, status=status):
                http.post(f"/v1/executions/{run['execution_id']}/cancel").raise_for_status()
        body = {"reservation_id": reservation_id, "commit_sha": "9fceb02"}
        for _ in range(3):
            tasks = [{"type": "flash"}] * MAX_TASKS
            http.post("/v1/executions", json={**body, "tasks": tasks}).raise_for_status()


def _claim(connection: http.client.HTTPConnection) -> float:
    """One claim by the bench's agent (ms), then the complete of the task it leased."""
    agent = {"Authorization": "Bearer agent-c-0000", "Content-Type": "application/json"}
    started = time.perf_counter()
    connection.request("POST", "/v1/benches/c-0000/tasks/claim", headers=agent)
    claimed = connection.getresponse()
    body = claimed.read()
    took = (time.perf_counter() - started) * 1000
    if claimed.status != 200:  # a 204 costs less than a claim that leases: stop
        raise RuntimeError(f"claim answered {claimed.status} {body!r}")
    connection.request("POST", f"/v1/tasks/{json.loads(body)['task_id']}/complete", b"{}", agent)
    done = connection.getresponse()
    if done.status != 200:
        raise RuntimeError(f"complete answered {done.status} {done.read()!r}")
    done.read()
    return took


def _claims(servers: dict[str, Server], count: int) -> dict[str, float]:
    """p50 of ``count`` claims on each server, taken in turn (S L L S ...): claims are
    serial, so the machine's noise would otherwise fall on one lab's run and not the other's."""
    connections = {
        who: http.client.HTTPConnection(server.url.removeprefix("http://"))
        for who, server in servers.items()
    }
    took: dict[str, list[float]] = {who: [] for who in servers}
    try:
        for n in range(count):
            for who in "SL" if n % 2 == 0 else "LS":
                took[who].append(_claim(connections[who]))
    finally:
        for connection in connections.values():
            connection.close()
    return {who: statistics.median(times) for who, times in took.items()}


def measure(
    lab: Lab, servers: dict[str, Server], seconds: float, rounds: int
) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = {"S": [], "L": []}
    if lab.scenario == "claim":
        for n in range(1 + len(ORDER) * rounds):  # the first one warms both up
            _fresh_runs(servers["S"])
            p50 = _claims(servers, CLAIMS // 4 if n == 0 else CLAIMS)
            for who in runs if n else ():
                runs[who].append(p50[who])
        return runs
    env = {"BENCH_ADMIN_TOKEN": ADMIN_TOKEN, "BENCH_BENCH_ID": "b-0000", **lab.env}
    for n, who in enumerate("SL" + ORDER * rounds):  # the first two warm each server up
        result = run_wrk(servers[who].url, lab.scenario, CONNECTIONS, seconds, env)
        if result.status_errors or result.socket_errors:
            raise RuntimeError(f"{lab.name}: errors in {result}")
        if n >= 2:
            runs[who].append(result.p50_ms)
    return runs


async def _statements(path: Path, plan: Plan) -> list[tuple[str, list[str], float]]:
    """The SELECTs the service call issues on this lab: (sql, plan, best in-process ms)."""
    db = await SqliteDatabase.open(str(path))
    issued: list[str] = []
    found: list[tuple[str, list[str], float]] = []
    try:
        async with db.read() as connection:
            await connection.set_trace_callback(issued.append)
        await plan(SqliteStore(db))
        selects = [sql for sql in issued if sql.lstrip().upper().startswith("SELECT")]
        async with db.read() as connection:
            for sql in selects:
                explained = await connection.execute_fetchall(f"EXPLAIN QUERY PLAN {sql}")
                took = []
                for _ in range(50):  # the best of 50: the work itself, without the noise
                    started = time.perf_counter()
                    await connection.execute_fetchall(sql)
                    took.append((time.perf_counter() - started) * 1000)
                found.append((sql, [str(row[3]) for row in explained], min(took)))
    finally:
        await db.close()
    return found


def run_lab(lab: Lab, folder: Path, tokens: Path, seconds: float, rounds: int) -> dict[str, Any]:
    sizes = {"S": lab.small, "L": lab.large}
    paths = {who: folder / f"{lab.name}-{who}.db" for who in sizes}
    seeded = {who: asyncio.run(_seed_file(lab, sizes[who], paths[who])) for who in sizes}
    env = {**SERVICE_ENV, "ORCH_TOKENS_FILE": str(tokens)}
    with ExitStack() as stack:
        servers = {
            who: stack.enter_context(
                serving(
                    service_command(),
                    {**env, "ORCH_SQLITE_PATH": str(paths[who])},
                    folder / f"{lab.name}-{who}.log",
                    "/readyz",
                )
            )
            for who in sizes
        }
        for who, server in servers.items():
            with _admin(server) as http:
                lab.check(http, sizes[who])
        runs = measure(lab, servers, seconds, rounds)
    small, large = (asyncio.run(_statements(paths[who], lab.plan)) for who in sizes)
    p50 = {who: statistics.median(runs[who]) for who in sizes}
    return {
        "query": lab.name,
        "grows": lab.grows,
        "small": lab.small,
        "large": lab.large,
        "p50_small_ms": round(p50["S"], 3),
        "p50_large_ms": round(p50["L"], 3),
        "ratio": round(p50["L"] / p50["S"], 3),
        "runs_small_ms": [round(x, 3) for x in runs["S"]],
        "runs_large_ms": [round(x, 3) for x in runs["L"]],
        "seed_s": [round(seeded["S"], 1), round(seeded["L"], 1)],
        "statements": [
            {"sql": s[:400], "plan": plan, "small_ms": round(t, 3), "large_ms": round(big, 3)}
            for (s, _, t), (_, plan, big) in zip(small, large, strict=False)
        ],
    }


def report(outcome: dict[str, Any]) -> None:
    print(
        f"  {outcome['query']:<16} {outcome['small']:>6} -> {outcome['large']:<7}"
        f" {outcome['grows']:<21} p50 {outcome['p50_small_ms']:6.2f} ->"
        f" {outcome['p50_large_ms']:6.2f} ms  ratio {outcome['ratio']:5.2f}",
        flush=True,
    )
    for statement in outcome["statements"]:  # the ones that grow, or scan
        small, large = statement["small_ms"], statement["large_ms"]
        grew = large > 1.3 * small and large - small > 0.01
        if grew or any(line.startswith("SCAN") for line in statement["plan"]):
            print(f"      {small:.3f} -> {large:.3f} ms in process: {statement['sql'][:150]}")
            for line in statement["plan"]:
                print(f"        {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="per timed read run")
    parser.add_argument("--rounds", type=int, default=2, help="of S L L S S L")
    parser.add_argument("--lab", action="append", choices=[lab.name for lab in LABS])
    parser.add_argument("--json", type=Path, help="write the outcomes here")
    args = parser.parse_args()
    started = time.monotonic()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="bench-growth-") as name:
        tokens = write_tokens(Path(name))
        for lab in LABS:
            if not args.lab or lab.name in args.lab:
                outcomes.append(run_lab(lab, Path(name), tokens, args.seconds, args.rounds))
                report(outcomes[-1])
    print(f"  growth took {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(outcomes, indent=2))


if __name__ == "__main__":
    main()
