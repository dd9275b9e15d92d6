"""Liveness and readiness probes (no authentication: load balancers call them)."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import StoreDep
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
