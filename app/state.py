"""The application's state: one typed object, built once per process in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from app.clock import Clock
from app.http.auth import TokenRegistry
from app.http.pagination import CursorCodec
from app.http.rate_limit import RateLimiter
from app.ops.metrics import Metrics
from app.settings import Settings
from app.store.base import Store


@dataclass(frozen=True, slots=True)
class AppState:
    """Everything long-lived a request may need; app/http sees it as ``HttpState``."""

    settings: Settings
    store: Store
    clock: Clock
    metrics: Metrics
    tokens: TokenRegistry
    rate_limiter: RateLimiter
    cursor_codec: CursorCodec
