"""One client's session: its configuration resolved once, its headers, and each call from
request to typed result or error, retries included (both clients drive ``steps``)."""

from __future__ import annotations

import uuid
from collections.abc import Generator
from typing import Any, TypeVar

import httpx

from bench_client.__about__ import VERSION
from bench_client._calls import Call
from bench_client._core import Operations
from bench_client._retry import Outcome, RetryPolicy, Step, exchange
from bench_client.config import ClientConfig, resolve_config
from bench_client.errors import error_from_response

T = TypeVar("T")


class Session:
    """Configuration resolved once, headers, the request builder and the response check."""

    def __init__(
        self,
        url: str | None,
        token: str | None,
        *,
        profile: str | None,
        max_retries: int,
        page_size: int,
        backoff_base: float,
        backoff_max: float,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if not 1 <= page_size <= 500:
            raise ValueError("page_size must be within 1..500")
        self.config: ClientConfig = resolve_config(url, token, profile=profile)
        self.policy = RetryPolicy(max_retries, backoff_base, backoff_max)
        self.ops = Operations(page_size)
        self.headers = {
            "Accept": "application/json",
            "User-Agent": f"bench-orchestrator-client/{VERSION}",
        }
        if self.config.token:
            self.headers["Authorization"] = f"Bearer {self.config.token}"

    def build(
        self,
        http: httpx.Client | httpx.AsyncClient,
        call: Call[Any],
        *,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Request:
        """The request; ``timeout`` replaces the client's for this one (a stream waits
        longer for its next bytes than a call waits for its answer)."""
        headers = {"X-Request-ID": str(uuid.uuid4()), **call.headers}
        return http.build_request(
            call.method,
            call.path,
            params=tuple(call.params) or None,
            json=call.body,
            headers=headers,
            extensions=None if timeout is None else {"timeout": timeout.as_dict()},
        )

    def steps(
        self, http: httpx.Client | httpx.AsyncClient, call: Call[T]
    ) -> Generator[Step, Outcome, T]:
        """The whole of one call: the request, built once (so its Idempotency-Key and
        X-Request-ID stay the same across retries), the retries, then the typed error or
        the parsed result."""
        request = self.build(http, call)
        response = yield from exchange(request, retry_safe=call.retry_safe, policy=self.policy)
        if response.status_code >= 400:
            raise error_from_response(response)
        return call.parse(response)
