"""The retry policy, as a generator both clients drive: it says when to send and how
long to wait, and the clients only carry the I/O out."""

from __future__ import annotations

import random
from collections.abc import Generator
from dataclasses import dataclass, field

import httpx

from bench_client.errors import TransportFailure, parse_retry_after

RETRY_STATUSES = frozenset({429, 503})
# Failures where the request cannot have reached the service: repeating it is always safe.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


# --------------------------------------------------------------------------- retry policy


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: before retry ``n`` (0-based) wait a uniform
    random time in ``[0, min(max_delay, base_delay * 2**n)]``, and never less than the
    response's Retry-After. A Retry-After longer than ``max_delay`` is not waited for: the
    error is raised at once with its ``retry_after``, for the caller to decide."""

    max_retries: int = 5
    base_delay: float = 0.25
    max_delay: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def backoff(self, retry: int) -> float:
        ceiling = min(self.max_delay, self.base_delay * (2.0**retry))
        return self.rng.uniform(0.0, ceiling)


@dataclass(frozen=True)
class Send:
    request: httpx.Request


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Send | Sleep
Outcome = httpx.Response | httpx.TransportError | None


def exchange(
    request: httpx.Request, *, retry_safe: bool, policy: RetryPolicy
) -> Generator[Step, Outcome, httpx.Response]:
    """Yields ``Send`` (answer with the response or the httpx.TransportError) and ``Sleep``
    (answer None); returns the final response, which may be an error status. Raises
    TransportFailure when the service stays unreachable, or when a request that is not
    safe to repeat may have reached it."""
    retry = 0
    while True:
        outcome = yield Send(request)
        if isinstance(outcome, httpx.TransportError):
            may_repeat = retry_safe or isinstance(outcome, _NOT_SENT)
            if not may_repeat or retry >= policy.max_retries:
                raise TransportFailure(
                    f"{request.method} {request.url}: {type(outcome).__name__}: {outcome}"
                    + (f" (after {retry} retries)" if retry else "")
                ) from outcome
            delay = policy.backoff(retry)
        elif outcome is None:
            raise RuntimeError("Send was answered with None")
        elif outcome.status_code in RETRY_STATUSES and retry < policy.max_retries:
            # 429 is refused before any work; 503 is the store being unavailable, where the
            # API's writes are conditional, so only a request safe to repeat is repeated.
            if outcome.status_code == 503 and not retry_safe:
                return outcome
            wait = parse_retry_after(outcome.headers.get("Retry-After"))
            if wait is not None and wait > policy.max_delay:
                return outcome
            delay = max(wait or 0.0, policy.backoff(retry))
        else:
            return outcome
        retry += 1
        answer = yield Sleep(delay)
        assert answer is None
