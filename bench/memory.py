"""Memory: the API process's resident set over 200k mixed requests, sampled every 10k.

Issue 12 wants the RSS of one ``orchestrator serve`` process to stay within +-10 % once
warmed up. One process serves the whole run; wrk sends the ``mixed`` scenario (heartbeat,
GET, capability list and history read of b-0000, in turn) in chunks of exactly 10k
answers, and ``/proc/<pid>/status`` VmRSS is read after each chunk, with no request in
flight, so a sample holds what the process keeps rather than what it is handling.

Why the count is exact: each wrk thread stops after its share of answers
(BENCH_STOP_AFTER), but wrk's main thread still waits out ``-d`` before it reports. So a
chunk runs for about as long as 10k answers take at the last rate measured; what that
run leaves short is sent by a small run that stops by count, and the chunk's count is
checked. The first 2 chunks are the warm-up (imports, caches, the SQLite page cache
filling); the spread after it is (max - min) / median, and the drift is the change from
the 3rd sample to the last.

    python -m bench.memory [--requests 200000] [--json PATH]
    python -m bench.memory --store dynamodb --dynamodb-endpoint http://127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.harness import Server, WrkResult, run_wrk, service_command, serving
from bench.http_bench import ADMIN_TOKEN, AGENT_TOKEN, Lab, seed_service, write_tokens

CHUNK = 10_000
WARM_UP_CHUNKS = 2
CONNECTIONS = 8
THREADS = 2  # run_wrk's: BENCH_STOP_AFTER counts per thread
# http_bench's lab, lighter where the mixed scenario does not look: benches (a third with
# each capability, so the list fills its page of 20), 50 history entries of b-0000, and
# two claim benches with one run queued each.
LABS = {"sqlite": Lab(200, 2, 20), "dynamodb": Lab(60, 2, 20)}
WRK_ENV = {
    "BENCH_ADMIN_TOKEN": ADMIN_TOKEN,
    "BENCH_AGENT_TOKEN": AGENT_TOKEN,
    "BENCH_BENCH_ID": "b-0000",
    "BENCH_CAPABILITY": "can",
}


def _service_env(store: str, folder: Path, endpoint: str | None) -> dict[str, str]:
    env = {
        "ORCH_STORE": store,
        "ORCH_TOKENS_FILE": str(write_tokens(folder)),
        "ORCH_RATE_LIMIT_PER_S": "0",
        "ORCH_CURSOR_SECRET": "bench",
        "ORCH_LOG_FORMAT": "json",
    }
    if store == "sqlite":
        return env | {"ORCH_SQLITE_PATH": str(folder / "service.db")}
    if endpoint is None:
        raise SystemExit("--store dynamodb needs --dynamodb-endpoint")
    return env | {
        "ORCH_DYNAMODB_ENDPOINT_URL": endpoint,
        "ORCH_TABLE_PREFIX": f"memory-{uuid.uuid4().hex[:8]}-",
        "ORCH_CREATE_TABLES": "true",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
    }


class Chunks:
    """Sends exactly ``CHUNK`` answers per call, at the pace the last timed run showed."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self.rate = self._run(0, 2).rate  # a first measure of the pace, by time
        self.idle_s = 0.0  # wrk waiting out -d after its threads stopped

    def _run(self, answers: int, seconds: float) -> WrkResult:
        stop_after = math.ceil(answers / THREADS)
        result = run_wrk(self._server.url, "mixed", CONNECTIONS, seconds, WRK_ENV, stop_after)
        if result.status_errors or result.socket_errors:
            raise RuntimeError(f"mixed: errors in {result}")
        return result

    def send(self) -> int:
        sent = 0
        while sent < CHUNK:
            left = CHUNK - sent
            # Whole seconds (wrk's -d): just under the time ``left`` answers take, so that
            # the run usually ends by time and a short one tops it up by count.
            seconds = max(1, math.floor(left / self.rate))
            started = time.monotonic()
            result = self._run(left, seconds)
            if result.requests < left:  # ended by time: its rate is the pace now
                self.rate = result.requests / result.seconds
            else:
                self.idle_s += max(0.0, time.monotonic() - started - result.requests / self.rate)
            sent += result.requests
        # Two threads stop by count: an odd remainder comes back one answer over.
        if not CHUNK <= sent <= CHUNK + 1:
            raise RuntimeError(f"a chunk of {sent} answers, not {CHUNK}")
        return sent


def measure(server: Server, requests: int) -> dict[str, Any]:
    chunks = Chunks(server)
    start = server.rss_kib()  # after seeding and a first 2 s of load
    print(f"  start: {start / 1024:.1f} MiB at ~{chunks.rate:.0f} requests/s", flush=True)
    samples: list[int] = []
    sent: list[int] = []
    for _ in range(requests // CHUNK):
        sent.append(chunks.send())
        samples.append(server.rss_kib())
        print(f"  {sum(sent):>7} requests: {samples[-1] / 1024:7.1f} MiB", flush=True)
    settled = samples[WARM_UP_CHUNKS:]
    return {
        "requests": sum(sent),
        "chunk_requests": sent,
        "start_kib": start,
        "samples_kib": samples,
        "warm_up_kib": samples[:WARM_UP_CHUNKS],
        "spread_after_warm_up": round(
            (max(settled) - min(settled)) / statistics.median(settled), 4
        ),
        "drift_3rd_to_last_pct": round(100 * (settled[-1] - settled[0]) / settled[0], 2),
        "rate_per_s": round(chunks.rate),
        "idle_s": round(chunks.idle_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--store", choices=("sqlite", "dynamodb"), default="sqlite")
    parser.add_argument("--dynamodb-endpoint")
    parser.add_argument("--json", type=Path, help="write the outcome here")
    args = parser.parse_args()
    if args.requests < CHUNK * (WARM_UP_CHUNKS + 2):
        parser.error(f"--requests: at least {CHUNK * (WARM_UP_CHUNKS + 2)}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as name:
        folder = Path(name)
        env = _service_env(args.store, folder, args.dynamodb_endpoint)
        with serving(service_command(), env, folder / "service.log", "/readyz") as server:
            seed_service(server.url, LABS[args.store])
            outcome = {"store": args.store, **measure(server, args.requests)}
    outcome["seconds"] = round(time.monotonic() - started)
    print(
        f"  after warm-up: spread {100 * outcome['spread_after_warm_up']:.1f} %,"
        f" 3rd to last {outcome['drift_3rd_to_last_pct']:+.1f} %;"
        f" {outcome['seconds']} s in all, {outcome['idle_s']} s of it wrk waiting out -d"
    )
    if args.json:
        args.json.write_text(json.dumps(outcome, indent=2))


if __name__ == "__main__":
    main()
