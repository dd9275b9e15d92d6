"""HTTP for reservations, bench calendars and availability search."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from app.benches.domain import BENCH_ID_PATTERN
from app.benches.schemas import Capability
from app.deps import ActorDep
from app.deps import ReservationServiceDep as ServiceDep
from app.history.schemas import HistoryEntryOut, history_page
from app.http.etag import CONDITIONAL_GET, IfMatchDep, OptionalIfMatchDep, if_none_match
from app.http.idempotency import IdempotencyKeyDep
from app.http.limits import QueryDuration, QueryInstant
from app.http.pagination import PageOut, PagerDep, render_page
from app.http.query_params import KnownQueryRoute
from app.http.responses import conditional_get, created_response, resource_response
from app.reservations.auth import Booking, Holder, Reader, ReservationReading
from app.reservations.domain import ReservationStatus, Window
from app.reservations.schemas import (
    AvailabilityOut,
    FreeWindowOut,
    ReservationCreate,
    ReservationExtend,
    ReservationOut,
    ReservationPatch,
)
from app.reservations.service import BookingRequest

router = APIRouter(tags=["reservations"], route_class=KnownQueryRoute)

ReservationIdPath = Annotated[str, Path(max_length=64)]
BenchIdPath = Annotated[str, Path(pattern=BENCH_ID_PATTERN)]
From = Annotated[QueryInstant | None, Query(alias="from")]
To = Annotated[QueryInstant | None, Query()]
# Without `from`/`to`, calendars and searches cover the next week.
DEFAULT_RANGE = timedelta(days=7)


def _render(reservation_out: ReservationOut) -> JSONResponse:
    return resource_response(reservation_out, reservation_out.version)


# Routes are matched in the order they are defined: the hottest ones come first.


@router.post(
    "/v1/reservations",
    status_code=201,
    response_model=ReservationOut,
    operation_id="create_reservation",
    responses={
        403: {"description": "Agents do not book"},
        404: {"description": "The bench does not exist"},
        409: {"description": "The window is taken, the bench is not bookable, or no bench is free"},
    },
)
async def create_reservation(
    body: ReservationCreate, call: Booking, idempotency: IdempotencyKeyDep
) -> JSONResponse:
    """Book a bench, or any bench with the capabilities, for a window.

    Retry-safe with Idempotency-Key."""
    start = None if body.start is None else body.start.astimezone(UTC)
    end = body.end.astimezone(UTC) if body.end is not None else None
    if end is None and start is not None and body.duration is not None:
        end = start + body.duration
    window = None if start is None or end is None else Window(start, end)
    request = BookingRequest(
        window=window,
        purpose=body.purpose,
        bench_id=body.bench_id,
        capabilities=frozenset(body.capabilities or ()),
        advance=body.advance,
        duration=body.duration or (None if window is None else window.duration),
        # With advance, a start given is where the search begins.
        not_before=body.not_before.astimezone(UTC)
        if body.not_before is not None
        else (start if body.advance else None),
        latest_start=None if body.latest_start is None else body.latest_start.astimezone(UTC),
        priority=body.priority,
        allow_swap=body.allow_swap,
    )
    reservation, replayed = await call.service.book(
        request, call.actor, idempotency.claim(call.principal, "create_reservation", body)
    )
    return created_response(
        ReservationOut.of(reservation, call.service.now()),
        reservation.version,
        f"/v1/reservations/{reservation.reservation_id}",
        replayed=replayed,
    )


@router.get(
    "/v1/reservations/{reservation_id}",
    response_model=ReservationOut,
    operation_id="get_reservation",
    openapi_extra=CONDITIONAL_GET,
)
async def get_reservation(
    reservation_id: ReservationIdPath, call: ReservationReading, request: Request
) -> Response:
    """One reservation with its state and version (ETag)."""
    reservation = await call.service.get(reservation_id)
    return conditional_get(
        ReservationOut.of(reservation, call.service.now()),
        reservation.version,
        if_none_match(request),
    )


@router.get(
    "/v1/benches/{bench_id}/reservations",
    response_model=PageOut[ReservationOut],
    operation_id="list_bench_calendar",
    tags=["benches"],
)
async def list_bench_calendar(
    bench_id: BenchIdPath,
    call: ReservationReading,
    pager: PagerDep,
    from_: From = None,
    to: To = None,
) -> Response:
    """The bench's calendar: reservations holding it in [from, to), ordered by start."""
    start = from_ or call.service.now()
    end = to or start + DEFAULT_RANGE
    # The cursor is bound to what the caller asked: without `from`, "now" moves between
    # pages, and the next page carries on after the last item all the same.
    filters = {"from": from_, "to": to}
    scope = f"calendar:{bench_id}"
    page = await call.service.calendar(
        bench_id, Window(start, end), pager.limit, pager.start_after(scope, filters)
    )
    now = call.service.now()
    return render_page(
        page.items,
        lambda reservation: ReservationOut.of(reservation, now),
        pager.next_cursor(scope, filters, page.next_after),
    )


@router.get(
    "/v1/reservations", response_model=PageOut[ReservationOut], operation_id="list_reservations"
)
async def list_reservations(
    service: ServiceDep,
    pager: PagerDep,
    principal: Reader,
    user_id: Annotated[
        str | None, Query(max_length=200, description="`me` means the caller")
    ] = None,
    bench_id: Annotated[str | None, Query(pattern=BENCH_ID_PATTERN)] = None,
    status: ReservationStatus | None = None,
    from_: From = None,
    to: To = None,
) -> Response:
    """Reservations of a user or a bench; with neither, the caller's own."""
    if user_id == "me" or (user_id is None and bench_id is None):
        user_id = principal.subject
    start, end = from_, to
    filters = {
        "user_id": user_id,
        "bench_id": bench_id,
        "status": status,
        "from": start,
        "to": end,
    }
    page = await service.find(
        user_id=user_id,
        bench_id=bench_id,
        status=status,
        ends_after=start,
        starts_before=end,
        limit=pager.limit,
        after=pager.start_after("reservations", filters),
    )
    now = service.now()
    return render_page(
        page.items,
        lambda reservation: ReservationOut.of(reservation, now),
        pager.next_cursor("reservations", filters, page.next_after),
    )


@router.patch(
    "/v1/reservations/{reservation_id}",
    response_model=ReservationOut,
    operation_id="update_reservation",
    responses={
        403: {"description": "Only the owner or an admin changes a reservation"},
        409: {"description": "The new window is taken, or the reservation has ended"},
    },
)
async def update_reservation(
    reservation_id: ReservationIdPath,
    body: ReservationPatch,
    service: ServiceDep,
    actor: ActorDep,
    expectation: IfMatchDep,
    _: Holder,
) -> JSONResponse:
    """Move or resize the window, or change the purpose; conflict-checked like a booking."""
    reservation = await service.move(
        reservation_id,
        start=None if body.start is None else body.start.astimezone(UTC),
        end=None if body.end is None else body.end.astimezone(UTC),
        purpose=body.purpose,
        expectation=expectation,
        actor=actor,
    )
    return _render(ReservationOut.of(reservation, service.now()))


@router.post(
    "/v1/reservations/{reservation_id}/cancel",
    response_model=ReservationOut,
    operation_id="cancel_reservation",
    responses={
        403: {"description": "Only the owner or an admin cancels a reservation"},
        409: {"description": "The reservation has started or ended (see allowed_transitions)"},
    },
)
async def cancel_reservation(
    reservation_id: ReservationIdPath,
    service: ServiceDep,
    actor: ActorDep,
    expectation: OptionalIfMatchDep,
    _: Holder,
) -> JSONResponse:
    """Cancel a reservation that has not started; repeating it changes nothing."""
    reservation = await service.cancel(reservation_id, expectation, actor)
    return _render(ReservationOut.of(reservation, service.now()))


@router.post(
    "/v1/reservations/{reservation_id}/release",
    response_model=ReservationOut,
    operation_id="release_reservation",
    responses={
        403: {"description": "Only the owner or an admin releases a reservation"},
        409: {"description": "The reservation is not active (see allowed_transitions)"},
    },
)
async def release_reservation(
    reservation_id: ReservationIdPath,
    service: ServiceDep,
    actor: ActorDep,
    expectation: OptionalIfMatchDep,
    _: Holder,
) -> JSONResponse:
    """End an active reservation now; the rest of its window is free at once."""
    reservation = await service.release(reservation_id, expectation, actor)
    return _render(ReservationOut.of(reservation, service.now()))


@router.post(
    "/v1/reservations/{reservation_id}/checkin",
    response_model=ReservationOut,
    operation_id="checkin_reservation",
    responses={
        403: {"description": "Only the owner or an admin checks in"},
        409: {"description": "The reservation is not active (see allowed_transitions)"},
    },
)
async def checkin_reservation(
    reservation_id: ReservationIdPath,
    service: ServiceDep,
    actor: ActorDep,
    expectation: OptionalIfMatchDep,
    _: Holder,
) -> JSONResponse:
    """Say you are at the bench (hands-on work): a started reservation nobody checked in
    to is released as a no-show after its grace, and one without activity as idle. A run
    on the reservation counts as checking in."""
    reservation = await service.check_in(reservation_id, expectation, actor)
    return _render(ReservationOut.of(reservation, service.now()))


@router.post(
    "/v1/reservations/{reservation_id}/extend",
    response_model=ReservationOut,
    operation_id="extend_reservation",
    responses={
        403: {"description": "Only the owner or an admin extends; or over quota"},
        409: {"description": "The time after is held (the answer says by whom)"},
    },
)
async def extend_reservation(
    reservation_id: ReservationIdPath,
    body: ReservationExtend,
    service: ServiceDep,
    actor: ActorDep,
    expectation: OptionalIfMatchDep,
    _: Holder,
) -> JSONResponse:
    """End later by `by`, atomically, or 409 naming who holds the time after. Quotas
    apply."""
    reservation = await service.extend(reservation_id, body.by, expectation, actor)
    return _render(ReservationOut.of(reservation, service.now()))


@router.get(
    "/v1/reservations/{reservation_id}/history",
    response_model=PageOut[HistoryEntryOut],
    operation_id="list_reservation_history",
)
async def list_reservation_history(
    reservation_id: ReservationIdPath, call: ReservationReading, pager: PagerDep
) -> Response:
    """Every change of the reservation, oldest first, with who and when."""
    return await history_page(
        pager,
        f"reservation-history:{reservation_id}",
        lambda limit, after: call.service.history(reservation_id, limit, after),
    )


@router.get(
    "/v1/availability",
    response_model=AvailabilityOut,
    operation_id="find_availability",
    responses={404: {"description": "The bench named by bench_id does not exist"}},
)
async def find_availability(
    call: ReservationReading,
    duration: Annotated[QueryDuration, Query()],
    capability: Annotated[list[Capability], Query(max_length=32)] = [],  # noqa: B006
    bench_id: Annotated[str | None, Query(pattern=BENCH_ID_PATTERN)] = None,
    from_: From = None,
    to: To = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> AvailabilityOut:
    """The earliest free windows of at least ``duration`` on matching active benches."""
    start = from_ or call.service.now()
    end = to or start + DEFAULT_RANGE
    found = await call.service.availability(
        bench_id=bench_id,
        capabilities=frozenset(capability),
        duration=duration,
        search=Window(start, end),
        limit=limit,
    )
    return AvailabilityOut(items=[FreeWindowOut.of(free) for free in found])
