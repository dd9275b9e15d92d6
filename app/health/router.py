"""HTTP for bench health: a bench's record, maintenance windows, and the alternatives
and swaps of bookings on an unfit bench."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from app.benches.auth import BenchAdmin
from app.benches.auth import Reader as BenchReader
from app.benches.domain import BENCH_ID_PATTERN
from app.deps import ActorDep, HealthServiceDep
from app.health.schemas import (
    AlternativeOut,
    AlternativesOut,
    BenchStatsOut,
    MaintenanceIn,
    MaintenanceOut,
    SwapIn,
)
from app.http.etag import OptionalIfMatchDep
from app.http.idempotency import IdempotencyKeyDep
from app.http.query_params import KnownQueryRoute
from app.http.responses import resource_response
from app.reservations.auth import Holder, Reader
from app.reservations.domain import Window
from app.reservations.schemas import ReservationOut

router = APIRouter(route_class=KnownQueryRoute)

BenchIdPath = Annotated[str, Path(pattern=BENCH_ID_PATTERN)]
ReservationIdPath = Annotated[str, Path(max_length=64)]


@router.get(
    "/v1/benches/{bench_id}/stats",
    response_model=BenchStatsOut,
    operation_id="get_bench_stats",
    tags=["benches"],
)
async def get_bench_stats(
    bench_id: BenchIdPath, health: HealthServiceDep, _: BenchReader
) -> BenchStatsOut:
    """The bench's record over 7 and 30 days beside its peers' (benches of its type):
    uptime (its share of time online), executions by verdict, and its infrastructure
    failure rate (runs ending `errored` or `timed_out`; `failed` is the test's verdict)."""
    return BenchStatsOut.model_validate(await health.stats(bench_id))


@router.post(
    "/v1/benches/{bench_id}/maintenance",
    response_model=MaintenanceOut,
    operation_id="schedule_bench_maintenance",
    tags=["benches"],
    responses={
        200: {"description": "A dry run: what the window would displace"},
        403: {"description": "Only admins schedule maintenance"},
        404: {"description": "The bench does not exist"},
        409: {"description": "The bench is retired, or a maintenance window overlaps"},
    },
    status_code=201,
)
async def schedule_bench_maintenance(
    bench_id: BenchIdPath,
    body: MaintenanceIn,
    health: HealthServiceDep,
    actor: ActorDep,
    principal: BenchAdmin,
    idempotency: IdempotencyKeyDep,
) -> JSONResponse:
    """Book the bench for maintenance (admins). The bookings in the way move to an
    equivalent bench when one is free (`reservation.swapped`), else are cancelled with
    reason `maintenance` (`reservation.displaced`); the bench reads `admin_state:
    maintenance` during the window. `dry_run: true` lists what it would do, and does
    nothing. Retry-safe with Idempotency-Key (the ETag and Location are the window's
    reservation's)."""
    window = Window(body.start.astimezone(UTC), body.end.astimezone(UTC))
    claim = None if body.dry_run else idempotency.claim(principal, "schedule_maintenance", body)
    plan = await health.maintenance(bench_id, window, body.reason, body.dry_run, actor, claim)
    out = MaintenanceOut.of(plan, body.dry_run, health.now())
    if body.dry_run or plan.reservation is None:
        return JSONResponse(out.model_dump(mode="json"))
    return resource_response(
        out,
        plan.reservation.version,
        status_code=201,
        location=f"/v1/reservations/{plan.window.reservation_id}",
    )


@router.get(
    "/v1/reservations/{reservation_id}/alternatives",
    response_model=AlternativesOut,
    operation_id="list_reservation_alternatives",
    tags=["reservations"],
    responses={404: {"description": "The reservation does not exist"}},
)
async def list_reservation_alternatives(
    reservation_id: ReservationIdPath, health: HealthServiceDep, _: Reader
) -> AlternativesOut:
    """Benches fit for this booking (active, online, healthy, with its capabilities, or
    all of its bench's) and free for its window; when none is, the nearest windows free
    on fit benches (`same_window: false`)."""
    found = await health.alternatives(reservation_id)
    return AlternativesOut(items=[AlternativeOut.of(item) for item in found])


@router.post(
    "/v1/reservations/{reservation_id}/swap",
    response_model=ReservationOut,
    operation_id="swap_reservation",
    tags=["reservations"],
    responses={
        403: {"description": "Only the owner or an admin swaps"},
        404: {"description": "The reservation or the bench does not exist"},
        409: {"description": "The bench is taken in that window, unfit, or lacks a capability"},
    },
)
async def swap_reservation(
    reservation_id: ReservationIdPath,
    body: SwapIn,
    health: HealthServiceDep,
    actor: ActorDep,
    expectation: OptionalIfMatchDep,
    _: Holder,
) -> JSONResponse:
    """Move the booking to another bench for the same window (what is left of it once
    under way), atomically: `reservation.swapped`, and history says from where to where."""
    reservation = await health.swap(reservation_id, body.bench_id, expectation, actor)
    out = ReservationOut.of(reservation, health.now())
    return resource_response(out, reservation.version)
