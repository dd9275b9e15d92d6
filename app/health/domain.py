"""Bench health: when a booking is at risk, where it may go instead, when a bench is
quarantined, and what its record says. No I/O.

A bench is unfit when it is offline (its agent stopped heartbeating), quarantined, in
maintenance, or failing its health check. A bench that never sent a heartbeat is
unmonitored (hand-operated): its liveness never marks a booking.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from app.benches.domain import (
    HEALTH_MONITOR,
    AdminState,
    Bench,
    BenchHealth,
    HealthReport,
    HealthStatus,
    Liveness,
    Quarantine,
)
from app.executions.domain import ExecutionStatus
from app.reservations.domain import (
    AtRisk,
    Reservation,
    ReservationKind,
    ReservationState,
    ReservationStatus,
    Window,
)

# Runs that end this way count against the bench (the infrastructure); ``failed`` is the
# test's own verdict.
INFRASTRUCTURE_FAILURES = frozenset({ExecutionStatus.ERRORED, ExecutionStatus.TIMED_OUT})
VERDICTS = (
    ExecutionStatus.PASSED,
    ExecutionStatus.FAILED,
    ExecutionStatus.ERRORED,
    ExecutionStatus.TIMED_OUT,
    ExecutionStatus.CANCELLED,
)


class RiskReason(StrEnum):
    OFFLINE = "offline"
    QUARANTINED = "quarantined"
    MAINTENANCE = "maintenance"
    HEALTH_FAILING = "health_failing"


class QuarantineReason(StrEnum):
    HEALTH_FAILURES = "health_failures"
    INFRASTRUCTURE_FAILURES = "infrastructure_failures"
    AGENT_REPORT = "agent_report"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class HealthRules:
    at_risk_horizon: timedelta
    pre_booking_check: timedelta
    quarantine_after_health_failures: int
    quarantine_after_infra_failures: int
    # Consecutive passing reports that clear an automatic quarantine; 0: never.
    auto_clear_after: int


def risk_of(bench: Bench, now: datetime) -> RiskReason | None:
    """Why the bench is unfit for work now, or None when it is fit. (A retired bench is
    out of this: it takes no bookings, and what it had is its admin's business.)"""
    state = bench.admin_state_at(now)
    if state is AdminState.RETIRED:
        return None
    if state is AdminState.QUARANTINED:
        return RiskReason.QUARANTINED
    if state is AdminState.MAINTENANCE:
        return RiskReason.MAINTENANCE
    if bench.liveness(now) is Liveness.OFFLINE:
        return RiskReason.OFFLINE
    if bench.health is not None and bench.health.status is HealthStatus.FAILING:
        return RiskReason.HEALTH_FAILING
    return None


def exposed(reservation: Reservation, now: datetime, horizon: timedelta) -> bool:
    """Whether the bench's health concerns this booking now: it holds its window, which
    is under way or starts within the horizon."""
    return (
        reservation.kind is ReservationKind.BOOKING
        and reservation.status(now) in (ReservationStatus.CONFIRMED, ReservationStatus.ACTIVE)
        and reservation.start < now + horizon
    )


def marked(reservation: Reservation, reason: RiskReason, now: datetime) -> Reservation:
    """Marked at risk for ``reason``; the same reservation when it already is. The mark is
    not the holder's change: version and updated_at stay, so their If-Match still holds
    (as liveness never moves a bench's)."""
    if reservation.at_risk is not None and reservation.at_risk.reason == reason.value:
        return reservation
    since = now if reservation.at_risk is None else reservation.at_risk.since
    return replace(reservation, at_risk=AtRisk(reason.value, since))


def recovered(reservation: Reservation) -> Reservation:
    """The mark cleared; the same reservation when there is none."""
    if reservation.at_risk is None:
        return reservation
    return replace(reservation, at_risk=None)


def heals_itself(reservation: Reservation) -> bool:
    """Moved to an equivalent bench without asking: booked by capability, or allowed."""
    return bool(reservation.capabilities) or reservation.allow_swap


def needed_capabilities(reservation: Reservation, bench: Bench | None) -> frozenset[str]:
    """What an equivalent bench must have: what the booking asked for, or else everything
    its bench has."""
    if reservation.capabilities:
        return reservation.capabilities
    return frozenset() if bench is None else bench.capabilities


def fit_for(bench: Bench, reservation: Reservation, needs: frozenset[str], now: datetime) -> bool:
    """Whether ``bench`` may take the booking: another bench, active, online, healthy and
    with every capability needed (the calendar says whether it is free)."""
    return (
        bench.bench_id != reservation.bench_id
        and bench.admin_state_at(now) is AdminState.ACTIVE
        and bench.liveness(now) is Liveness.ONLINE
        and risk_of(bench, now) is None
        and needs <= bench.capabilities
    )


def remaining_window(reservation: Reservation, now: datetime) -> Window:
    """The window a swap moves: all of it before it starts, what is left once under way
    (the time already spent stays where it was spent)."""
    if reservation.start >= now:
        return reservation.window
    return Window(now.replace(microsecond=0), reservation.end)


def swapped(reservation: Reservation, bench_id: str, now: datetime) -> Reservation:
    window = remaining_window(reservation, now)
    return replace(
        reservation,
        bench_id=bench_id,
        start=window.start,
        end=window.end,
        at_risk=None,
        version=reservation.version + 1,
        updated_at=now,
    )


def displaced(reservation: Reservation, now: datetime) -> Reservation:
    """Cancelled to make room for maintenance (nothing equivalent was free)."""
    return replace(
        reservation,
        state=ReservationState.CANCELLED,
        version=reservation.version + 1,
        updated_at=now,
    )


# --- quarantine --------------------------------------------------------------------------


def quarantine_for_report(
    bench: Bench, report: HealthReport, rules: HealthRules, now: datetime
) -> Quarantine | None:
    """The quarantine a health report calls for (the bench's kept health includes it), or
    None. Only an active bench is quarantined automatically."""
    if bench.admin_state is not AdminState.ACTIVE or report.status is not HealthStatus.FAILING:
        return None
    health = bench.health
    failures = 0 if health is None else health.failures
    evidence: dict[str, Any] = {"message": report.message, "consecutive_failures": failures}
    if report.quarantine:
        return Quarantine(QuarantineReason.AGENT_REPORT.value, HEALTH_MONITOR, now, evidence)
    threshold = rules.quarantine_after_health_failures
    if threshold > 0 and failures >= threshold:
        return Quarantine(QuarantineReason.HEALTH_FAILURES.value, HEALTH_MONITOR, now, evidence)
    return None


def quarantine_for_runs(
    bench: Bench, rules: HealthRules, now: datetime, execution_ids: Sequence[str]
) -> Quarantine | None:
    threshold = rules.quarantine_after_infra_failures
    if bench.admin_state is not AdminState.ACTIVE or threshold <= 0:
        return None
    if bench.infra_failures < threshold:
        return None
    evidence = {"consecutive_failures": bench.infra_failures, "executions": list(execution_ids)}
    return Quarantine(QuarantineReason.INFRASTRUCTURE_FAILURES.value, HEALTH_MONITOR, now, evidence)


def clears_itself(bench: Bench, rules: HealthRules) -> bool:
    """An automatic quarantine ends after a run of passing health reports, if configured.
    An admin's quarantine waits for an admin."""
    health: BenchHealth | None = bench.health
    return (
        rules.auto_clear_after > 0
        and bench.admin_state is AdminState.QUARANTINED
        and bench.quarantine is not None
        and bench.quarantine.automatic
        and health is not None
        and health.status is HealthStatus.OK
        and health.passes >= rules.auto_clear_after
    )


# --- the record --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transition:
    """One liveness transition, as the bench's liveness log has it."""

    at: datetime
    online: bool


def uptime(transitions: Sequence[Transition], since: datetime, now: datetime) -> float | None:
    """The share of [since, now] the bench was online, from its liveness transitions
    (oldest first); None when it has none by ``now`` (never monitored). Before the first
    transition it was in the state that transition left."""
    seen = [t for t in transitions if t.at <= now]
    if not seen or now <= since:
        return None
    online = not seen[0].online
    cursor = since
    total = timedelta(0)
    for transition in seen:
        if transition.at > cursor:
            if online:
                total += transition.at - cursor
            cursor = transition.at
        online = transition.online
    if online:
        total += now - cursor
    return round(total / (now - since), 4)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """Executions by verdict over a period and the share that were the bench's fault."""

    by_verdict: dict[str, int]

    @property
    def finished(self) -> int:
        return sum(self.by_verdict.values())

    @property
    def infrastructure_failure_rate(self) -> float | None:
        judged = self.finished - self.by_verdict.get(ExecutionStatus.CANCELLED.value, 0)
        if judged <= 0:
            return None
        failures = sum(self.by_verdict.get(status.value, 0) for status in INFRASTRUCTURE_FAILURES)
        return round(failures / judged, 4)

    def to_json(self) -> dict[str, Any]:
        return {
            "executions": self.by_verdict,
            "finished": self.finished,
            "infrastructure_failure_rate": self.infrastructure_failure_rate,
        }


def run_record(verdicts: Iterable[ExecutionStatus]) -> RunRecord:
    counts = {status.value: 0 for status in VERDICTS}
    for verdict in verdicts:
        if verdict.value in counts:
            counts[verdict.value] += 1
    return RunRecord(counts)
