"""The application factory: one store client per process, built in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app import health
from app.benches import router as benches
from app.clock import Clock, SystemClock
from app.executions import router as executions
from app.housekeeping import Housekeeper, run_forever
from app.http.auth import TokenRegistry
from app.http.pagination import CursorCodec
from app.http.problems import PROBLEM_RESPONSES, Problem, install_problem_handlers
from app.http.rate_limit import RateLimiter
from app.http.request_context import RequestContextMiddleware
from app.logs import configure_logging
from app.metrics import Metrics
from app.reservations import router as reservations
from app.settings import Settings
from app.store.base import Store
from app.store.factory import open_store

logger = logging.getLogger("app")


def create_app(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """Build the API. Tests pass their own store (left open) and clock."""
    settings = settings or Settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.tokens = TokenRegistry.from_file(settings.tokens_file)
        app.state.rate_limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        if settings.cursor_secret is None:
            logger.warning("ORCH_CURSOR_SECRET is unset: cursors work in this process only")
        secret = settings.cursor_secret or secrets.token_hex(32)
        app.state.cursor_codec = CursorCodec(secret.encode())
        app.state.clock = clock or SystemClock()
        owned = store is None
        app.state.store = store or await open_store(settings)
        metrics.attach_store(app.state.store)
        logger.info("store ready", extra={"store": settings.store})
        chores = None
        if settings.housekeeping_interval_s > 0:
            housekeeper = Housekeeper(app.state.store, app.state.clock, settings)
            chores = asyncio.create_task(run_forever(housekeeper, settings.housekeeping_interval_s))
        try:
            yield
        finally:
            if chores is not None:
                chores.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await chores
            if owned:
                await app.state.store.close()

    app = FastAPI(
        title="Bench Orchestrator",
        version="0.1.0",
        summary="Book test benches, run CI executions on them, keep an audit trail.",
        lifespan=lifespan,
        responses=PROBLEM_RESPONSES,
    )
    _document_problems(app)
    metrics = Metrics()
    app.state.metrics = metrics
    install_problem_handlers(app)
    app.add_middleware(
        RequestContextMiddleware, max_body_bytes=settings.max_body_bytes, metrics=metrics
    )
    app.include_router(health.router)
    app.include_router(benches.router)
    app.include_router(reservations.router)
    app.include_router(executions.router)
    return app


def _document_problems(app: FastAPI) -> None:
    """Add the Problem schema to the OpenAPI components the error responses refer to."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
                Problem.model_json_schema()
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def __getattr__(name: str) -> FastAPI:
    # `uvicorn app.main:app` builds the app from the environment on first use, so that
    # importing this module (tests, the CLI) reads no settings.
    if name == "app":
        return create_app()
    raise AttributeError(name)
