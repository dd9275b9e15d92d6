"""The application factory: one store client per process, built in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from app.benches import router as benches
from app.clock import Clock, SystemClock
from app.deps import Services
from app.errors import Unavailable
from app.events import router as events
from app.executions import router as executions
from app.health import router as bench_health
from app.http import console
from app.http.auth import TokenRegistry
from app.http.openapi import install_openapi
from app.http.pagination import CursorCodec
from app.http.problems import app_error_response, install_problem_handlers
from app.http.rate_limit import RateLimiter
from app.http.request_context import RequestContextMiddleware, RequestObserver
from app.http.state import STATE_ATTRIBUTE
from app.http.token_file import reload_on_sighup
from app.logs import configure_logging
from app.ops import health, lifecycle
from app.ops.housekeeping import Housekeeper, run_forever
from app.ops.metrics import Metrics
from app.quotas import router as quotas
from app.reservations import router as reservations
from app.settings import Settings
from app.state import AppState
from app.store.base import Store, StoreUnavailable
from app.store.factory import open_store
from app.ui import router as dashboard
from app.webhooks import router as webhooks
from app.webhooks.relay import Relay
from app.webhooks.relay import run_forever as deliver_webhooks
from app.webhooks.sender import Sender, http_client
from app.webhooks.targets import allowed_networks

logger = logging.getLogger("app")

API_DESCRIPTION = """\
Book hardware test benches for time windows, run CI executions on them, and read the
audit trail of every change.

Every `/v1` call needs `Authorization: Bearer <token>` (use **Authorize**). Errors are
RFC 9457 Problem Details. Changes take `If-Match` with the ETag you read; creates take an
`Idempotency-Key`, so a retry never makes two."""


def create_app(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """Build the API. Tests pass their own store (left open) and clock."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)
    started: list[AppState] = []  # the state of the running lifespan, for the middleware

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        secret = settings.cursor_secret or settings.stored_cursor_secret()
        if secret is None:
            logger.warning(
                "ORCH_CURSOR_SECRET is unset and %s holds no key: cursors work in this "
                "process only",
                settings.cursor_secret_file,
            )
            secret = secrets.token_hex(32)
        owned = store is None
        the_clock = clock or SystemClock()
        tokens = await TokenRegistry.open(
            settings.tokens_file, settings.jwt_issuers, tick=lambda: the_clock.now().timestamp()
        )
        state = AppState(
            settings=settings,
            store=store or await open_store(settings),
            clock=the_clock,
            metrics=Metrics(),
            tokens=tokens,
            rate_limiter=RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst),
            cursor_codec=CursorCodec(secret.encode()),
        )
        state.metrics.attach_store(state.store)
        setattr(app.state, STATE_ATTRIBUTE, state)
        setattr(app.state, Services.ATTRIBUTE, Services(state.store, state.clock, settings))
        started.append(state)
        logger.info("store ready", extra={"store": settings.store})
        stop_reloading_tokens = reload_on_sighup(tokens.reload)
        stop_noting_signals = lifecycle.note_stop_signals()
        loops: list[asyncio.Task[None]] = []
        if settings.housekeeping_interval_s > 0:
            housekeeper = Housekeeper(state.store, state.clock, settings, state.metrics)
            loops.append(
                asyncio.create_task(run_forever(housekeeper, settings.housekeeping_interval_s))
            )
        webhook_http = None
        if settings.webhook_delivery:
            webhook_http = http_client(settings.webhook_timeout_s)
            loops.append(
                asyncio.create_task(
                    deliver_webhooks(
                        Relay(state.store, state.clock),
                        Sender(
                            state.store,
                            state.clock,
                            allowed_networks(settings.webhook_allow_networks),
                            webhook_http,
                            settings.webhook_timeout_s,
                        ),
                        settings.event_poll_ms / 1000,
                        lifecycle.stopping.is_set,
                    )
                )
            )
        try:
            yield
        finally:
            for loop in loops:
                loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop
            if webhook_http is not None:
                await webhook_http.aclose()
            started.remove(state)
            stop_noting_signals()
            stop_reloading_tokens()
            await tokens.aclose()
            if owned:
                await state.store.close()

    def observer() -> RequestObserver | None:
        return started[-1].metrics if started else None

    # FastAPIOffline: the API console's assets come from an installed package, not a CDN,
    # so /docs and /redoc work in an air-gapped lab.
    app = FastAPIOffline(
        redoc_url=None,  # console.install_redoc: the same assets, without ReDoc's CDN badge
        static_url=console.ASSETS,
        title="Bench Orchestrator",
        version="0.1.0",
        summary="Book test benches, run CI executions on them, keep an audit trail.",
        lifespan=lifespan,
        # /v1/benches/ is not /v1/benches: a 404 Problem, not a bodyless redirect.
        redirect_slashes=False,
    )
    install_openapi(app, description=API_DESCRIPTION)
    console.install_redoc(app)
    console_routes = list(app.router.routes)  # the spec, /docs, /redoc and their assets
    install_problem_handlers(app)
    _translate_store_errors(app)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        observer=observer,
        form_paths=dashboard.FORM_PATHS,
    )
    # A request is matched against the routes in the order they are included, at some
    # thirty Python calls per route passed over: the agents' loop (heartbeats, claims,
    # task reports) comes first, the probes and the dashboard last.
    app.include_router(benches.router)
    app.include_router(executions.router)
    app.include_router(reservations.router)
    app.include_router(bench_health.router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    app.include_router(quotas.router)
    app.include_router(health.router)
    app.include_router(dashboard.router)
    app.mount("/ui/static", dashboard.static, name="ui-static")
    # A request tries the routes in order: the API's first, the console's pages (asked
    # for by people, now and then) after them, so no heartbeat is matched against them.
    app.router.routes[:] = [
        *(route for route in app.router.routes if route not in console_routes),
        *console_routes,
    ]
    return app


def _translate_store_errors(app: FastAPI) -> None:
    """The one place a store outage becomes the API's 503: every route, /readyz included,
    answers it alike, and the store's own error text stays in the log."""

    async def on_store_unavailable(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("store unavailable: %s", exc)
        return app_error_response(request, Unavailable("the store is unavailable; retry later"))

    app.add_exception_handler(StoreUnavailable, on_store_unavailable)


def __getattr__(name: str) -> FastAPI:
    # `uvicorn app.main:app` builds the app from the environment on first use, so that
    # importing this module (tests, the CLI) reads no settings.
    if name == "app":
        return create_app()
    raise AttributeError(name)
