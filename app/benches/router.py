"""HTTP for benches: parse, authorise, call the service, render. No rules live here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from app.benches.auth import BenchAdmin, BenchReading, HeartbeatSending
from app.benches.domain import BENCH_ID_PATTERN, AdminState, BenchChanges, Liveness
from app.benches.schemas import (
    BenchCreate,
    BenchOut,
    BenchPatch,
    Capability,
    HeartbeatIn,
    HeartbeatOut,
)
from app.benches.service import NewBench
from app.deps import ActorDep
from app.deps import BenchServiceDep as ServiceDep
from app.history.schemas import HistoryEntryOut, history_page
from app.http.etag import CONDITIONAL_GET, IfMatchDep, if_none_match
from app.http.idempotency import IdempotencyKeyDep
from app.http.pagination import PageOut, PagerDep, render_page
from app.http.query_params import KnownQueryRoute
from app.http.responses import (
    conditional_get,
    created_response,
    json_bytes_response,
    resource_response,
)

router = APIRouter(prefix="/v1/benches", tags=["benches"], route_class=KnownQueryRoute)

BenchIdPath = Annotated[str, Path(pattern=BENCH_ID_PATTERN)]

# Routes are matched in the order they are defined: the hottest ones come first.


@router.post(
    "/{bench_id}/heartbeats",
    response_model=HeartbeatOut,
    operation_id="post_heartbeat",
    responses={
        403: {"description": "Only the bench's own agent sends its heartbeats"},
        409: {"description": "The bench is retired"},
    },
)
async def post_heartbeat(
    bench_id: BenchIdPath, body: HeartbeatIn, call: HeartbeatSending
) -> Response:
    """The bench's agent says it is alive; the answer says when the next heartbeat is due.

    `details.health` (`ok` or `failing`, with `details.health_message`) is the agent's
    health report: kept on the bench, counted towards quarantine
    (`ORCH_QUARANTINE_AFTER_HEALTH_FAILURES`), and `details.quarantine: true` with a
    failing report quarantines the bench at once. `run_health_check: true` in the answer
    asks the agent to run its health command now (a window starts soon)."""
    bench, check = await call.service.record_heartbeat(
        bench_id, call.principal, body.agent_version, body.details
    )
    # Encoded here, once: the hottest path need not be validated again as its response model.
    answer = HeartbeatOut.of(bench, call.service.now(), run_health_check=check)
    return json_bytes_response(answer.model_dump_json().encode())


@router.get(
    "/{bench_id}", response_model=BenchOut, operation_id="get_bench", openapi_extra=CONDITIONAL_GET
)
async def get_bench(bench_id: BenchIdPath, call: BenchReading, request: Request) -> Response:
    """One bench with its liveness, configuration and version (ETag)."""
    bench = await call.service.get(bench_id)
    return conditional_get(
        BenchOut.of(bench, call.service.now()), bench.version, if_none_match(request)
    )


@router.post(
    "",
    status_code=201,
    response_model=BenchOut,
    operation_id="create_bench",
    responses={
        403: {"description": "Only admins register benches"},
        409: {"description": "A bench with this id exists"},
    },
)
async def create_bench(
    body: BenchCreate,
    service: ServiceDep,
    actor: ActorDep,
    admin: BenchAdmin,
    idempotency: IdempotencyKeyDep,
) -> JSONResponse:
    """Register a bench (admins). Retry-safe with Idempotency-Key."""
    bench, replayed = await service.create(
        NewBench(
            bench_id=body.bench_id,
            name=body.name,
            type=body.type,
            capabilities=frozenset(body.capabilities),
            labels=body.labels,
            heartbeat_interval_s=body.heartbeat_interval_s,
            concurrency=body.concurrency,
        ),
        actor,
        idempotency.claim(admin, "create_bench", body),
    )
    return created_response(
        BenchOut.of(bench, service.now()),
        bench.version,
        f"/v1/benches/{bench.bench_id}",
        replayed=replayed,
    )


@router.get("", response_model=PageOut[BenchOut], operation_id="list_benches")
async def list_benches(
    call: BenchReading,
    pager: PagerDep,
    capability: Annotated[list[Capability], Query(max_length=32)] = [],  # noqa: B006
    type: Annotated[str | None, Query(max_length=64)] = None,
    admin_state: AdminState | None = None,
    status: Liveness | None = None,
) -> Response:
    """Benches, filtered by capability (all of them), type, admin state or liveness."""
    filters = {
        "capability": sorted(set(capability)),
        "type": type,
        "admin_state": admin_state,
        "status": status,
    }
    page = await call.service.find(
        capabilities=frozenset(capability),
        type=type,
        admin_state=admin_state,
        status=status,
        limit=pager.limit,
        after=pager.start_after("benches", filters),
    )
    now = call.service.now()
    return render_page(
        page.items,
        lambda bench: BenchOut.of(bench, now),
        pager.next_cursor("benches", filters, page.next_after),
    )


@router.patch(
    "/{bench_id}",
    response_model=BenchOut,
    operation_id="update_bench",
    responses={
        403: {"description": "Only admins change benches"},
        409: {"description": "The bench is retired"},
    },
)
async def update_bench(
    bench_id: BenchIdPath,
    body: BenchPatch,
    service: ServiceDep,
    actor: ActorDep,
    expectation: IfMatchDep,
    _: BenchAdmin,
) -> JSONResponse:
    """Change a bench's configuration (admins); needs If-Match.

    Liveness (heartbeats, going offline) never changes the version."""
    changes = BenchChanges(
        name=body.name,
        capabilities=None if body.capabilities is None else frozenset(body.capabilities),
        labels=body.labels,
        heartbeat_interval_s=body.heartbeat_interval_s,
        admin_state=body.admin_state,
        concurrency=body.concurrency,
    )
    bench = await service.update(bench_id, changes, expectation, actor)
    return resource_response(BenchOut.of(bench, service.now()), bench.version)


@router.delete(
    "/{bench_id}",
    response_model=BenchOut,
    operation_id="retire_bench",
    responses={403: {"description": "Only admins retire benches"}},
)
async def retire_bench(
    bench_id: BenchIdPath,
    service: ServiceDep,
    actor: ActorDep,
    expectation: IfMatchDep,
    _: BenchAdmin,
) -> JSONResponse:
    """Retires the bench: it stays readable with its history, and can no longer change."""
    bench = await service.retire(bench_id, expectation, actor)
    return resource_response(BenchOut.of(bench, service.now()), bench.version)


@router.get(
    "/{bench_id}/history",
    response_model=PageOut[HistoryEntryOut],
    operation_id="list_bench_history",
)
async def list_bench_history(
    bench_id: BenchIdPath, call: BenchReading, pager: PagerDep
) -> Response:
    """Every configuration change of the bench, oldest first, with who and when."""
    return await history_page(
        pager,
        f"bench-history:{bench_id}",
        lambda limit, after: call.service.history(bench_id, limit, after),
    )


@router.get(
    "/{bench_id}/liveness",
    response_model=PageOut[HistoryEntryOut],
    operation_id="list_bench_liveness",
)
async def list_bench_liveness(
    bench_id: BenchIdPath, call: BenchReading, pager: PagerDep
) -> Response:
    """Every time the bench came online or went offline, oldest first, as housekeeping
    noticed it. Each entry's `version` is its place in this log (1, 2, ...), not a version
    of the bench: liveness is not configuration, so it never moves the bench's ETag."""
    return await history_page(
        pager,
        f"bench-liveness:{bench_id}",
        lambda limit, after: call.service.liveness_log(bench_id, limit, after),
    )
