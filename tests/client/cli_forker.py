"""benchctl as a fresh process per call, without paying its imports each time.

Importing the CLI (httpx, rich, typer, the API models) costs about 1.4 s of CPU, and the
benchctl tests make a few hundred calls. A helper process imports it once, then forks a
child per call: the child is a new process (its own environment, time zone, exit code,
stdout and stderr) that starts where the imports left off. What a test sees is what a
subprocess run shows; only the start is faster. (Not for calls that must be signalled or
read while running: those use a real subprocess.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

SERVER = r"""
import json, os, sys, tempfile, time
import bench_client.cli.main as cli

def run(request):
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:
        try:
            os.environ.clear()
            os.environ.update(request["env"])
            time.tzset()
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            sys.stdin = open(0)
            sys.stdout = open(1, "w", buffering=1)
            sys.stderr = open(2, "w", buffering=1)
            try:
                cli.main(request["args"])
                code = 0
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            code = 70
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    return {"code": code, "out": out.read().decode(), "err": err.read().decode()}

print("ready", flush=True)
for line in sys.stdin:
    print(json.dumps(run(json.loads(line))), flush=True)
"""


class CliForker:
    """One warmed-up helper; calls are served one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None

    def _server(self) -> subprocess.Popen[str]:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [sys.executable, "-c", SERVER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert self._process.stdout is not None
            assert self._process.stdout.readline().strip() == "ready"
        return self._process

    def run(
        self, args: Sequence[str], env: Mapping[str, str], timeout_s: float
    ) -> subprocess.CompletedProcess[str]:
        with self._lock:
            server = self._server()
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write(json.dumps({"args": list(args), "env": dict(env)}) + "\n")
            server.stdin.flush()
            answer = _read_line(server, timeout_s)
        done = json.loads(answer)
        return subprocess.CompletedProcess(
            ["benchctl", *args], done["code"], done["out"], done["err"]
        )

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            self._process.wait(timeout=10)


def _read_line(server: subprocess.Popen[str], timeout_s: float) -> str:
    """The helper's answer, or a failure (and a fresh helper next time) after the timeout."""
    assert server.stdout is not None
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(server.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout_s)
    if not found:
        server.kill()
        raise subprocess.TimeoutExpired(["benchctl"], timeout_s)
    if not found[0]:
        raise RuntimeError("the benchctl helper process died")
    return found[0]


FORKER = CliForker()
