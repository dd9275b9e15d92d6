"""The lab dashboard at /ui: pages rendered by the service, forms that change things, and
the live event stream the pages follow.

Pages call the services the API routers call, as the session's caller; the forms that
change something carry the session's CSRF token and go through the API's own role
dependencies (``Booker``, ``Holder``, ``BenchAdmin``) and the services' ownership rules,
so a refusal reads as the API's Problem ``detail``. Scripts (``fetch()`` with ``Accept:
application/json``) get the API's Problem Details; a plain form gets a page. No route is
in the OpenAPI document (``include_in_schema=False``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Annotated, Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from app.benches.auth import BenchAdmin
from app.benches.domain import BENCH_ID_PATTERN, AdminState, Bench, BenchChanges
from app.deps import (
    ActorDep,
    BenchServiceDep,
    EventServiceDep,
    ExecutionServiceDep,
    HealthServiceDep,
    QuotaServiceDep,
    ReservationServiceDep,
)
from app.errors import AppError, Conflict, InvalidInput, Unavailable
from app.events.sse import event_filter, event_stream
from app.executions.domain import ExecutionStatus
from app.health.service import Alternative, HealthService, MaintenancePlan
from app.http.auth import PrincipalDep, authenticate_request, current_principal
from app.http.exceptions import ProblemException
from app.http.problems import app_error_response, problem_response
from app.identity import Principal, Role
from app.reservations.auth import Booker, Holder
from app.reservations.domain import Reservation, ReservationKind, ReservationStatus, Window
from app.reservations.schemas import ReservationOut
from app.reservations.service import BookingRequest
from app.store.base import StoreUnavailable
from app.ui import views
from app.ui.auth import (
    FormDep,
    SessionDep,
    SignInRequired,
    app_state,
    read_form,
    sessions,
    signed_in,
)
from app.ui.session import SESSION_COOKIE, SIGN_IN_COOKIE, Session
from app.ui.templating import STATIC, page_text, render, zone_of
from app.versioning import VersionExpectation

PREFIX = "/ui"
# The dashboard's forms post as HTML forms do (the request middleware lets them through).
FORM_PATHS = f"{PREFIX}/"
BOOKERS = frozenset({Role.ADMIN, Role.USER, Role.CI})
# The overview's 24 h figures (a read per reservation of the last day), and benches'
# records (HealthService.stats: the bench's and its peers' logs and runs), kept a little.
_STATS_ATTRIBUTE = "orchestrator_ui_stats"
_RECORDS_ATTRIBUTE = "orchestrator_ui_records"


def is_script(request: Request) -> bool:
    """A fetch() of the dashboard's script, or an EventSource: answered in JSON."""
    accept = request.headers.get("accept", "")
    return (
        "application/json" in accept
        or "text/event-stream" in accept
        or request.headers.get("x-requested-with") == "fetch"
    )


def _error_status_and_detail(error: Exception) -> tuple[int, str]:
    if isinstance(error, AppError | ProblemException):
        return error.status, error.detail
    if isinstance(error, RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', ()))}: {item.get('msg', '')}"
            for item in error.errors()
        )
        return 422, f"the request does not match: {problems}"
    return 503, "the store is unavailable; retry later"


class UiRoute(APIRoute):
    """A dashboard route: no session is a 303 to the sign-in form (a 401 for scripts);
    an error is a page saying the Problem's detail (the Problem itself for scripts)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired as missing:
                if is_script(request):
                    return problem_response(
                        request, 401, missing.reason or "sign in again at /ui/sign-in"
                    )
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(
                    f"{PREFIX}/sign-in?{urlencode({'next': target})}", status_code=303
                )
            except (AppError, ProblemException, RequestValidationError, StoreUnavailable) as error:
                if is_script(request):
                    if isinstance(error, StoreUnavailable):
                        return app_error_response(request, _unavailable())
                    raise
                status, detail = _error_status_and_detail(error)
                return await error_page(request, status, detail)

        return handle


def _unavailable() -> AppError:
    return Unavailable("the store is unavailable; retry later")


async def error_page(request: Request, status: int, detail: str) -> Response:
    try:
        principal: Principal | None = await current_principal(request)
    except ProblemException:  # not signed in: the page is shown without the caller
        principal = None
    return render(
        request,
        "error.html",
        {
            "title": f"{status}",
            "status": status,
            "detail": detail,
            "principal": principal,
            "csrf": _csrf_of(request),
            "page": "error",
            "live": [],
        },
        status_code=status,
    )


def _csrf_of(request: Request) -> str:
    session = sessions(request).read(request.cookies.get(SESSION_COOKIE))
    return "" if session is None else sessions(request).csrf_token(session)


public = APIRouter(prefix=PREFIX, route_class=UiRoute, include_in_schema=False)
pages = APIRouter(
    prefix=PREFIX,
    route_class=UiRoute,
    include_in_schema=False,
    dependencies=[Depends(signed_in)],
)
static = StaticFiles(directory=STATIC)


def _context(
    request: Request, session: Session, principal: Principal, **more: Any
) -> dict[str, Any]:
    return {
        "principal": principal,
        "csrf": sessions(request).csrf_token(session),
        "can_book": principal.role in BOOKERS,
        "now": app_state(request).clock.now(),
        **more,
    }


def _may_change(principal: Principal, reservation: Reservation) -> bool:
    return principal.role is Role.ADMIN or (
        principal.role in BOOKERS and principal.subject == reservation.user_id
    )


def _actions(principal: Principal, reservation: Reservation, now: datetime) -> list[str]:
    """What the caller may do with the reservation now (the service decides again)."""
    if not _may_change(principal, reservation):
        return []
    status = reservation.status(now)
    if reservation.kind is ReservationKind.MAINTENANCE:
        # Nobody checks in to a maintenance window; cancelling it frees the bench.
        return (
            ["cancel"] if status in (ReservationStatus.CONFIRMED, ReservationStatus.ACTIVE) else []
        )
    if status is ReservationStatus.CONFIRMED:
        return ["cancel"]
    if status is ReservationStatus.ACTIVE:
        return ["checkin", "extend", "release", "cancel"]
    return []


def _safe_next(target: str | None) -> str:
    """Only a dashboard path: never another site (an open redirect)."""
    if (
        not target
        or not target.startswith(PREFIX)
        or target.startswith("//")
        or "\\" in target
        or target.startswith(f"{PREFIX}/sign-")
    ):
        return PREFIX
    return target


# --- signing in and out ----------------------------------------------------------------


def _sign_in_page(
    request: Request, next_: str, error: str | None = None, status: int = 200
) -> Response:
    cookie, form_value = sessions(request).sign_in_nonce()
    response = render(
        request,
        "sign_in.html",
        {
            "title": "Sign in",
            "next": _safe_next(next_),
            "error": error,
            "signin_csrf": form_value,
            "signed_out": request.query_params.get("signed_out") == "1",
            "principal": None,
            "page": "sign-in",
            "live": [],
        },
        status_code=status,
    )
    response.set_cookie(
        SIGN_IN_COOKIE,
        cookie,
        max_age=3600,
        path=f"{PREFIX}/sign-in",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@public.get("/sign-in")
async def sign_in_form(request: Request, next: str = PREFIX) -> Response:
    return _sign_in_page(request, next)


@public.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await read_form(request)
    codec = sessions(request)
    next_ = _safe_next(form.get("next"))
    if not codec.sign_in_valid(request.cookies.get(SIGN_IN_COOKIE), form.get("csrf")):
        return _sign_in_page(
            request, next_, "the form had expired or came from elsewhere: try again", 403
        )
    token = form.get("token", "").strip()
    if not token or len(token) > 3000:
        return _sign_in_page(request, next_, "paste a bearer token", 422)
    try:
        principal = await authenticate_request(request, token)
    except ProblemException as refused:
        return _sign_in_page(request, next_, refused.detail, refused.status)
    _, cookie = codec.new(token)
    response = RedirectResponse(next_, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(codec.ttl_s),
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(SIGN_IN_COOKIE, path=f"{PREFIX}/sign-in")
    response.headers["X-Signed-In-As"] = principal.subject
    return response


@pages.get("/whoami")
async def whoami(principal: PrincipalDep) -> JSONResponse:
    """For the sign-in page's script: a SameSite=Strict cookie is not sent when a link
    from another site opens the dashboard, but it is on the page's own fetch()."""
    return JSONResponse({"subject": principal.subject, "role": principal.role.value})


@pages.post("/sign-out")
async def sign_out(request: Request, form: FormDep, session: SessionDep) -> Response:
    sessions(request).end(session)
    response: Response
    if is_script(request):
        response = JSONResponse({"message": "signed out"})
    else:
        response = RedirectResponse(f"{PREFIX}/sign-in?signed_out=1", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


# --- live ------------------------------------------------------------------------------


@pages.get("/events")
async def events(
    service: EventServiceDep,
    principal: PrincipalDep,
    type: Annotated[list[str], Query(max_length=20)] = [],  # noqa: B006
    bench_id: Annotated[str | None, Query(max_length=64)] = None,
    user_id: Annotated[str | None, Query(max_length=128)] = None,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> Response:
    """``GET /v1/events`` for the pages' EventSource, which cannot send a bearer header:
    the same stream, as the session's caller."""
    wanted = event_filter(type, bench_id, user_id, principal.subject)
    return await event_stream(service, last_event_id, wanted)


# --- the overview ----------------------------------------------------------------------


async def _overview(
    request: Request,
    benches: BenchServiceDep,
    reservations: ReservationServiceDep,
    executions: ExecutionServiceDep,
) -> tuple[list[views.Card], views.Summary]:
    now = reservations.now()
    page = await views.benches_page(benches, limit=views.MAX_BENCHES)
    bench_list = page.items
    ids = [bench.bench_id for bench in bench_list]
    held = await views.calendars(reservations, ids, Window(now - views.DAY, now + 7 * views.DAY))
    open_ = await views.open_runs(executions)
    tasks = await views.running_tasks(executions, open_, ids)
    card_list = views.cards(bench_list, held, open_, tasks, now)
    cache = _cache(request, _STATS_ATTRIBUTE, 1)
    key = " ".join(sorted(f"{e.execution_id}:{e.version}" for e in open_))
    stats = await cache.get(key, lambda: views.day_stats(executions, held, now))
    return card_list, views.summary_of(card_list, open_, stats, now)


def _cache(request: Request, attribute: str, size: int) -> views.Cache:
    cache: views.Cache | None = getattr(request.app.state, attribute, None)
    if cache is None:
        cache = views.Cache(size=size)
        setattr(request.app.state, attribute, cache)
    return cache


OVERVIEW_LIVE = ["bench.*", "reservation.*", "execution.*", "task.*"]


@pages.get("")
async def overview(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    benches: BenchServiceDep,
    reservations: ReservationServiceDep,
    executions: ExecutionServiceDep,
) -> Response:
    card_list, summary = await _overview(request, benches, reservations, executions)
    return render(
        request,
        "overview.html",
        _context(
            request,
            session,
            principal,
            title="Overview",
            page="overview",
            live=OVERVIEW_LIVE,
            cards=card_list,
            summary=summary,
        ),
    )


@pages.get("/fragments/summary")
async def summary_fragment(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    benches: BenchServiceDep,
    reservations: ReservationServiceDep,
    executions: ExecutionServiceDep,
) -> Response:
    _, summary = await _overview(request, benches, reservations, executions)
    return render(request, "_summary.html", _context(request, session, principal, summary=summary))


@pages.get("/fragments/board")
async def board_fragment(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    benches: BenchServiceDep,
    reservations: ReservationServiceDep,
    executions: ExecutionServiceDep,
) -> Response:
    card_list, _ = await _overview(request, benches, reservations, executions)
    return render(request, "_board.html", _context(request, session, principal, cards=card_list))


@pages.get("/fragments/card/{bench_id}")
async def card_fragment(
    request: Request,
    bench_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    benches: BenchServiceDep,
    reservations: ReservationServiceDep,
    executions: ExecutionServiceDep,
) -> Response:
    now = reservations.now()
    bench = await benches.get(bench_id)
    held = await views.calendars(reservations, [bench_id], Window(now, now + 7 * views.DAY))
    open_ = [e for e in await views.open_runs(executions) if e.bench_id == bench_id]
    tasks = await views.running_tasks(executions, open_, [bench_id])
    [card] = views.cards([bench], held, open_, tasks, now)
    return render(request, "_card.html", _context(request, session, principal, card=card))


# --- the timeline ----------------------------------------------------------------------


def _instant(text: str | None, zone: tzinfo) -> datetime | None:
    """An instant from a form or a query: with an offset as sent, or a browser's
    ``datetime-local`` value (no offset) in the page's time zone."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{text!r} is not a date and time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def _capabilities(text: str) -> frozenset[str]:
    return frozenset(part for part in text.replace(",", " ").split() if part)


def _timeline_query(span: views.Range, capability: str, type_: str) -> str:
    query = {"view": span.view, "from": span.start.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if capability:
        query["capability"] = capability
    if type_:
        query["type"] = type_
    return urlencode(query)


@pages.get("/timeline")
async def timeline(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    benches: BenchServiceDep,
    reservations: ReservationServiceDep,
    view: Annotated[str, Query(pattern="^(day|week)$")] = "day",
    from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    capability: Annotated[str, Query(max_length=400)] = "",
    type: Annotated[str, Query(max_length=64)] = "",
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    now = reservations.now()
    zone = zone_of(request)
    span = views.time_range(view, _instant(from_, zone), now, zone)
    page = await views.benches_page(
        benches,
        capabilities=_capabilities(capability),
        type=type or None,
        limit=views.TIMELINE_PAGE,
        after=after,
    )
    rows = await views.timeline_rows(page.items, reservations, span, principal.subject, now)
    query = _timeline_query(span, capability, type)
    return render(
        request,
        "timeline.html",
        _context(
            request,
            session,
            principal,
            title="Timeline",
            page="timeline",
            live=["reservation.*", "bench.*"],
            rows=rows,
            span=span,
            ticks=views.ticks(span),
            now_left=span.left(now) if span.start <= now < span.end else None,
            capability=capability,
            type=type,
            query=query,
            next_after=page.next_after,
            previous_from=span.shifted(-1).strftime("%Y-%m-%dT%H:%M:%SZ"),
            next_from=span.shifted(1).strftime("%Y-%m-%dT%H:%M:%SZ"),
            bench_ids=[row.bench.bench_id for row in rows],
        ),
    )


@pages.get("/fragments/row/{bench_id}")
async def row_fragment(
    request: Request,
    bench_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    benches: BenchServiceDep,
    reservations: ReservationServiceDep,
    view: Annotated[str, Query(pattern="^(day|week)$")] = "day",
    from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    capability: Annotated[str, Query(max_length=400)] = "",
    type: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    now = reservations.now()
    zone = zone_of(request)
    span = views.time_range(view, _instant(from_, zone), now, zone)
    bench = await benches.get(bench_id)
    [row] = await views.timeline_rows([bench], reservations, span, principal.subject, now)
    return render(
        request,
        "_row.html",
        _context(
            request,
            session,
            principal,
            row=row,
            span=span,
            now_left=span.left(now) if span.start <= now < span.end else None,
            query=_timeline_query(span, capability, type),
        ),
    )


# --- booking and changing reservations ------------------------------------------------


def _book_page(
    request: Request,
    session: Session,
    principal: Principal,
    bench: Bench | None,
    fields: dict[str, str],
    error: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "book.html",
        _context(
            request,
            session,
            principal,
            title="Book a bench",
            page="timeline",
            live=[],
            bench=bench,
            fields=fields,
            error=error,
        ),
        status_code=status,
    )


def _local_input(moment: datetime, zone: tzinfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M")


@pages.get("/book")
async def book_form(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    benches: BenchServiceDep,
    bench_id: Annotated[str, Query(pattern=BENCH_ID_PATTERN)],
    start: Annotated[str | None, Query(max_length=40)] = None,
    hours: Annotated[float, Query(gt=0, le=744)] = 1,
    next: Annotated[str | None, Query(max_length=400)] = None,
) -> Response:
    bench = await benches.get(bench_id)
    zone = zone_of(request)
    now = app_state(request).clock.now()
    first = _instant(start, zone) or (now + timedelta(minutes=30)).replace(
        minute=0 if now.minute < 30 else 30, second=0, microsecond=0
    )
    fields = {
        "bench_id": bench_id,
        "start": _local_input(first, zone),
        "end": _local_input(first + timedelta(hours=hours), zone),
        "purpose": "",
        "next": _safe_next(next or f"{PREFIX}/timeline"),
    }
    return _book_page(request, session, principal, bench, fields)


def _problem(error: AppError | ProblemException) -> dict[str, Any]:
    return {"status": error.status, "detail": error.detail, **error.extensions}


@pages.post("/reservations")
async def book(
    request: Request,
    form: FormDep,
    principal: Booker,
    session: SessionDep,
    service: ReservationServiceDep,
    benches: BenchServiceDep,
    actor: ActorDep,
) -> Response:
    zone = ZoneInfo(form["tz"]) if _known_zone(form.get("tz")) else zone_of(request)
    try:
        bench_id = form.get("bench_id", "")
        start, end = _instant(form.get("start"), zone), _instant(form.get("end"), zone)
        if not bench_id or start is None or end is None:
            raise InvalidInput("choose a bench, a start and an end")
        purpose = form.get("purpose", "").strip()
        if len(purpose) > 200:
            raise InvalidInput("the purpose is at most 200 characters")
        reservation, _ = await service.book(
            BookingRequest(window=Window(start, end), purpose=purpose, bench_id=bench_id),
            actor,
            None,
        )
    except AppError as refused:
        if is_script(request):
            raise
        bench = None
        with contextlib.suppress(AppError):
            bench = await benches.get(form.get("bench_id", ""))
        return _book_page(
            request, session, principal, bench, form, _problem(refused), refused.status
        )
    if is_script(request):
        out = ReservationOut.of(reservation, service.now())
        return JSONResponse(
            {"message": "booked", "reservation": out.model_dump(mode="json")}, status_code=201
        )
    return RedirectResponse(
        _safe_next(form.get("next")) if form.get("next") else _reservation_url(reservation),
        status_code=303,
    )


def _known_zone(name: str | None) -> bool:
    if not name or len(name) > 64 or ".." in name or name.startswith(("/", ".")):
        return False
    try:
        ZoneInfo(name)
    except (KeyError, ValueError):
        return False
    return True


def _reservation_url(reservation: Reservation) -> str:
    return f"{PREFIX}/reservations/{quote(reservation.reservation_id)}"


@pages.get("/reservations/{reservation_id}")
async def reservation_page(
    request: Request,
    reservation_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    service: ReservationServiceDep,
    executions: ExecutionServiceDep,
    health: HealthServiceDep,
    fragment: bool = False,
) -> Response:
    reservation = await service.get(reservation_id)
    now = service.now()
    history = await service.history(reservation_id, 50, None)
    runs = await views.runs_of(executions, [reservation])
    context = _context(
        request,
        session,
        principal,
        title=f"Reservation of {reservation.bench_id}",
        page="timeline",
        live=["reservation.*", "execution.*"],
        reservation=reservation,
        status=reservation.status(now).value,
        actions=_actions(principal, reservation, now),
        alternatives=await _alternatives(health, principal, reservation, now),
        history=history.items,
        runs=sorted(runs, key=lambda e: e.created_at, reverse=True),
    )
    return render(request, "_reservation.html" if fragment else "reservation.html", context)


async def _alternatives(
    health: HealthService, principal: Principal, reservation: Reservation, now: datetime
) -> list[Alternative] | None:
    """Where the caller may move an at-risk booking of theirs (None: not theirs to move,
    or not at risk)."""
    if (
        reservation.at_risk is None
        or reservation.kind is not ReservationKind.BOOKING
        or reservation.status(now) not in (ReservationStatus.CONFIRMED, ReservationStatus.ACTIVE)
        or not _may_change(principal, reservation)
    ):
        return None
    return await health.alternatives(reservation.reservation_id)


@pages.post("/reservations/{reservation_id}/swap")
async def swap_reservation(
    request: Request,
    reservation_id: str,
    form: FormDep,
    _: Holder,
    health: HealthServiceDep,
    actor: ActorDep,
) -> Response:
    """``POST /v1/reservations/{id}/swap``: the holder (or an admin) moves the booking to
    another bench for the same window."""
    bench_id = form.get("bench_id", "")
    if not re.fullmatch(BENCH_ID_PATTERN, bench_id):
        raise InvalidInput("choose the bench to move to")
    moved = await health.swap(reservation_id, bench_id, None, actor)
    message = f"moved to {moved.bench_id}"
    if is_script(request):
        out = ReservationOut.of(moved, health.now())
        return JSONResponse({"message": message, "reservation": out.model_dump(mode="json")})
    return RedirectResponse(_safe_next(form.get("next") or _reservation_url(moved)), 303)


_ACTIONS = {"cancel", "release", "checkin", "extend"}


@pages.post("/reservations/{reservation_id}/{action}")
async def change_reservation(
    request: Request,
    reservation_id: str,
    action: str,
    form: FormDep,
    _: Holder,
    service: ReservationServiceDep,
    actor: ActorDep,
) -> Response:
    if action not in _ACTIONS:
        raise ProblemException(404, f"no action {action!r}; there are: {sorted(_ACTIONS)}")
    if action == "cancel":
        changed = await service.cancel(reservation_id, None, actor)
    elif action == "release":
        changed = await service.release(reservation_id, None, actor)
    elif action == "checkin":
        changed = await service.check_in(reservation_id, None, actor)
    else:
        try:
            minutes = int(form.get("minutes", "30"))
        except ValueError:
            raise InvalidInput("minutes must be a whole number") from None
        if not 1 <= minutes <= 24 * 60:
            raise InvalidInput("extend by 1 minute to 24 hours")
        changed = await service.extend(reservation_id, timedelta(minutes=minutes), None, actor)
    done = {"cancel": "cancelled", "release": "released", "checkin": "checked in"}
    message = done.get(action, "extended")
    if is_script(request):
        out = ReservationOut.of(changed, service.now())
        return JSONResponse({"message": message, "reservation": out.model_dump(mode="json")})
    return RedirectResponse(_safe_next(form.get("next") or _reservation_url(changed)), 303)


# --- a bench ---------------------------------------------------------------------------


async def _bench_context(
    request: Request,
    session: Session,
    principal: Principal,
    bench_id: str,
    benches: BenchServiceDep,
    reservations: ReservationServiceDep,
    executions: ExecutionServiceDep,
    health: HealthService,
    fields: dict[str, str] | None = None,
    **more: Any,
) -> dict[str, Any]:
    bench = await benches.get(bench_id)
    now = reservations.now()
    week = 7 * views.DAY
    held = (await views.calendars(reservations, [bench_id], Window(now - week, now + week)))[
        bench_id
    ]
    upcoming = [r for r in held if r.end > now]
    bookings = [r for r in held if not views.is_maintenance(r)]
    past = Window(now - week, now)
    used = sum((past.overlap(r.window) for r in bookings), timedelta(0))
    ahead = Window(now, now + week)
    booked = sum((ahead.overlap(r.window) for r in bookings), timedelta(0))
    runs = sorted(
        await views.runs_of(executions, [r for r in bookings if r.start <= now]),
        key=lambda e: e.created_at,
        reverse=True,
    )
    records = _cache(request, _RECORDS_ATTRIBUTE, 64)
    stats = await records.get(views.record_key(bench, runs), lambda: health.stats(bench_id))
    history = await benches.history(bench_id, 20, max(0, bench.version - 20))
    changes = bench.liveness_changes
    liveness_log = await benches.liveness_log(bench_id, 10, max(0, changes - 10) or None)
    zone = zone_of(request)
    first = (now + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    return _context(
        request,
        session,
        principal,
        title=bench.name,
        page="bench",
        live=["bench.*", "reservation.*", "execution.*", "task.*"],
        bench=bench,
        liveness=bench.liveness(now).value,
        admin_state=views.admin_state(bench, now),
        health=bench.health,
        consecutive=None if bench.health is None else views.consecutive(bench.health),
        is_admin=principal.role is Role.ADMIN,
        maintenance=sorted(bench.maintenance, key=lambda w: w.start),
        maintenance_fields=fields
        or {
            "start": _local_input(first, zone),
            "end": _local_input(first + timedelta(hours=2), zone),
            "reason": "",
        },
        upcoming=upcoming,
        used_pct=f"{100 * used / week:.0f} %",
        booked_hours=booked.total_seconds() / 3600,
        stats=stats,
        record=views.record_rows(stats),
        periods=views.RECORD_PERIODS,
        runs=runs[:20],
        history=list(reversed(history.items)),
        liveness_log=list(reversed(liveness_log.items)),
        **more,
    )


@pages.get("/benches/{bench_id}")
async def bench_page(
    request: Request,
    bench_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    benches: BenchServiceDep,
    reservations: ReservationServiceDep,
    executions: ExecutionServiceDep,
    health: HealthServiceDep,
    fragment: bool = False,
) -> Response:
    context = await _bench_context(
        request, session, principal, bench_id, benches, reservations, executions, health
    )
    return render(request, "_bench.html" if fragment else "bench.html", context)


def _bench_url(bench_id: str) -> str:
    return f"{PREFIX}/benches/{quote(bench_id)}"


@pages.post("/benches/{bench_id}/clear-quarantine")
async def clear_quarantine(
    request: Request,
    bench_id: str,
    form: FormDep,
    _: BenchAdmin,
    benches: BenchServiceDep,
    actor: ActorDep,
) -> Response:
    """``PATCH /v1/benches/{id} {"admin_state": "active"}`` with the version the page
    showed as ``If-Match`` (admins): a bench changed since is a 412, as for the API."""
    try:
        version = int(form.get("version", ""))
    except ValueError:
        raise InvalidInput("the form names no version of the bench: reload the page") from None
    bench = await benches.get(bench_id)
    if bench.admin_state is not AdminState.QUARANTINED:
        raise Conflict(
            f"bench {bench_id!r} is {bench.admin_state.value}, not quarantined",
            admin_state=bench.admin_state.value,
        )
    expectation = VersionExpectation(any_version=False, versions=frozenset({version}))
    changes = BenchChanges(admin_state=AdminState.ACTIVE)
    changed = await benches.update(bench_id, changes, expectation, actor)
    message = f"{bench_id} is active again"
    if is_script(request):
        return JSONResponse({"message": message, "bench_id": bench_id, "version": changed.version})
    return RedirectResponse(_bench_url(bench_id), 303)


def _plan_counts(plan: MaintenancePlan) -> str:
    moved = sum(1 for item in plan.displaced if item.outcome == "swapped")
    cancelled = len(plan.displaced) - moved
    if not plan.displaced:
        return "nothing in the way"
    return f"{moved} booking{'' if moved == 1 else 's'} moved, {cancelled} cancelled"


@pages.post("/benches/{bench_id}/maintenance")
async def schedule_maintenance(
    request: Request,
    bench_id: str,
    form: FormDep,
    _: BenchAdmin,
    session: SessionDep,
    principal: PrincipalDep,
    benches: BenchServiceDep,
    reservations: ReservationServiceDep,
    executions: ExecutionServiceDep,
    health: HealthServiceDep,
    actor: ActorDep,
) -> Response:
    """``POST /v1/benches/{id}/maintenance`` (admins): ``dry_run`` (the "Dry run" button)
    says what the window would displace and changes nothing."""
    zone = ZoneInfo(form["tz"]) if _known_zone(form.get("tz")) else zone_of(request)
    start, end = _instant(form.get("start"), zone), _instant(form.get("end"), zone)
    if start is None or end is None:
        raise InvalidInput("give the window's start and end")
    if end <= start:
        raise InvalidInput("end must be after start")
    reason = form.get("reason", "").strip()
    if not reason or len(reason) > 500:
        raise InvalidInput("give a reason, at most 500 characters")
    dry_run = form.get("dry_run", "").lower() in ("true", "1", "on", "yes")
    plan = await health.maintenance(bench_id, Window(start, end), reason, dry_run, actor)
    plan_context = {"plan": plan, "dry_run": dry_run}
    if is_script(request):
        verb = "a dry run" if dry_run else "maintenance scheduled"
        return JSONResponse(
            {
                "message": f"{verb}: {_plan_counts(plan)}",
                "dry_run": dry_run,
                "reservation_id": plan.window.reservation_id,
                "plan_html": page_text(request, "_plan.html", plan_context),
            },
            status_code=200 if dry_run else 201,
        )
    if not dry_run:
        return RedirectResponse(_bench_url(bench_id), 303)
    context = await _bench_context(
        request,
        session,
        principal,
        bench_id,
        benches,
        reservations,
        executions,
        health,
        fields={
            "start": _local_input(start, zone),
            "end": _local_input(end, zone),
            "reason": reason,
        },
        **plan_context,
    )
    return render(request, "bench.html", context)


# --- runs ------------------------------------------------------------------------------


@pages.get("/runs")
async def runs_page(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    benches: BenchServiceDep,
    reservations: ReservationServiceDep,
    executions: ExecutionServiceDep,
    status: Annotated[str, Query(max_length=20)] = "",
    bench_id: Annotated[str, Query(max_length=64)] = "",
    commit: Annotated[str, Query(max_length=40)] = "",
    period: Annotated[str, Query(pattern="^(24h|7d)$")] = "24h",
    fragment: bool = False,
) -> Response:
    now = reservations.now()
    since = now - (views.DAY if period == "24h" else 7 * views.DAY)
    if bench_id:
        ids = [(await benches.get(bench_id)).bench_id]
    else:
        page = await views.benches_page(benches, limit=views.MAX_BENCHES, include_retired=True)
        ids = [bench.bench_id for bench in page.items]
    found = {e.execution_id: e for e in await views.open_runs(executions) if e.bench_id in ids}
    for execution in await views.recent_runs(reservations, executions, ids, since, now):
        found.setdefault(execution.execution_id, execution)
    runs = sorted(found.values(), key=lambda e: e.created_at, reverse=True)
    if status:
        runs = [e for e in runs if e.status.value == status]
    if commit:
        runs = [e for e in runs if e.commit_sha.startswith(commit.lower())]
    query = urlencode({"status": status, "bench_id": bench_id, "commit": commit, "period": period})
    context = _context(
        request,
        session,
        principal,
        title="Runs",
        page="runs",
        live=["execution.*", "task.*"],
        runs=runs[: views.LIST_CAP],
        statuses=[s.value for s in ExecutionStatus],
        status=status,
        bench_id=bench_id,
        commit=commit,
        period=period,
        bench_ids=ids,
        query=query,
    )
    return render(request, "_runs.html" if fragment else "runs.html", context)


@pages.get("/runs/{execution_id}")
async def run_page(
    request: Request,
    execution_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    executions: ExecutionServiceDep,
    fragment: bool = False,
) -> Response:
    execution, tasks = await executions.get(execution_id)
    history = await executions.history(execution_id, 50, max(0, execution.version - 50) or None)
    context = _context(
        request,
        session,
        principal,
        title=f"Run {execution.commit_sha[:10]}",
        page="runs",
        live=["execution.*", "task.*"],
        execution=execution,
        tasks=tasks,
        progress=views.progress(tasks),
        history=history.items,
    )
    return render(request, "_run.html" if fragment else "run.html", context)


# --- mine ------------------------------------------------------------------------------


@pages.get("/mine")
async def mine(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    reservations: ReservationServiceDep,
    executions: ExecutionServiceDep,
    quotas: QuotaServiceDep,
    fragment: bool = False,
) -> Response:
    now = reservations.now()
    found = await reservations.find(
        user_id=principal.subject,
        bench_id=None,
        ends_after=now - 7 * views.DAY,
        limit=views.LIST_CAP,
        after=None,
    )
    mine_ = sorted(found.items, key=lambda r: r.start, reverse=True)
    runs = sorted(
        await views.runs_of(executions, [r for r in mine_ if r.start <= now]),
        key=lambda e: e.created_at,
        reverse=True,
    )
    days, quota = await quotas.usage(user_id=principal.subject, team=None)
    week_ago = now - 7 * views.DAY
    booked_7d = (
        sum(
            (day.booked for day in days if day.day + views.DAY > week_ago), timedelta(0)
        ).total_seconds()
        / 3600
    )
    used_7d = (
        sum(
            (day.used for day in days if day.day + views.DAY > week_ago), timedelta(0)
        ).total_seconds()
        / 3600
    )
    concurrent = sum(1 for r in mine_ if r.status(now) is ReservationStatus.ACTIVE)
    context = _context(
        request,
        session,
        principal,
        title="Mine",
        page="mine",
        live=["reservation.*", "execution.*"],
        reservations=mine_,
        statuses={r.reservation_id: r.status(now).value for r in mine_},
        actions={r.reservation_id: _actions(principal, r, now) for r in mine_},
        runs=runs,
        limits=quota.limits,
        booked_7d=booked_7d,
        used_7d=used_7d,
        concurrent=concurrent,
        exempt=principal.role is Role.ADMIN,
    )
    return render(request, "_mine.html" if fragment else "mine.html", context)


router = APIRouter()
router.include_router(public)
router.include_router(pages)
