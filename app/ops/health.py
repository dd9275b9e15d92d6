"""Liveness and readiness probes and the metrics endpoint (no authentication: load
balancers and Prometheus call them)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import StateDep
from app.http.query_params import KnownQueryRoute

router = APIRouter(tags=["health"], route_class=KnownQueryRoute)


@router.get("/healthz", operation_id="healthz")
async def healthz() -> dict[str, str]:
    """The process is up (no store call): for liveness probes."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    operation_id="readyz",
    responses={503: {"description": "The store does not answer; see Retry-After"}},
)
async def readyz(state: StateDep) -> dict[str, str]:
    """The store answers: for readiness probes and load balancers."""
    # A store that does not answer is a 503 like on any other route (main.py).
    await state.store.ping()
    return {"status": "ready"}


@router.get("/metrics", operation_id="metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Prometheus text format: requests, latency, conflicts, store cost, liveness, queue."""
    await state.metrics.refresh_gauges(state.store, state.clock)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
