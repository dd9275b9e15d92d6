"""One real API process (``orchestrator serve``) that a test kills, restarts or stops.

``tests/support/api_processes.py`` runs replicas for the length of a session; the tests
here need a process of their own to SIGKILL in the middle of a storm, start again on the
same store, or send SIGTERM while a request is in flight. Each start gets a listening
socket bound here and handed over (``serve --fd``): the port is known before the server
is up, a request sent meanwhile waits in the backlog rather than failing, and once the
child has it the test closes its own copy, so when the server closes the socket (on
SIGTERM) or dies, nothing listens on the port any more: new connections are refused.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 30.0


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the ORCH_* variables a child process reads them from."""
    return {
        f"ORCH_{name.upper()}": str(value)
        for name, value in settings.model_dump().items()
        if value is not None
    }


def _child_env(env: dict[str, str]) -> dict[str, str]:
    # Only the settings given: none of this process's own ORCH_* variables leak in.
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("ORCH_")}
    return {**inherited, **env}


@dataclass
class ApiServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        """SIGKILL, now: no handler runs, nothing is flushed, requests in flight are cut."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    async def exit_code(self, timeout_s: float = STOP_DEADLINE_S) -> int:
        """Wait (without blocking the event loop) for the process to end."""
        return await asyncio.to_thread(self.process.wait, timeout_s)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def spawn_api(env: dict[str, str], log: Path, *extra: str) -> ApiServer:
    """Start ``python -m app.cli serve`` on a socket of its own; do not wait for it."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        with log.open("ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--fd", str(listener.fileno()), *extra],
                cwd=REPO,
                env=_child_env(env),
                stdout=output,
                stderr=subprocess.STDOUT,
                pass_fds=[listener.fileno()],
            )
    finally:
        listener.close()  # the child holds it now
    return ApiServer(f"http://127.0.0.1:{port}", process, log)


async def wait_until_ready(server: ApiServer, timeout_s: float = START_DEADLINE_S) -> None:
    """One request: it waits in the socket's backlog until the server accepts it."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            response = await http.get(f"{server.url}/readyz")
    except httpx.TransportError as error:
        raise RuntimeError(
            f"API at {server.url} did not start (exit {server.process.poll()}):\n"
            f"{server.log_text()[-4000:]}"
        ) from error
    if response.status_code != 200:
        raise RuntimeError(f"API at {server.url} is not ready: {response.text}")


async def start_api(env: dict[str, str], log: Path, *extra: str) -> ApiServer:
    server = spawn_api(env, log, *extra)
    try:
        await wait_until_ready(server)
    except BaseException:
        server.kill()
        await server.exit_code()
        raise
    return server


@asynccontextmanager
async def running_api(env: dict[str, str], log: Path, *extra: str) -> AsyncIterator[ApiServer]:
    """A started API process; whatever the test did to it, none is left running after."""
    server = await start_api(env, log, *extra)
    try:
        yield server
    finally:
        server.kill()
        await server.exit_code()


def connection_refused(port: int) -> bool:
    """Whether nothing listens on ``port`` (a connection attempt is refused)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


async def until(predicate: Callable[[], Awaitable[bool]], deadline_s: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` once ``deadline_s`` passed."""
    deadline = time.monotonic() + deadline_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {deadline_s} s: {what}")
        await asyncio.sleep(0.02)
