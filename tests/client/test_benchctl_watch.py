"""Events on the client side: the SSE parser on its own; Client.follow_events and its
reconnection against a scripted transport (and AsyncClient's twin); ``benchctl watch``
against a live service (lines, filters, JSON lines, Ctrl-C, resuming across a restart);
and examples/webhook_receiver.py checking signatures made the way the service makes them."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from bench_client import (
    ApiError,
    AsyncClient,
    Client,
    Gone,
    StreamNotice,
    StreamOpened,
    StreamReconnecting,
    TransportFailure,
    Unauthorized,
)
from bench_client._core import RetryPolicy
from bench_client._stream import reconnect_delay
from bench_client.sse import ServerSentEvent, SseParser

from tests.client.conftest import REPO, LiveApi, _spawn, _wait_ready, free_port, start_api
from tests.client.test_benchctl_support import Benchctl, poll, register

FAST_EVENTS = {"event_poll_ms": "50", "event_keepalive_s": "0.5"}
DEADLINE_S = 30.0
RESTART_DEADLINE_S = 60.0  # down, a booking elsewhere, up again, and the client's backoff

# --------------------------------------------------------------------------- the parser

STREAM = (
    "\ufeffretry: 2500\n"
    ": stream open\n"
    "\n"
    "id: 7\n"
    "event: reservation.created\n"
    'data: {"a":\n'
    "data:  1}\n"  # one space after the colon goes, the second stays
    "\n"
    ": keep-alive\n"
    "\n"
    "data\n"  # a field without a colon: an empty value (a message with empty data)
    "unknown: ignored\n"
    "\n"
    "id: 8\r\n"
    "event: bench.changed\r\n"
    "data:Grüße €\r\n"
    "\r\n"
    "retry: soon\n"  # not digits: ignored
    "id: 9\n"  # an id without data: no message, but the last event ID moves
    "\n"
    "id: bad\0id\n"  # a NUL: the id is ignored
    "data: a\rdata: b\r\r"  # CR alone ends lines too
    "data: never dispatched\n"  # the body ends before its blank line
)
EXPECTED = [
    ServerSentEvent("reservation.created", '{"a":\n 1}', "7"),
    ServerSentEvent("message", "", "7"),
    ServerSentEvent("bench.changed", "Grüße €", "8"),
    ServerSentEvent("message", "a\nb", "9"),
]


def parse(chunks: list[bytes], last_event_id: str = "") -> tuple[list[ServerSentEvent], SseParser]:
    parser = SseParser(last_event_id)
    found: list[ServerSentEvent] = []
    for chunk in chunks:
        found += parser.feed(chunk)
    return found, parser


def test_the_parser_reads_messages_fields_and_comments_as_whatwg_says() -> None:
    found, parser = parse([STREAM.encode()])
    assert found == EXPECTED
    assert parser.retry_ms == 2500
    assert parser.last_event_id == "9"


def test_the_parser_gives_the_same_messages_however_the_body_is_split() -> None:
    body = STREAM.encode()
    assert parse([bytes([byte]) for byte in body])[0] == EXPECTED  # CRLF and UTF-8 split
    for cut in range(1, len(body)):
        assert parse([body[:cut], body[cut:]])[0] == EXPECTED, cut
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(body)), 6))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        assert parse(pieces)[0] == EXPECTED


def test_a_seeded_parser_keeps_its_last_event_id_for_messages_without_one() -> None:
    found, parser = parse([b"retry: 3000\n: stream open\n\n", b"data: x\n\n"], "41")
    assert found == [ServerSentEvent("message", "x", "41")]
    assert parser.last_event_id == "41"
    # An empty id resets it, as the standard says.
    assert parse([b"id\ndata: y\n\n"], "41")[0] == [ServerSentEvent("message", "y", "")]


def test_the_reconnect_delay_doubles_is_capped_and_never_undercuts_the_stream() -> None:
    policy = RetryPolicy(max_delay=30.0, rng=random.Random(1))
    for failures in range(12):
        ceiling = min(30.0, 3.0 * 2**failures)
        for _ in range(20):
            delay = reconnect_delay(3.0, failures, policy)
            assert max(3.0, ceiling / 2) <= delay <= ceiling
    assert reconnect_delay(45.0, 5, policy) == 45.0  # the stream asked for longer


# --------------------------------------------------------------------------- follow_events


def event_json(position: int, type: str = "reservation.created") -> str:
    return json.dumps(
        {
            "position": str(position),
            "event_id": f"e-{position}",
            "type": type,
            "at": "2030-01-02T03:04:05Z",
            "actor": "alice",
            "entity": {"type": "reservation", "id": f"r-{position}", "version": 1},
            "bench_id": "rig-1",
            "user_id": "alice",
            "data": {"status": "confirmed"},
        }
    )


def message(position: int) -> str:
    return f"id: {position}\nevent: reservation.created\ndata: {event_json(position)}\n\n"


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body in small chunks, then optionally a failure (the connection dropping)."""

    def __init__(self, text: str, then: Exception | None = None) -> None:
        raw = text.encode()
        self.chunks = [raw[i : i + 5] for i in range(0, len(raw), 5)]
        self.then = then

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.then is not None:
            raise self.then

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.then is not None:
            raise self.then


def problem(status: int, **headers: str) -> httpx.Response:
    body = {"type": "about:blank", "title": f"status {status}", "status": status, "detail": "x"}
    return httpx.Response(
        status,
        json=body,
        headers={"Content-Type": "application/problem+json", **headers},
    )


def sse(text: str, then: Exception | None = None) -> httpx.Response:
    return httpx.Response(
        200, headers={"Content-Type": "text/event-stream"}, stream=Body(text, then)
    )


@dataclass
class Script:
    """A transport answering each request with the next answer; what was asked is kept."""

    answers: list[Callable[[httpx.Request], httpx.Response]]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers[len(self.requests) - 1](request)

    def resumed_after(self) -> list[str | None]:
        return [request.headers.get("Last-Event-ID") for request in self.requests]


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def drop_script() -> Script:
    """Two events and a clean end; a 503; a refused connection; a third event and a
    connection that drops in the middle of the fourth; a 410."""
    return Script(
        [
            lambda _: sse("retry: 1\n: stream open\n\n" + message(1) + message(2)),
            lambda _: problem(503, **{"Retry-After": "0"}),
            refused,
            lambda _: sse(message(3) + message(4)[:30], httpx.ReadError("reset by peer")),
            lambda _: problem(410),
        ]
    )


def check_drop_script(script: Script, positions: list[str], notices: list[StreamNotice]) -> None:
    assert positions == ["1", "2", "3"]  # the half-sent fourth is not an event
    assert script.resumed_after() == [None, "2", "2", "2", "3"]
    first = script.requests[0]
    assert first.url.path == "/v1/events"
    assert first.url.params.get_list("type") == ["reservation.*", "bench.online"]
    assert first.url.params["bench_id"] == "rig-1" and first.url.params["user_id"] == "me"
    assert first.headers["Accept"] == "text/event-stream"
    assert first.headers["Authorization"] == "Bearer t0ken"
    opened = [n.last_event_id for n in notices if isinstance(n, StreamOpened)]
    assert opened == ["", "2"]
    lost = [n for n in notices if isinstance(n, StreamReconnecting)]
    assert [n.attempt for n in lost] == [1, 2, 3, 1]
    assert "ended the stream" in lost[0].reason
    assert "503" in lost[1].reason
    assert "ConnectError" in lost[2].reason
    assert "ReadError" in lost[3].reason
    assert [n.last_event_id for n in lost] == ["2", "2", "2", "3"]
    assert all(0.001 <= n.delay <= 0.05 for n in lost)  # retry: 1 (ms), capped by backoff_max


FILTERS: dict[str, Any] = {
    "types": ["reservation.*", "bench.online"],
    "bench_id": "rig-1",
    "user_id": "me",
}


def test_follow_events_resumes_after_each_failure_from_the_last_id_then_raises_gone() -> None:
    script = drop_script()
    notices: list[StreamNotice] = []
    positions: list[str] = []
    transport = httpx.MockTransport(script)
    with (
        Client("http://orch.test", "t0ken", transport=transport, backoff_max=0.05) as client,
        pytest.raises(Gone) as gone,
    ):
        for event in client.follow_events(**FILTERS, on_notice=notices.append):
            positions.append(event.position)
    assert gone.value.status == 410
    check_drop_script(script, positions, notices)


async def test_the_async_client_follows_the_same_way() -> None:
    script = drop_script()
    notices: list[StreamNotice] = []
    positions: list[str] = []
    transport = httpx.MockTransport(script)
    async with AsyncClient(
        "http://orch.test", "t0ken", transport=transport, backoff_max=0.05
    ) as client:
        with pytest.raises(Gone):
            async for event in client.follow_events(**FILTERS, on_notice=notices.append):
                positions.append(event.position)
    check_drop_script(script, positions, notices)


def test_follow_events_starts_after_a_position_and_gives_up_when_told() -> None:
    script = Script([refused] * 3)
    transport = httpx.MockTransport(script)
    with Client("http://orch.test", "t0ken", transport=transport, backoff_max=0.01) as client:
        stream = client.follow_events(after="17", max_reconnects=2)
        with pytest.raises(TransportFailure, match="ConnectError"):
            next(stream)
    assert script.resumed_after() == ["17", "17", "17"]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (problem(401), Unauthorized),
        (problem(422), ApiError),
        (httpx.Response(200, json={"items": []}), ApiError),  # not text/event-stream
    ],
)
def test_what_reconnecting_cannot_mend_is_raised_at_once(
    answer: httpx.Response, error: type[Exception]
) -> None:
    script = Script([lambda _: answer] * 2)
    transport = httpx.MockTransport(script)
    with Client("http://orch.test", "t0ken", transport=transport) as client, pytest.raises(error):
        next(client.follow_events())
    assert len(script.requests) == 1


# --------------------------------------------------------------------------- benchctl watch


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    service = start_api(tmp_path_factory.mktemp("benchctl-watch"), **FAST_EVENTS)
    try:
        yield service
    finally:
        service.kill()


@pytest.fixture
def benchctl(api: LiveApi, tmp_path: Path) -> Benchctl:
    return Benchctl(api, tmp_path)


@dataclass
class Watch:
    """``benchctl watch`` running, its stdout and stderr lines collected as they come."""

    process: subprocess.Popen[str]
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            assert stream is not None
            reader = threading.Thread(target=_collect, args=(stream, lines), daemon=True)
            reader.start()
            self.readers.append(reader)

    def wait_out(self, what: str, needle: str, deadline_s: float = DEADLINE_S) -> str:
        return self._wait(self.out, what, needle, deadline_s)

    def wait_err(self, what: str, needle: str, deadline_s: float = DEADLINE_S) -> str:
        return self._wait(self.err, what, needle, deadline_s)

    def _wait(self, lines: list[str], what: str, needle: str, deadline_s: float) -> str:
        def probe() -> str | None:
            assert self.process.poll() is None or any(needle in line for line in lines), (
                f"benchctl watch exited ({self.process.returncode}): {self.err}"
            )
            return next((line for line in list(lines) if needle in line), None)

        return poll(f"{what} (stdout {self.out}, stderr {self.err})", probe, deadline_s)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.out)]

    def interrupt(self) -> int:
        """Ctrl-C: the exit status."""
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=DEADLINE_S)
        for reader in self.readers:
            reader.join(timeout=DEADLINE_S)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=DEADLINE_S)


def _collect(stream: Any, lines: list[str]) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))


@pytest.fixture
def watch(benchctl: Benchctl) -> Iterator[Callable[..., Watch]]:
    """Starts ``benchctl watch ARGS`` (as alice unless ``token=``) and waits until its
    stream is open, so that what happens next is in it."""
    started: list[Watch] = []

    def start(*args: str, token: str = "USER_TOKEN", benchctl: Benchctl = benchctl) -> Watch:
        running = Watch(benchctl.start("watch", *args, token=token))
        started.append(running)
        running.wait_err("the stream to open", "watching events")
        return running

    try:
        yield start
    finally:
        for running in started:
            running.kill()


def book(client: Client, bench_id: str, days: int) -> str:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)
    booked = client.create_reservation(
        start=start, end=start + timedelta(hours=1), bench_id=bench_id
    )
    return booked.reservation_id


def created(watch: Watch) -> list[str]:
    return [e["entity"]["id"] for e in watch.events() if e["type"] == "reservation.created"]


def test_watch_prints_a_booking_as_it_happens_and_ends_at_ctrl_c(
    benchctl: Benchctl, watch: Callable[..., Watch]
) -> None:
    register(benchctl.api, "rig-watch")
    running = watch()
    with benchctl.client("USER_TOKEN") as alice:
        reservation_id = book(alice, "rig-watch", 1)
    line = running.wait_out("the booking's line", reservation_id)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T  reservation\.created ", line), line
    assert f"reservation {reservation_id} v1 (confirmed)" in line
    assert "on rig-watch" in line and line.endswith("by alice")
    assert running.interrupt() == 0
    assert "Traceback" not in "\n".join(running.err), running.err


def test_watch_filters_mine_a_bench_and_types_and_prints_json_lines(
    benchctl: Benchctl, watch: Callable[..., Watch]
) -> None:
    register(benchctl.api, "rig-wa")
    register(benchctl.api, "rig-wb")
    mine = watch("--mine", "--json")
    on_b = watch("--bench", "rig-wb", "--type", "reservation.*", "-o", "json")
    with (
        benchctl.client("USER_TOKEN") as alice,
        benchctl.client("USER2_TOKEN") as bob,
        benchctl.client("ADMIN_TOKEN") as admin,
    ):
        bobs_on_a = book(bob, "rig-wa", 2)
        alices_on_a = book(alice, "rig-wa", 3)
        bobs_on_b = book(bob, "rig-wb", 2)
        admin.update_bench(admin.get_bench("rig-wb"), labels={"room": "b3"})  # bench.changed
        alices_on_b = book(alice, "rig-wb", 3)
    # Events come in log order: once the last is there, whatever was left out is out.
    mine.wait_out("alice's booking on rig-wb (--mine)", alices_on_b)
    on_b.wait_out("alice's booking on rig-wb (--bench)", alices_on_b)

    assert created(mine) == [alices_on_a, alices_on_b]
    assert bobs_on_a not in "".join(mine.out)
    assert [(e["type"], e["entity"]["id"]) for e in on_b.events()] == [
        ("reservation.created", bobs_on_b),
        ("reservation.created", alices_on_b),
    ]
    event = on_b.events()[-1]
    assert set(event) == {
        "position",
        "event_id",
        "type",
        "at",
        "actor",
        "entity",
        "bench_id",
        "user_id",
        "data",
    }
    assert (event["bench_id"], event["user_id"], event["actor"]) == ("rig-wb", "alice", "alice")
    assert event["data"]["reservation_id"] == alices_on_b
    assert mine.interrupt() == 0 and on_b.interrupt() == 0


def test_watch_after_a_position_the_log_does_not_keep_is_a_clear_error(
    benchctl: Benchctl,
) -> None:
    done = benchctl("watch", "--after", "999")
    assert done.returncode == 4, done.stderr
    assert "cannot resume after position 999" in done.stderr
    assert "Traceback" not in done.stderr


def test_watch_resumes_after_a_restart_without_missing_what_happened_meanwhile(
    tmp_path: Path, watch: Callable[..., Watch]
) -> None:
    api = start_api(tmp_path / "service", **FAST_EVENTS)
    try:
        benchctl = Benchctl(api, tmp_path / "user")
        register(api, "rig-restart")
        running = watch("--json", benchctl=benchctl)
        with benchctl.client("USER_TOKEN") as alice:
            before = book(alice, "rig-restart", 1)
        running.wait_out("the first booking", before)

        # Down: a booking through another server on the same data, while ours is away.
        api.stop()
        meanwhile = _book_elsewhere(api, "rig-restart", 2)
        api.restart()
        running.wait_out("the booking made while down", meanwhile, RESTART_DEADLINE_S)
        with benchctl.client("USER_TOKEN") as alice:
            after = book(alice, "rig-restart", 3)
        running.wait_out("a booking after the restart", after)

        assert created(running) == [before, meanwhile, after]  # each once, in order
        assert any("reconnecting in" in line for line in running.err), running.err
        resumed = [line for line in running.err if "watching events after position" in line]
        assert resumed, running.err
        assert running.interrupt() == 0
    finally:
        api.kill()


def _book_elsewhere(api: LiveApi, bench_id: str, days: int) -> str:
    port = free_port()
    while f":{port}" in api.url:
        port = free_port()
    env = api.env | {"ORCH_PORT": str(port)}
    other = LiveApi(
        f"http://127.0.0.1:{port}", api.workdir, api.tokens, env, _spawn(api.workdir, env)
    )
    try:
        _wait_ready(other)
        with Client(other.url, api.tokens["USER_TOKEN"]) as alice:
            return book(alice, bench_id, days)
    finally:
        other.stop()


# --------------------------------------------------------------------------- webhooks

RECEIVER = REPO / "examples" / "webhook_receiver.py"


def _receiver_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("webhook_receiver", RECEIVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _delivery(secret: str, message_id: str, timestamp: int) -> tuple[bytes, dict[str, str]]:
    """A body and headers exactly as the service's sender makes them."""
    from app.events.domain import EntityRef, new_event
    from app.webhooks import signing
    from app.webhooks.domain import WebhookFormat

    event = new_event(
        "reservation.created",
        at=datetime.now(UTC),
        actor="alice",
        entity=EntityRef("reservation", "r-42", 1),
        bench_id="rig-1",
        user_id="alice",
        data={"reservation_id": "r-42", "status": "confirmed"},
    )
    body = signing.body(event, WebhookFormat.STANDARD)
    return body, signing.headers(secret, message_id, timestamp, body)


def test_the_receiver_checks_signatures_as_the_service_makes_them() -> None:
    from app.webhooks.service import new_secret

    receiver = _receiver_module()
    secret = new_secret()
    key = receiver.decode_secret(secret)
    now = int(time.time())
    body, headers = _delivery(secret, "msg-1", now)
    assert receiver.verify(key, headers, body, now=now) == "msg-1"
    # Rotation: several signatures, one of them good.
    rotating = {**headers, "webhook-signature": "v1,AAAA " + headers["webhook-signature"]}
    assert receiver.verify(key, rotating, body, now=now) == "msg-1"
    refusals = [
        (body.replace(b"alice", b"mallory"), headers),  # a tampered body
        (body, {**headers, "webhook-id": "msg-2"}),  # the signature of another delivery
        (body, {**headers, "webhook-timestamp": str(now + 1)}),
        (body, {k: v for k, v in headers.items() if k != "webhook-signature"}),
    ]
    for tampered_body, tampered_headers in refusals:
        with pytest.raises(receiver.InvalidSignature):
            receiver.verify(key, tampered_headers, tampered_body, now=now)
    with pytest.raises(receiver.InvalidSignature, match="5 minutes"):
        receiver.verify(key, headers, body, now=now + 301)
    with pytest.raises(receiver.InvalidSignature):
        receiver.verify(receiver.decode_secret(new_secret()), headers, body, now=now)


def test_the_receiver_answers_204_once_per_delivery_and_401_to_a_forgery(
    tmp_path: Path,
) -> None:
    from app.webhooks.service import new_secret

    secret = new_secret()
    receiver = Watch(
        subprocess.Popen(
            [sys.executable, str(RECEIVER), "--port", "0"],
            env={"WEBHOOK_SECRET": secret, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    try:
        listening = receiver.wait_err("the receiver to listen", "listening on")
        match = re.search(r"http://[\d.]+:\d+/", listening)
        assert match, listening
        url = match.group(0)
        body, headers = _delivery(secret, "msg-1", int(time.time()))
        with httpx.Client(timeout=DEADLINE_S) as http:
            assert http.post(url, content=body, headers=headers).status_code == 204
            again = http.post(url, content=body, headers=headers)  # a redelivery
            assert again.status_code == 204
            forged = http.post(url, content=body.replace(b"r-42", b"r-43"), headers=headers)
            assert forged.status_code == 401
            stale_body, stale = _delivery(secret, "msg-2", int(time.time()) - 600)
            assert http.post(url, content=stale_body, headers=stale).status_code == 401
        assert receiver.interrupt() == 0
    finally:
        receiver.kill()
    # The redelivery is not handled twice; the refusals not at all.
    assert len(receiver.out) == 1, receiver.out
    line = receiver.out[0]
    assert "reservation.created" in line and "reservation r-42" in line
    assert "on rig-1" in line and "by alice" in line
    assert [line for line in receiver.err if line.startswith("refused")] == [
        "refused: no signature matches",
        "refused: webhook-timestamp is more than 5 minutes off",
    ]
