"""Following the live event stream (``GET /v1/events``, Server-Sent Events) for Client and
AsyncClient, the way ``_core`` does calls: the whole policy is a generator of steps, and
the two clients only carry them out (send, read the next chunk, read an error's body,
sleep, hand an event over), so they cannot disagree about when to reconnect.

A dropped connection, a body that ends, a 5xx or a 429 is followed by a new request
after the stream's reconnection time (its ``retry:``; until it says, 3 s, or the
client's ``backoff_max`` if that is less), doubled for each try that failed since the
stream was last open, capped at ``backoff_max`` (but never below the stream's own time,
nor below a Retry-After), with jitter. Each new request sends ``Last-Event-ID``: the
``id:`` of the last message seen (else the ``after`` asked for), so the service resumes
right after it and nothing is missed. A 410 (that position is older than the log keeps)
is raised as ``Gone``; any other error status as its typed error.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, replace

import httpx

from bench_client._core import Call, RetryPolicy, Sleep
from bench_client._session import Session
from bench_client.errors import ApiError, TransportFailure, error_from_response, parse_retry_after
from bench_client.models import EventOut
from bench_client.sse import SseParser

__all__ = [
    "DEFAULT_IDLE_TIMEOUT_S",
    "Drain",
    "Emit",
    "Open",
    "Read",
    "StreamAnswer",
    "StreamNotice",
    "StreamOpened",
    "StreamReconnecting",
    "StreamStep",
    "follow",
    "reconnect_delay",
]

DEFAULT_RETRY_S = 3.0
# No byte for this long (the service sends a comment every 15 s when idle): reconnect.
DEFAULT_IDLE_TIMEOUT_S = 60.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Open:
    """Send the request, streaming: answer with the response (status and headers read,
    the body not) or the httpx.TransportError."""

    request: httpx.Request


@dataclass(frozen=True)
class Read:
    """The body's next chunk: answer with its bytes, ``b""`` once the body has ended
    (httpx yields no empty chunk before that), or the httpx.TransportError."""


@dataclass(frozen=True)
class Drain:
    """Read the whole body (an error's): answer None or the httpx.TransportError."""


@dataclass(frozen=True)
class Emit:
    """Hand the event to the caller; answer None."""

    event: EventOut


StreamStep = Open | Read | Drain | Emit | Sleep
StreamAnswer = httpx.Response | bytes | httpx.TransportError | None


@dataclass(frozen=True)
class StreamOpened:
    """The stream is open, after ``last_event_id`` ("": from the newest event on)."""

    last_event_id: str


@dataclass(frozen=True)
class StreamReconnecting:
    """The stream dropped or did not open (``reason``); the next try, ``attempt`` since it
    was last open, is in ``delay`` seconds and resumes after ``last_event_id``."""

    reason: str
    delay: float
    attempt: int
    last_event_id: str


StreamNotice = StreamOpened | StreamReconnecting


def reconnect_delay(retry_s: float, failures: int, policy: RetryPolicy) -> float:
    """``retry_s`` doubled per failure, capped at ``policy.max_delay`` but never below
    ``retry_s``; a uniform random point of the upper half of that (at least ``retry_s``)."""
    ceiling = max(retry_s, min(policy.max_delay, retry_s * 2.0**failures))
    return policy.rng.uniform(max(retry_s, ceiling / 2), ceiling)


def _ignore(notice: StreamNotice) -> None:
    return None


def _transport_reason(error: httpx.TransportError) -> str:
    detail = str(error)
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def follow(
    session: Session,
    http: httpx.Client | httpx.AsyncClient,
    call: Call[None],
    *,
    after: str | None,
    timeout: httpx.Timeout,
    max_reconnects: int | None = None,
    notify: Callable[[StreamNotice], None] | None = None,
) -> Generator[StreamStep, StreamAnswer, None]:
    """The stream's events, as ``Emit`` steps, for ever: once ``max_reconnects``
    reconnects in a row have failed (None: no limit), the last failure is raised
    (TransportFailure, or the typed error of the status). ``notify`` hears when the stream
    opens and before each wait."""
    tell = notify or _ignore
    last_id = after or ""
    # Until the stream says (`retry:`): 3 s, or backoff_max if the client wants less.
    retry_s = min(DEFAULT_RETRY_S, session.policy.max_delay)
    failures = 0
    while True:
        headers = dict(call.headers)
        if last_id:
            headers["Last-Event-ID"] = last_id
        request = session.build(http, replace(call, headers=headers), timeout=timeout)
        outcome = yield Open(request)
        wait: float | None = None
        failure: Exception
        if isinstance(outcome, httpx.TransportError):
            reason = _transport_reason(outcome)
            failure = _unreachable(request, reason, outcome)
        elif not isinstance(outcome, httpx.Response):
            raise RuntimeError(f"Open was answered with {outcome!r}")
        elif outcome.status_code == 200 and _is_event_stream(outcome):
            failures = 0
            tell(StreamOpened(last_id))
            parser = SseParser(last_event_id=last_id)
            while True:
                chunk = yield Read()
                if isinstance(chunk, httpx.TransportError):
                    reason = _transport_reason(chunk)
                    cause: httpx.TransportError | None = chunk
                    break
                if not isinstance(chunk, bytes):
                    raise RuntimeError(f"Read was answered with {chunk!r}")
                if not chunk:
                    reason = "the service ended the stream"
                    cause = None
                    break
                for message in parser.feed(chunk):
                    last_id = message.last_event_id
                    answer = yield Emit(EventOut.model_validate_json(message.data))
                    assert answer is None
                last_id = parser.last_event_id  # an `id:` without data moves it too
                if parser.retry_ms is not None:
                    retry_s = parser.retry_ms / 1000.0
            failure = _unreachable(request, reason, cause)
        else:
            drained = yield Drain()
            if isinstance(drained, httpx.TransportError):
                reason = _transport_reason(drained)
                failure = _unreachable(request, reason, drained)
            elif outcome.status_code == 200:
                kind = outcome.headers.get("Content-Type", "no Content-Type")
                raise ApiError(200, "Not an event stream", f"the service answered {kind}")
            elif outcome.status_code in RETRY_STATUSES:
                failure = error_from_response(outcome)
                reason = str(failure)
                wait = parse_retry_after(outcome.headers.get("Retry-After"))
            else:
                raise error_from_response(outcome)  # 410 is Gone
        if max_reconnects is not None and failures >= max_reconnects:
            raise failure
        delay = reconnect_delay(retry_s, failures, session.policy)
        delay = max(delay, wait or 0.0)
        failures += 1
        tell(StreamReconnecting(reason, delay, failures, last_id))
        answer = yield Sleep(delay)
        assert answer is None


def _unreachable(
    request: httpx.Request, reason: str, cause: httpx.TransportError | None
) -> TransportFailure:
    failure = TransportFailure(f"GET {request.url}: {reason}")
    failure.__cause__ = cause
    return failure


def _is_event_stream(response: httpx.Response) -> bool:
    kind = str(response.headers.get("Content-Type", ""))
    return kind.split(";")[0].strip().lower() == "text/event-stream"
