"""HTTP for executions (CI pipelines) and tasks (bench agents)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from app.benches.domain import BENCH_ID_PATTERN
from app.deps import ActorDep
from app.deps import ExecutionServiceDep as ServiceDep
from app.executions.auth import AgentWork, ExecutionReading, Launcher, Reporter
from app.executions.domain import ExecutionStatus, TaskSpec
from app.executions.schemas import (
    ExecutionCreate,
    ExecutionOut,
    ExecutionPatch,
    TaskComplete,
    TaskFail,
    TaskOut,
)
from app.executions.service import ExecutionService, NewExecution
from app.history.schemas import HistoryEntryOut, history_page
from app.http.etag import CONDITIONAL_GET, IfMatchDep, OptionalIfMatchDep, if_none_match
from app.http.idempotency import IdempotencyKeyDep
from app.http.pagination import PageOut, PagerDep, render_page
from app.http.query_params import KnownQueryRoute
from app.http.responses import conditional_get, created_response, resource_response

router = APIRouter(tags=["executions"], route_class=KnownQueryRoute)

IdPath = Annotated[str, Path(min_length=1, max_length=80)]
BenchIdPath = Annotated[str, Path(pattern=BENCH_ID_PATTERN)]

# Routes are matched in the order they are defined: the hottest ones come first.


@router.post(
    "/v1/benches/{bench_id}/tasks/claim",
    response_model=TaskOut,
    operation_id="claim_task",
    tags=["tasks"],
    responses={
        204: {"description": "Nothing to run now"},
        403: {"description": "Only the bench's own agent claims its tasks"},
        409: {"description": "The bench is retired or in maintenance"},
    },
)
async def claim_task(bench_id: BenchIdPath, call: AgentWork) -> Response:
    """The bench's agent leases the task it should run next; 204 when there is none now.

    A run's tasks go in order, each once every earlier one has succeeded; the runs of a
    reservation start in creation order; the bench runs at most its ``concurrency`` tasks
    at once."""
    task = await call.service.claim_next(bench_id, call.actor)
    if task is None:
        return Response(status_code=204)
    return resource_response(TaskOut.of(task), task.version)


@router.post(
    "/v1/tasks/{task_id}/heartbeat",
    response_model=TaskOut,
    operation_id="heartbeat_task",
    tags=["tasks"],
    responses={
        403: {"description": "Only the agent of the task's bench reports on it"},
        409: {"description": "The lease is not yours or has expired, or the task is finished"},
    },
)
async def heartbeat_task(task_id: IdPath, call: AgentWork) -> JSONResponse:
    """Extend the lease (lease holder only; 409 once it has expired)."""
    task = await call.service.heartbeat(task_id, call.actor)
    return resource_response(TaskOut.of(task), task.version)


@router.post(
    "/v1/tasks/{task_id}/complete",
    response_model=TaskOut,
    operation_id="complete_task",
    tags=["tasks"],
    responses={
        403: {"description": "Only the agent of the task's bench reports on it"},
        409: {"description": "The lease is not yours or has expired, or the task is finished"},
    },
)
async def complete_task(task_id: IdPath, body: TaskComplete, call: AgentWork) -> JSONResponse:
    """The lease holder reports success with its result; repeating it changes nothing."""
    task = await call.service.complete(task_id, body.result, call.actor)
    return resource_response(TaskOut.of(task), task.version)


@router.post(
    "/v1/tasks/{task_id}/fail",
    response_model=TaskOut,
    operation_id="fail_task",
    tags=["tasks"],
    responses={
        403: {"description": "Only the agent of the task's bench reports on it"},
        409: {"description": "The lease is not yours or has expired, or the task is finished"},
    },
)
async def fail_task(task_id: IdPath, body: TaskFail, call: AgentWork) -> JSONResponse:
    """The lease holder reports failure; retryable failures run again while attempts remain."""
    task = await call.service.fail(task_id, body.error, body.retryable, call.actor)
    return resource_response(TaskOut.of(task), task.version)


@router.get(
    "/v1/executions/{execution_id}",
    response_model=ExecutionOut,
    operation_id="get_execution",
    openapi_extra=CONDITIONAL_GET,
)
async def get_execution(execution_id: IdPath, call: ExecutionReading, request: Request) -> Response:
    """One run with its tasks, status and version (ETag)."""
    execution, tasks = await call.service.get(execution_id)
    return conditional_get(
        ExecutionOut.of(execution, tasks), execution.version, if_none_match(request)
    )


@router.get(
    "/v1/tasks/{task_id}",
    response_model=TaskOut,
    operation_id="get_task",
    tags=["tasks"],
    openapi_extra=CONDITIONAL_GET,
)
async def get_task(task_id: IdPath, call: ExecutionReading, request: Request) -> Response:
    """One task with its lease, attempts and version (ETag)."""
    task = await call.service.get_task(task_id)
    return conditional_get(TaskOut.of(task), task.version, if_none_match(request))


@router.post(
    "/v1/executions",
    status_code=201,
    response_model=ExecutionOut,
    operation_id="create_execution",
    responses={
        403: {"description": "Agents do not start runs; users only on their own reservations"},
        404: {"description": "The reservation does not exist"},
        409: {"description": "The reservation is not active, or the key is in flight"},
    },
)
async def create_execution(
    body: ExecutionCreate,
    service: ServiceDep,
    actor: ActorDep,
    principal: Launcher,
    idempotency: IdempotencyKeyDep,
) -> JSONResponse:
    """Queue a run of one commit on a reservation's bench. Retry-safe with Idempotency-Key."""
    execution, tasks, replayed = await service.create(
        NewExecution(
            reservation_id=body.reservation_id,
            commit_sha=body.commit_sha,
            pipeline_url=body.pipeline_url,
            metadata=body.metadata,
            tasks=[
                TaskSpec(
                    type=task.type,
                    params=task.params,
                    timeout_s=task.timeout_s,
                    max_attempts=task.max_attempts,
                )
                for task in body.tasks
            ],
        ),
        actor,
        idempotency.claim(principal, "create_execution", body),
    )
    return created_response(
        ExecutionOut.of(execution, tasks),
        execution.version,
        f"/v1/executions/{execution.execution_id}",
        replayed=replayed,
    )


@router.get("/v1/executions", response_model=PageOut[ExecutionOut], operation_id="list_executions")
async def list_executions(
    call: ExecutionReading,
    pager: PagerDep,
    reservation_id: Annotated[str | None, Query(max_length=64)] = None,
    bench_id: Annotated[str | None, Query(pattern=BENCH_ID_PATTERN)] = None,
    status: ExecutionStatus | None = None,
) -> Response:
    """Filter by reservation, bench or status (at least one; each is an index)."""
    return await _page(call.service, pager, reservation_id, bench_id, status)


@router.get(
    "/v1/reservations/{reservation_id}/executions",
    response_model=PageOut[ExecutionOut],
    operation_id="list_reservation_executions",
    tags=["reservations"],
)
async def list_reservation_executions(
    reservation_id: IdPath, call: ExecutionReading, pager: PagerDep
) -> Response:
    """The runs of one reservation, in creation order."""
    return await _page(call.service, pager, reservation_id, None, None)


async def _page(
    service: ExecutionService,
    pager: PagerDep,
    reservation_id: str | None,
    bench_id: str | None,
    status: ExecutionStatus | None,
) -> Response:
    filters = {"reservation_id": reservation_id, "bench_id": bench_id, "status": status}
    page = await service.find(
        reservation_id=reservation_id,
        bench_id=bench_id,
        status=status,
        limit=pager.limit,
        after=pager.start_after("executions", filters),
    )
    return render_page(
        page.items, ExecutionOut.of, pager.next_cursor("executions", filters, page.next_after)
    )


@router.patch(
    "/v1/executions/{execution_id}",
    response_model=ExecutionOut,
    operation_id="update_execution",
    responses={
        403: {
            "description": "Only CI, admins, the bench's agent or the run's creator report on it"
        },
        409: {"description": "The state machine does not allow this status (allowed_transitions)"},
    },
)
async def update_execution(
    execution_id: IdPath,
    body: ExecutionPatch,
    service: ServiceDep,
    actor: ActorDep,
    expectation: IfMatchDep,
    _: Reporter,
) -> JSONResponse:
    """Report status (along the state machine), artifacts and a summary."""
    execution, tasks = await service.update(
        execution_id,
        status=body.status,
        artifacts_uri=body.artifacts_uri,
        summary=body.summary,
        expectation=expectation,
        actor=actor,
    )
    return resource_response(ExecutionOut.of(execution, tasks), execution.version)


@router.post(
    "/v1/executions/{execution_id}/cancel",
    response_model=ExecutionOut,
    operation_id="cancel_execution",
    responses={
        403: {"description": "Only CI, admins, the bench's agent or the run's creator cancel it"},
        409: {"description": "The run has finished (see allowed_transitions)"},
    },
)
async def cancel_execution(
    execution_id: IdPath,
    service: ServiceDep,
    actor: ActorDep,
    expectation: OptionalIfMatchDep,
    _: Reporter,
) -> JSONResponse:
    """Cancel a run and its tasks that have not finished; repeating it changes nothing."""
    execution, tasks = await service.cancel(execution_id, expectation, actor)
    return resource_response(ExecutionOut.of(execution, tasks), execution.version)


@router.get(
    "/v1/executions/{execution_id}/history",
    response_model=PageOut[HistoryEntryOut],
    operation_id="list_execution_history",
)
async def list_execution_history(
    execution_id: IdPath, call: ExecutionReading, pager: PagerDep
) -> Response:
    """Every change of the run, oldest first, with who and when."""
    return await history_page(
        pager,
        f"execution-history:{execution_id}",
        lambda limit, after: call.service.history(execution_id, limit, after),
    )


@router.get(
    "/v1/tasks/{task_id}/history",
    response_model=PageOut[HistoryEntryOut],
    operation_id="list_task_history",
    tags=["tasks"],
)
async def list_task_history(task_id: IdPath, call: ExecutionReading, pager: PagerDep) -> Response:
    """Claims, lease extensions, completions, failures and expiries, with who and when."""
    return await history_page(
        pager,
        f"task-history:{task_id}",
        lambda limit, after: call.service.task_history(task_id, limit, after),
    )
