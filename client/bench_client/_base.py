"""What Client and AsyncClient share: the session (config, the one request core) and
its settings; each adds only its own I/O."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence

import httpx

from bench_client._session import Session
from bench_client._stream import StreamAnswer, StreamNotice, StreamStep, follow
from bench_client.config import ClientConfig


class _Base:
    def __init__(
        self,
        url: str | None,
        token: str | None,
        *,
        profile: str | None,
        timeout: float,
        max_retries: int,
        page_size: int,
        backoff_base: float,
        backoff_max: float,
    ) -> None:
        self._session = Session(
            url,
            token,
            profile=profile,
            max_retries=max_retries,
            page_size=page_size,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
        )
        self._ops = self._session.ops
        self._timeout = httpx.Timeout(timeout)

    @property
    def config(self) -> ClientConfig:
        """The URL, token and profile this client resolved (see bench_client.config)."""
        return self._session.config

    @property
    def url(self) -> str:
        return self._session.config.url

    def _event_steps(
        self,
        http: httpx.Client | httpx.AsyncClient,
        *,
        types: Sequence[str],
        bench_id: str | None,
        user_id: str | None,
        after: str | None,
        idle_timeout: float,
        max_reconnects: int | None,
        on_notice: Callable[[StreamNotice], None] | None,
    ) -> Generator[StreamStep, StreamAnswer, None]:
        """follow_events' steps (bench_client._stream): the connect, write and pool limits
        of a call, and ``idle_timeout`` as the longest wait for the stream's next bytes."""
        base = self._timeout
        timeout = httpx.Timeout(
            connect=base.connect, read=idle_timeout, write=base.write, pool=base.pool
        )
        call = self._ops.event_stream(types=types, bench_id=bench_id, user_id=user_id)
        return follow(
            self._session,
            http,
            call,
            after=after,
            timeout=timeout,
            max_reconnects=max_reconnects,
            notify=on_notice,
        )
