"""A real service for the client distribution's tests: ``orchestrator serve`` (uvicorn) on
a free port, in a scratch directory with its own SQLite file and development tokens."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
ORCHESTRATOR = REPO / ".venv" / "bin" / "orchestrator"
START_DEADLINE_S = 30.0


@dataclass
class LiveApi:
    """One running service. ``tokens``: ADMIN_TOKEN, USER_TOKEN, USER2_TOKEN, CI_TOKEN,
    AGENT_TOKEN (rig-1's agent), as ``var/dev-tokens.env`` names them."""

    url: str
    workdir: Path
    tokens: dict[str, str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] = field(repr=False)

    def log(self) -> str:
        return (self.workdir / "server.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def restart(self) -> None:
        """Stop (if running) and start again on the same port and data."""
        self.stop()
        self.process = _spawn(self.workdir, self.env)
        _wait_ready(self)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _spawn(workdir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with (workdir / "server.log").open("ab") as log:
        return subprocess.Popen(
            [str(ORCHESTRATOR), "serve"],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _wait_ready(api: LiveApi) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while True:
        try:
            if httpx.get(f"{api.url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert api.process.poll() is None, api.log()
        assert time.monotonic() < deadline, f"the service did not start:\n{api.log()}"
        time.sleep(0.05)


def start_api(workdir: Path, **settings: str) -> LiveApi:
    """A service in ``workdir``; ``settings`` are ORCH_* values (``task_lease_s="2"``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORCH_")}
    env |= {"ORCH_PORT": str(port), "ORCH_LOG_FORMAT": "json"}
    env |= {f"ORCH_{name.upper()}": value for name, value in settings.items()}
    api = LiveApi(f"http://127.0.0.1:{port}", workdir, {}, env, _spawn(workdir, env))
    _wait_ready(api)
    for line in (workdir / "var" / "dev-tokens.env").read_text().splitlines():
        name, _, token = line.removeprefix("export ").partition("=")
        api.tokens[name] = token
    return api


@pytest.fixture
def live_api(tmp_path: Path) -> Iterator[LiveApi]:
    """A fresh service with the default settings, stopped after the test."""
    api = start_api(tmp_path / "service")
    try:
        yield api
    finally:
        api.kill()
