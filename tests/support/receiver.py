"""A webhook receiver on loopback, for tests: records what arrives and answers as told.

A real HTTP server in a thread (the service's sender makes real requests), so timeouts,
refused connections and Retry-After behave as they would in a lab.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    # Answers for the next requests (status, extra headers); then 200 for every one.
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # While set to an Event, each request is held (unanswered) until the event is set.
    hold: threading.Event | None = None

    def answer(self) -> tuple[int, dict[str, str]]:
        with self.lock:
            return self.script.pop(0) if self.script else (200, {})

    def record(self, received: Received) -> None:
        with self.lock:
            self.received.append(received)

    def messages(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def wait_for(
        self, done: Callable[[list[Received]], bool], timeout: float = 20.0
    ) -> list[Received]:
        """Poll until ``done`` holds for what arrived (a deadline, not a sleep to wait)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.messages()
            if done(got):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver: condition not met in {timeout} s; got {len(got)}")
            time.sleep(0.02)


@contextmanager
def receiving(path: str = "/hook") -> Iterator[Receiver]:
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            receiver = holder["receiver"]
            receiver.record(
                Received({k.lower(): v for k, v in self.headers.items()}, body, time.time())
            )
            if receiver.hold is not None:
                receiver.hold.wait(30)
            status, headers = receiver.answer()
            answer = json.dumps({"status": status}).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["receiver"] = Receiver(f"http://127.0.0.1:{server.server_address[1]}{path}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["receiver"]
    finally:
        server.shutdown()
        server.server_close()
