"""Liveness and readiness probes (no authentication: load balancers call them)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import ClockDep, StoreDep
from app.errors import Unavailable
from app.store.base import StoreUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", operation_id="readyz", responses={503: {"description": "store down"}})
async def readyz(store: StoreDep) -> dict[str, str]:
    try:
        await store.ping()
    except StoreUnavailable as error:
        raise Unavailable(f"the store is not reachable: {error}", retry_after_s=5) from error
    return {"status": "ready"}


@router.get("/metrics", operation_id="metrics", response_class=Response)
async def metrics(request: Request, store: StoreDep, clock: ClockDep) -> Response:
    """Prometheus text format: requests, latency, conflicts, store cost, liveness, queue."""
    registry = request.app.state.metrics
    await registry.refresh_gauges(store, clock)
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
