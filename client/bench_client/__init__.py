"""Python client of the Bench Orchestrator API (``Client``, ``AsyncClient``), with the
bench agent (``bench_client.agent``) and the ``benchctl`` CLI (``bench_client.cli``)."""

from __future__ import annotations

from bench_client.__about__ import VERSION
from bench_client._stream import StreamNotice, StreamOpened, StreamReconnecting
from bench_client.async_client import AsyncClient
from bench_client.client import Client
from bench_client.config import ClientConfig, ConfigError, resolve_config
from bench_client.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    InvalidTransition,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
    QuotaExceeded,
    RateLimited,
    TransportFailure,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)

__version__ = VERSION

__all__ = [
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "ClientConfig",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "Gone",
    "InvalidTransition",
    "NotFound",
    "PreconditionFailed",
    "PreconditionRequired",
    "QuotaExceeded",
    "RateLimited",
    "StreamNotice",
    "StreamOpened",
    "StreamReconnecting",
    "TransportFailure",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
    "__version__",
    "resolve_config",
]
