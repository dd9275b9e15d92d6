"""What every HTTP benchmark shares: servers on sockets handed over, and wrk runs.

Each server gets a listening socket bound here (``--fd``): its port is known before it
is up, and a first request waits in the backlog instead of being refused, so "ready" is
one blocking request rather than a polling loop.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "wrk" / "scenario.lua"
START_DEADLINE_S = 60.0
WRK_THREADS = 2


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        """Resident memory now, from /proc (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for process {self.pid}")


def _child_env(env: Mapping[str, str]) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "FLOOR_"))}
    return {**inherited, "PYTHONUNBUFFERED": "1", **env}


@contextmanager
def serving(command: list[str], env: Mapping[str, str], log: Path, probe: str) -> Iterator[Server]:
    """Run ``command`` (which takes ``--fd N``) on a fresh socket until the context ends."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    fd = listener.fileno()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command, "--fd", str(fd)],
            env=_child_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=(fd,),
            cwd=REPO,
        )
    listener.close()
    server = Server(url, process)
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        with httpx.Client(base_url=url, timeout=START_DEADLINE_S) as client:
            # The request waits in the backlog until the server accepts it.
            answer = client.get(probe)
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{command[0]} did not start: see {log}")
        if answer.status_code >= 500:
            raise RuntimeError(f"{command} answered {answer.status_code} at start: see {log}")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def service_command() -> list[str]:
    return [str(Path(sys.executable).with_name("orchestrator")), "serve"]


def floor_command() -> list[str]:
    return [sys.executable, "-m", "bench.floor"]


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    status_errors: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit(
            "make bench needs wrk (Debian: apt-get install wrk); `make bench` installs it"
            " when it may"
        )
    return found


def run_wrk(
    url: str,
    scenario: str,
    connections: int,
    seconds: float,
    env: Mapping[str, str],
    stop_after: int = 0,
) -> WrkResult:
    """One wrk run of ``scenario`` (bench/wrk/scenario.lua) against ``url``."""
    threads = min(WRK_THREADS, connections)
    command = [
        wrk_path(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        url,
    ]
    run_env = {
        **os.environ,
        **env,
        "BENCH_SCENARIO": scenario,
        "BENCH_THREADS": str(threads),
        "BENCH_STOP_AFTER": str(stop_after),
    }
    done = subprocess.run(command, env=run_env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH-RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("BENCH-RESULT "))
    return WrkResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        status_errors=raw["status_errors"],
        socket_errors=raw["socket_errors"] + raw["timeouts"],
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
    )
