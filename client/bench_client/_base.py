"""What Client and AsyncClient share: the session (config, the one request core) and
its settings; each adds only its own I/O."""

from __future__ import annotations

import httpx

from bench_client._core import (
    Session,
)
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
