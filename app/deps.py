"""Service wiring, in one place: the factories that routers (through FastAPI dependencies)
and housekeeping both build their services with."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request

from app.benches.domain import Bench
from app.benches.service import BenchService
from app.clock import Clock
from app.events.service import EventService
from app.executions.domain import Execution
from app.executions.service import ExecutionService
from app.health.domain import HealthRules
from app.health.service import HealthService
from app.http.auth import current_principal
from app.http.state import STATE_ATTRIBUTE
from app.identity import Actor
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


# FastAPI runs plain ``def`` dependencies in a worker thread: these are ``async def``
# so that building a service costs no thread hop. The services read the state from the
# request themselves: every dependency is a node FastAPI resolves on each request.


def _state_of(request: Request) -> AppState:
    state: AppState = getattr(request.app.state, STATE_ATTRIBUTE)
    return state


async def get_state(request: Request) -> AppState:
    return _state_of(request)


StateDep = Annotated[AppState, Depends(get_state)]


async def get_actor(request: Request) -> Actor:
    return Actor(principal=await current_principal(request), request_id=request_id_var.get())


async def _bench_service(request: Request) -> BenchService:
    state = _state_of(request)
    return bench_service(state.store, state.clock, state.settings)


async def _health_service(request: Request) -> HealthService:
    state = _state_of(request)
    return health_service(state.store, state.clock, state.settings)


async def _reservation_service(request: Request) -> ReservationService:
    state = _state_of(request)
    return reservation_service(state.store, state.clock, state.settings)


async def _execution_service(request: Request) -> ExecutionService:
    state = _state_of(request)
    return execution_service(state.store, state.clock, state.settings)


async def _event_service(request: Request) -> EventService:
    state = _state_of(request)
    return event_service(state.store, state.clock, state.settings)


async def _webhook_service(request: Request) -> WebhookService:
    state = _state_of(request)
    return webhook_service(state.store, state.clock, state.settings)


async def _quota_service(request: Request) -> QuotaService:
    state = _state_of(request)
    return quota_service(state.store, state.clock, state.settings)


ActorDep = Annotated[Actor, Depends(get_actor)]
QuotaServiceDep = Annotated[QuotaService, Depends(_quota_service)]
WebhookServiceDep = Annotated[WebhookService, Depends(_webhook_service)]
EventServiceDep = Annotated[EventService, Depends(_event_service)]
BenchServiceDep = Annotated[BenchService, Depends(_bench_service)]
HealthServiceDep = Annotated[HealthService, Depends(_health_service)]
ReservationServiceDep = Annotated[ReservationService, Depends(_reservation_service)]
ExecutionServiceDep = Annotated[ExecutionService, Depends(_execution_service)]
