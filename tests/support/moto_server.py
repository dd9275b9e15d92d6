"""moto's server in a subprocess, one per test session.

Served single-threaded on purpose: moto's DynamoDB code reads, checks and writes without
a lock, so concurrent requests in its default threaded server can both win one conditional
write (docs: dynamodb-under-test.md). One request at a time makes every condition exact.

Run as ``python -m tests.support.moto_server --port N``; tests use ``running_moto_server``.
Set ``ORCH_TEST_DYNAMODB_ENDPOINT`` to use an endpoint that is already running instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENDPOINT_ENV = "ORCH_TEST_DYNAMODB_ENDPOINT"
_HOST = "127.0.0.1"
# moto answers after about 0.6 s here; a slow CI machine gets a generous margin.
_START_DEADLINE_S = 30.0
_POLL_INTERVAL_S = 0.05
_STOP_TIMEOUT_S = 10.0
# A free port can be taken by someone else before the child binds it: try a few.
_PORT_ATTEMPTS = 3
_REPO_ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def running_moto_server() -> Iterator[str]:
    """Yield the endpoint URL of a moto server that lives as long as the context."""
    configured = os.environ.get(ENDPOINT_ENV)
    if configured:
        yield configured
        return
    for attempt in range(_PORT_ATTEMPTS):
        port = _free_port()
        # A file, not a pipe: nobody drains a pipe while tests run, and a full one would
        # block the server mid-request.
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.moto_server", "--port", str(port)],
                cwd=_REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            endpoint = f"http://{_HOST}:{port}"
            try:
                if _wait_until_serving(process, endpoint):
                    yield endpoint
                    return
            finally:
                _stop(process)
            if attempt == _PORT_ATTEMPTS - 1:
                log.seek(0)
                output = log.read().decode(errors="replace")
                raise RuntimeError(f"moto server did not start on port {port}:\n{output}")
    raise AssertionError("unreachable")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_serving(process: subprocess.Popen[bytes], endpoint: str) -> bool:
    """Poll until the server answers HTTP; False if the child died (port taken)."""
    deadline = time.monotonic() + _START_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer means it is serving
        except OSError:
            time.sleep(_POLL_INTERVAL_S)  # not listening yet: poll again
    raise TimeoutError(f"moto server at {endpoint} did not answer within {_START_DEADLINE_S} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> None:
    import logging

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser(description="moto server, one request at a time")
    parser.add_argument("--host", default=_HOST)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # werkzeug logs every request; thousands of lines per session help nobody.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = DomainDispatcherApplication(create_backend_app)
    # Single-threaded, werkzeug also speaks HTTP/1.0: every request closes its connection,
    # so an idle keep-alive connection of one client cannot hold the only thread.
    server = make_server(host=args.host, port=args.port, app=app, threaded=False)
    # terminate() is the normal way to stop: leave through finally, exit status 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
