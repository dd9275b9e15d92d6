"""Retries: a create whose answer is lost is repeated with the same Idempotency-Key and
books once; 429 and 503 wait for Retry-After; the bound on retries; TransportFailure."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from bench_client import Client, RateLimited, TransportFailure, Unavailable
from bench_client.errors import parse_retry_after

from tests.client.conftest import LiveApi, free_port, start_api


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# --------------------------------------------------------------------------- a lossy proxy


class LosingProxy:
    """TCP proxy to ``upstream``. On its first ``lose`` connections it relays the request
    and waits for the service to start answering, then closes the client's connection
    without relaying a byte of the answer: the service did the work, the client never heard.
    Later connections are relayed both ways."""

    def __init__(self, upstream: tuple[str, int], lose: int = 1) -> None:
        self.upstream = upstream
        self.lose = lose
        self.connections = 0
        self.lost = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                index = self.connections
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn, index), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def _serve(self, conn: socket.socket, index: int) -> None:
        up = socket.create_connection(self.upstream)
        threading.Thread(target=self._pump, args=(conn, up), daemon=True).start()
        if index < self.lose:
            try:
                first = up.recv(1)  # the service has answered: the work is done
            finally:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
                up.close()
            if first:
                with self._lock:
                    self.lost += 1
            return
        self._pump(up, conn)
        conn.close()
        up.close()


@pytest.fixture
def service(live_api: LiveApi) -> Iterator[LiveApi]:
    with Client(live_api.url, live_api.tokens["ADMIN_TOKEN"]) as admin:
        admin.create_bench("rig-1", "HIL rig 1", "hil")
    yield live_api


def test_a_lost_answer_to_a_create_is_retried_and_books_once(service: LiveApi) -> None:
    token = service.tokens["USER_TOKEN"]
    split = urlsplit(service.url)
    assert split.hostname and split.port
    proxy = LosingProxy((split.hostname, split.port), lose=1)
    start = now() + timedelta(days=1)
    try:
        with Client(proxy.url, token, max_retries=3, backoff_base=0.05) as client:
            booked = client.create_reservation(
                start=start, end=start + timedelta(hours=1), bench_id="rig-1", purpose="once"
            )
    finally:
        proxy.close()
    assert proxy.lost == 1 and proxy.connections == 2  # the answer was lost once, then retried
    with Client(service.url, token) as direct:
        mine = list(direct.list_reservations(user_id="me"))
    assert [r.reservation_id for r in mine] == [booked.reservation_id]
    assert mine[0].version == 1 and mine[0].purpose == "once"


def test_the_same_explicit_key_replays_the_first_booking(service: LiveApi) -> None:
    start = now() + timedelta(days=2)
    with Client(service.url, service.tokens["USER_TOKEN"]) as client:
        first = client.create_reservation(
            start=start, end=start + timedelta(hours=1), bench_id="rig-1", idempotency_key="k-1"
        )
        again = client.create_reservation(
            start=start, end=start + timedelta(hours=1), bench_id="rig-1", idempotency_key="k-1"
        )
        assert again.reservation_id == first.reservation_id
        assert len(list(client.list_reservations(user_id="me"))) == 1


def test_a_non_repeatable_request_is_not_repeated_once_sent() -> None:
    """A claim whose answer was lost is not repeated (it could lease a second task)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ReadError("connection reset", request=request)

    with (
        Client("http://svc.test", "t", transport=httpx.MockTransport(handler)) as client,
        pytest.raises(TransportFailure) as caught,
    ):
        client.claim_task("rig-1")
    assert len(seen) == 1
    assert isinstance(caught.value.__cause__, httpx.ReadError)


def test_an_unreachable_service_is_a_transport_failure_after_the_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with (
        Client(url, "t", max_retries=2, backoff_base=0.01, backoff_max=0.05) as client,
        pytest.raises(TransportFailure) as caught,
    ):
        client.get_bench("rig-1")
    assert "after 2 retries" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert time.monotonic() - started < 5


# --------------------------------------------------------------------------- 429 and 503

BENCH: dict[str, object] = {
    "admin_state": "active",
    "agent_version": None,
    "bench_id": "rig-1",
    "capabilities": [],
    "concurrency": 1,
    "created_at": "2026-11-25T09:00:00Z",
    "heartbeat_interval_s": 30,
    "labels": {},
    "last_heartbeat_at": None,
    "name": "HIL rig 1",
    "status": "offline",
    "type": "hil",
    "updated_at": "2026-11-25T09:00:00Z",
    "version": 1,
}


def problem(status: int, retry_after: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/problem+json"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    body = {"type": "about:blank", "title": "Busy", "status": status, "detail": "later",
            "instance": "/v1/benches/rig-1"}  # fmt: skip
    return httpx.Response(status, headers=headers, content=json.dumps(body))


class Script:
    """A MockTransport handler answering from a list, recording when each request came."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.times: list[float] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.times.append(time.monotonic())
        self.requests.append(request)
        if len(self.answers) > 1:
            return self.answers.pop(0)
        return self.answers[0]


def test_429_waits_for_retry_after_then_succeeds() -> None:
    script = Script(problem(429, "1"), httpx.Response(200, json=BENCH))
    with Client("http://svc.test", "t", transport=httpx.MockTransport(script),
                backoff_base=0.001) as client:  # fmt: skip
        bench = client.get_bench("rig-1")
    assert bench.bench_id == "rig-1"
    assert len(script.times) == 2
    assert script.times[1] - script.times[0] >= 1.0  # Retry-After, not the tiny backoff
    assert script.requests[0].headers["X-Request-ID"] == script.requests[1].headers["X-Request-ID"]


def test_503_is_retried_with_the_same_idempotency_key() -> None:
    created = {**BENCH, "bench_id": "rig-9"}
    script = Script(problem(503, "0"), problem(503, None), httpx.Response(201, json=created))
    with Client("http://svc.test", "t", transport=httpx.MockTransport(script),
                backoff_base=0.001) as client:  # fmt: skip
        bench = client.create_bench("rig-9", "HIL rig 9", "hil")
    assert bench.bench_id == "rig-9"
    keys = {request.headers["Idempotency-Key"] for request in script.requests}
    assert len(script.requests) == 3 and len(keys) == 1


def test_retries_are_bounded_then_the_typed_error_carries_retry_after() -> None:
    script = Script(problem(503, "0"))
    with (
        Client("http://svc.test", "t", transport=httpx.MockTransport(script), max_retries=3,
               backoff_base=0.001) as client,
        pytest.raises(Unavailable) as caught,
    ):  # fmt: skip
        client.get_bench("rig-1")
    assert len(script.requests) == 4  # the first try and 3 retries
    assert caught.value.status == 503 and caught.value.retry_after == 0.0


def test_a_retry_after_beyond_the_cap_is_raised_at_once() -> None:
    script = Script(problem(429, "120"))
    with (
        Client("http://svc.test", "t", transport=httpx.MockTransport(script),
               backoff_max=5.0) as client,
        pytest.raises(RateLimited) as caught,
    ):  # fmt: skip
        client.get_bench("rig-1")
    assert len(script.requests) == 1
    assert caught.value.retry_after == 120.0
    assert str(caught.value) == "429 Busy: later"


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    from bench_client._core import RetryPolicy

    policy = RetryPolicy(max_retries=10, base_delay=0.5, max_delay=4.0)
    for retry in range(10):
        ceiling = min(4.0, 0.5 * 2**retry)
        waits = [policy.backoff(retry) for _ in range(200)]
        assert all(0.0 <= wait <= ceiling for wait in waits)
        assert max(waits) > ceiling / 2  # spread over the whole range, not a fixed delay


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    at = datetime(2026, 11, 25, 9, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Wed, 25 Nov 2026 09:00:30 GMT", now=at) == 30.0
    assert parse_retry_after("Wed, 25 Nov 2026 08:00:00 GMT", now=at) == 0.0


def test_a_rate_limited_service_is_waited_for(tmp_path: Path) -> None:
    """The real limiter: 1 request a second with a burst of 2; five reads all succeed."""
    api = start_api(tmp_path / "service", rate_limit_per_s="2", rate_limit_burst="2")
    try:
        seen: list[int] = []

        def record(response: httpx.Response) -> None:
            seen.append(response.status_code)

        with Client(api.url, api.tokens["ADMIN_TOKEN"], backoff_base=0.01) as client:
            client._http.event_hooks["response"].append(record)
            client.create_bench("rig-1", "HIL rig 1", "hil")
            for _ in range(4):
                assert client.get_bench("rig-1").bench_id == "rig-1"
        assert 429 in seen and seen.count(200) + seen.count(201) == 5
    finally:
        api.kill()
