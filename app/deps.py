"""Service wiring, in one place: the factories that routers (through FastAPI dependencies)
and housekeeping both build their services with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Request

from app.benches.domain import Bench
from app.benches.service import BenchService
from app.clock import Clock
from app.events.service import EventService
from app.executions.domain import Execution
from app.executions.service import ExecutionService
from app.health.domain import HealthRules
from app.health.service import HealthService
from app.http.auth import current_principal, require_roles
from app.http.state import STATE_ATTRIBUTE
from app.identity import Actor, Principal, Role
from app.logs import request_id_var
from app.ops import lifecycle
from app.quotas.domain import Limits, QuotaKind
from app.quotas.service import QuotaService
from app.reservations.scheduler import HoldRules, Scheduler
from app.reservations.service import ReservationService
from app.settings import Settings
from app.state import AppState
from app.store.base import Store
from app.webhooks.service import WebhookService
from app.webhooks.targets import allowed_networks


def bench_service(store: Store, clock: Clock, settings: Settings | None = None) -> BenchService:
    """With ``settings``: a change that makes the bench unfit protects its bookings."""
    if settings is None:
        return BenchService(store, clock)

    async def admin_state_moved(before: Bench, after: Bench) -> None:
        # Built only after such a change: reads and heartbeats need none of it.
        await health_service(store, clock, settings).admin_state_moved(before, after)

    return BenchService(store, clock, on_change=admin_state_moved)


def health_rules(settings: Settings) -> HealthRules:
    return HealthRules(
        at_risk_horizon=timedelta(hours=settings.at_risk_horizon_h),
        pre_booking_check=timedelta(minutes=settings.pre_booking_check_min),
        quarantine_after_health_failures=settings.quarantine_after_health_failures,
        quarantine_after_infra_failures=settings.quarantine_after_infra_failures,
        auto_clear_after=settings.quarantine_auto_clear,
    )


def health_service(store: Store, clock: Clock, settings: Settings) -> HealthService:
    return HealthService(
        store,
        clock,
        health_rules(settings),
        BenchService(store, clock),
        reservation_service(store, clock, settings).scheduler,
    )


def quota_service(store: Store, clock: Clock, settings: Settings) -> QuotaService:
    return QuotaService(
        store,
        clock,
        {
            QuotaKind.USER: Limits(
                max_booked_hours_7d=settings.quota_max_booked_hours_7d,
                max_concurrent=settings.quota_max_concurrent,
                max_window_hours=settings.quota_max_window_hours,
            ),
            QuotaKind.TEAM: Limits(
                max_booked_hours_7d=settings.team_quota_max_booked_hours_7d,
                max_concurrent=settings.team_quota_max_concurrent,
                max_window_hours=settings.team_quota_max_window_hours,
            ),
        },
    )


def reservation_service(store: Store, clock: Clock, settings: Settings) -> ReservationService:
    quotas = quota_service(store, clock, settings)
    rules = HoldRules(
        no_show_grace=timedelta(minutes=settings.no_show_grace_min),
        grace_by_type={
            bench_type: timedelta(minutes=minutes)
            for bench_type, minutes in settings.no_show_grace_by_type.items()
        },
        idle_after=timedelta(minutes=settings.idle_release_min),
        task_lease=settings.task_lease,
    )
    return ReservationService(
        store,
        clock,
        settings.max_reservation,
        quotas,
        Scheduler(store, clock, quotas, rules),
        at_risk_horizon=timedelta(hours=settings.at_risk_horizon_h),
    )


def execution_service(store: Store, clock: Clock, settings: Settings) -> ExecutionService:
    async def finished(execution: Execution) -> None:
        # Built only when a run ends: claims and task heartbeats need none of it.
        await health_service(store, clock, settings).record_run_outcome(execution)

    return ExecutionService(store, clock, settings.task_lease, on_finished=finished)


def event_service(store: Store, clock: Clock, settings: Settings) -> EventService:
    return EventService(
        store,
        clock,
        poll_s=settings.event_poll_ms / 1000,
        keepalive_s=settings.event_keepalive_s,
        longest_s=settings.event_stream_max_s,
        stopping=lifecycle.stopping.is_set,
    )


def webhook_service(store: Store, clock: Clock, settings: Settings) -> WebhookService:
    return WebhookService(store, clock, allowed_networks(settings.webhook_allow_networks))


class Services:
    """Every use-case service of one process, each built on first use and then shared:
    a service holds the store, the clock and rules made from the settings, nothing of a
    request, so building them anew for each request (a heartbeat built a health service,
    a reservation service, a scheduler and quotas) was only cost."""

    # The one attribute of ``app.state`` the lifespan sets it as.
    ATTRIBUTE = "orchestrator_services"

    def __init__(self, store: Store, clock: Clock, settings: Settings) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings

    @cached_property
    def benches(self) -> BenchService:
        return bench_service(self._store, self._clock, self._settings)

    @cached_property
    def health(self) -> HealthService:
        return health_service(self._store, self._clock, self._settings)

    @cached_property
    def reservations(self) -> ReservationService:
        return reservation_service(self._store, self._clock, self._settings)

    @cached_property
    def executions(self) -> ExecutionService:
        return execution_service(self._store, self._clock, self._settings)

    @cached_property
    def events(self) -> EventService:
        return event_service(self._store, self._clock, self._settings)

    @cached_property
    def webhooks(self) -> WebhookService:
        return webhook_service(self._store, self._clock, self._settings)

    @cached_property
    def quotas(self) -> QuotaService:
        return quota_service(self._store, self._clock, self._settings)


# FastAPI runs plain ``def`` dependencies in a worker thread: these are ``async def``
# so that handing out a service costs no thread hop.


def _state_of(request: Request) -> AppState:
    state: AppState = getattr(request.app.state, STATE_ATTRIBUTE)
    return state


def _services(request: Request) -> Services:
    services: Services = getattr(request.app.state, Services.ATTRIBUTE)
    return services


async def get_state(request: Request) -> AppState:
    return _state_of(request)


StateDep = Annotated[AppState, Depends(get_state)]


def _actor(principal: Principal) -> Actor:
    """The caller acting in this request (its id is the request middleware's)."""
    return Actor(principal=principal, request_id=request_id_var.get())


async def get_actor(request: Request) -> Actor:
    return _actor(await current_principal(request))


async def _bench_service(request: Request) -> BenchService:
    return _services(request).benches


async def _health_service(request: Request) -> HealthService:
    return _services(request).health


async def _reservation_service(request: Request) -> ReservationService:
    return _services(request).reservations


async def _execution_service(request: Request) -> ExecutionService:
    return _services(request).executions


async def _event_service(request: Request) -> EventService:
    return _services(request).events


async def _webhook_service(request: Request) -> WebhookService:
    return _services(request).webhooks


async def _quota_service(request: Request) -> QuotaService:
    return _services(request).quotas


ServiceT = TypeVar("ServiceT")


@dataclass(frozen=True, slots=True)
class Call(Generic[ServiceT]):
    """A request's service and its caller (authenticated, rate-limited, of an allowed
    role), resolved as one dependency. FastAPI resolves each dependency node on every
    request, about a third of what a GET cost: the hot routes take this one node where
    they took the service, the caller and the actor as three."""

    service: ServiceT
    principal: Principal

    @property
    def actor(self) -> Actor:
        return _actor(self.principal)


def calling(service: Callable[[Services], ServiceT], *roles: Role) -> Any:
    """The dependency for ``Annotated[Call[S], calling(...)]``: ``service`` picks the
    service; the caller must have one of ``roles`` (any role when none are given)."""
    check = require_roles(*roles) if roles else current_principal

    async def resolve(request: Request) -> Call[ServiceT]:
        principal = await check(request)
        return Call(service(_services(request)), principal)

    return Depends(resolve)


ActorDep = Annotated[Actor, Depends(get_actor)]
QuotaServiceDep = Annotated[QuotaService, Depends(_quota_service)]
WebhookServiceDep = Annotated[WebhookService, Depends(_webhook_service)]
EventServiceDep = Annotated[EventService, Depends(_event_service)]
BenchServiceDep = Annotated[BenchService, Depends(_bench_service)]
HealthServiceDep = Annotated[HealthService, Depends(_health_service)]
ReservationServiceDep = Annotated[ReservationService, Depends(_reservation_service)]
ExecutionServiceDep = Annotated[ExecutionService, Depends(_execution_service)]
