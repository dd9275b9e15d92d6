"""Real uvicorn processes serving the API, for tests that need several replicas."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
_START_DEADLINE_S = 30.0


def _listening_socket() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    return listener


def _wait_until_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    """One blocking request: it waits in the socket's backlog until uvicorn serves it."""
    try:
        response = httpx.get(f"{url}/readyz", timeout=_START_DEADLINE_S)
    except httpx.TransportError as error:
        raise RuntimeError(f"API at {url} did not start (exit {process.poll()})") from error
    if response.status_code != 200:
        raise RuntimeError(f"API at {url} is not ready: {response.text}")


@contextmanager
def running_api_processes(env: dict[str, str], count: int, log_dir: Path) -> Iterator[list[str]]:
    """Start ``count`` uvicorn processes with ``env`` (ORCH_* settings); yield their URLs.

    Each listening socket is bound here and handed over (uvicorn --fd): the ports are
    known and held before the servers start, so nothing polls for them to come up.
    """
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for index in range(count):
            listener = _listening_socket()
            port = listener.getsockname()[1]
            log = (log_dir / f"api-{index}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "app.main:app",
                        "--fd",
                        str(listener.fileno()),
                        "--no-access-log",
                    ],
                    cwd=REPO,
                    env={**os.environ, **env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=[listener.fileno()],
                )
            )
            listener.close()
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes, strict=True):
            _wait_until_ready(url, process)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
