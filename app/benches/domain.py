"""Benches: what a bench is, which changes are allowed, and how liveness is judged. No I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from app.errors import Conflict, Forbidden, InvalidInput
from app.identity import Principal, Role

BENCH_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
CAPABILITY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,62}$"
# A DynamoDB transaction holds at most 100 items; a PATCH that swaps every capability
# touches 2 x MAX_CAPABILITIES guard items plus the bench and its history entry.
MAX_CAPABILITIES = 32
MAX_LABELS = 64
# How many tasks a bench runs at once (leased tasks of runs on it): one unless it can do more.
DEFAULT_CONCURRENCY = 1
MAX_CONCURRENCY = 64
# Health messages are kept this long (an agent's command may print a lot).
MAX_HEALTH_MESSAGE = 300
# A bench is online while its last heartbeat is younger than this many intervals.
LIVENESS_INTERVALS = 3

_bench_id_re = re.compile(BENCH_ID_PATTERN)


class AdminState(StrEnum):
    ACTIVE = "active"
    MAINTENANCE = "maintenance"
    # Taken out of service for its health (by the health monitor, its agent or an admin):
    # not booked, handed no tasks of new runs; an admin puts it back.
    QUARANTINED = "quarantined"
    RETIRED = "retired"


class Liveness(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    # Never sent a heartbeat: a hand-operated bench. Liveness never marks its bookings.
    UNMONITORED = "unmonitored"


class HealthStatus(StrEnum):
    OK = "ok"
    FAILING = "failing"


# Retired is the end of a bench's life: its id, record and history stay, nothing else moves.
ADMIN_TRANSITIONS: dict[AdminState, frozenset[AdminState]] = {
    AdminState.ACTIVE: frozenset(
        {AdminState.MAINTENANCE, AdminState.QUARANTINED, AdminState.RETIRED}
    ),
    AdminState.MAINTENANCE: frozenset(
        {AdminState.ACTIVE, AdminState.QUARANTINED, AdminState.RETIRED}
    ),
    AdminState.QUARANTINED: frozenset(
        {AdminState.ACTIVE, AdminState.MAINTENANCE, AdminState.RETIRED}
    ),
    AdminState.RETIRED: frozenset(),
}

# Fields that make up a bench's configuration: changing one bumps the version and is history.
CONFIG_FIELDS = (
    "name",
    "type",
    "capabilities",
    "labels",
    "heartbeat_interval_s",
    "admin_state",
    "concurrency",
    "quarantine",
    "maintenance",
)


def is_valid_bench_id(value: str) -> bool:
    return _bench_id_re.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class HealthReport:
    """What an agent's health command said, as a heartbeat carries it."""

    status: HealthStatus
    message: str = ""
    # The agent asks for its own bench to be quarantined at once (it knows it is broken).
    quarantine: bool = False


@dataclass(frozen=True, slots=True)
class BenchHealth:
    """The last health report kept on the bench, and the run of equal ones it ends:
    ``failures`` consecutive failing reports, or ``passes`` consecutive passing ones.
    Not configuration: kept by the heartbeat's one write, no version change."""

    status: HealthStatus
    message: str
    at: datetime
    failures: int = 0
    passes: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    at: datetime
    agent_version: str
    details: dict[str, Any] = field(default_factory=dict)
    health: HealthReport | None = None


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Why a bench is quarantined: ``reason`` (health_failures, infrastructure_failures,
    agent_report, admin), who did it, since when, and the evidence."""

    reason: str
    by: str
    since: datetime
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def automatic(self) -> bool:
        return self.by == HEALTH_MONITOR


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """A window the bench is booked for maintenance: ``reservation_id`` holds it on the
    calendar (so nothing else books it); the bench lists it to read as in maintenance."""

    reservation_id: str
    start: datetime
    end: datetime
    reason: str

    def covers(self, now: datetime) -> bool:
        return self.start <= now < self.end

    def to_json(self) -> dict[str, Any]:
        return {
            "reservation_id": self.reservation_id,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> MaintenanceWindow:
        return cls(
            reservation_id=value["reservation_id"],
            start=datetime.fromisoformat(value["start"]),
            end=datetime.fromisoformat(value["end"]),
            reason=value["reason"],
        )


# The actor of automatic quarantines (and of their automatic clearing).
HEALTH_MONITOR = "health-monitor"


@dataclass(frozen=True, slots=True)
class Bench:
    bench_id: str
    name: str
    type: str
    capabilities: frozenset[str]
    labels: dict[str, str]
    heartbeat_interval_s: int
    admin_state: AdminState
    version: int
    created_at: datetime
    updated_at: datetime
    last_heartbeat: Heartbeat | None = None
    # Liveness as housekeeping last recorded it in the liveness log (not on every
    # heartbeat), and how many transitions it has recorded: the log's last sequence number.
    # Neither is configuration: recording a transition moves neither version nor ETag.
    recorded_liveness: Liveness = Liveness.OFFLINE
    concurrency: int = DEFAULT_CONCURRENCY
    liveness_changes: int = 0
    # Health, as the agent and the runs on the bench report it; none is configuration.
    health: BenchHealth | None = None
    infra_failures: int = 0  # consecutive runs ending errored or timed_out
    # A window starts soon: the agent is asked to check health if it has not since.
    health_check_due: datetime | None = None
    # Configuration: why it is quarantined, and its maintenance windows (upcoming ones).
    quarantine: Quarantine | None = None
    maintenance: tuple[MaintenanceWindow, ...] = ()

    def config(self) -> dict[str, Any]:
        """The configuration as plain values, for history diffs."""
        return {
            "name": self.name,
            "type": self.type,
            "capabilities": sorted(self.capabilities),
            "labels": dict(self.labels),
            "heartbeat_interval_s": self.heartbeat_interval_s,
            "admin_state": self.admin_state.value,
            "concurrency": self.concurrency,
            "quarantine": None
            if self.quarantine is None
            else {
                "reason": self.quarantine.reason,
                "by": self.quarantine.by,
                "since": self.quarantine.since.isoformat(),
                "evidence": self.quarantine.evidence,
            },
            "maintenance": [window.to_json() for window in self.maintenance],
        }

    def admin_state_at(self, now: datetime) -> AdminState:
        """The admin state as users read it: an active bench is in maintenance while one
        of its maintenance windows is under way."""
        if self.admin_state is AdminState.ACTIVE and any(
            window.covers(now) for window in self.maintenance
        ):
            return AdminState.MAINTENANCE
        return self.admin_state

    def check_requested(self, now: datetime, pre_check: timedelta) -> bool:
        """Whether the heartbeat's answer asks the agent to run its health command now: a
        window starts soon, and no report came since the check was asked for."""
        due = self.health_check_due
        if due is None or now >= due:
            return False
        return self.health is None or self.health.at < due - pre_check

    def audited(self) -> dict[str, Any]:
        """What bench history records a change of: the configuration only. Liveness
        transitions have a log of their own (see ``liveness_change``)."""
        return self.config()

    def liveness(self, now: datetime) -> Liveness:
        """Online while heartbeats keep coming; a retired bench is offline whatever its
        agent last said (it no longer takes heartbeats)."""
        if self.admin_state is AdminState.RETIRED:
            return Liveness.OFFLINE
        if self.last_heartbeat is None:
            return Liveness.UNMONITORED
        if now - self.last_heartbeat.at < self.liveness_window:
            return Liveness.ONLINE
        return Liveness.OFFLINE

    @property
    def liveness_window(self) -> timedelta:
        return timedelta(seconds=LIVENESS_INTERVALS * self.heartbeat_interval_s)

    def next_heartbeat_due(self) -> datetime | None:
        if self.last_heartbeat is None:
            return None
        return self.last_heartbeat.at + timedelta(seconds=self.heartbeat_interval_s)


@dataclass(frozen=True, slots=True)
class BenchChanges:
    """A PATCH: only the fields the client sent are set."""

    name: str | None = None
    capabilities: frozenset[str] | None = None
    labels: dict[str, str] | None = None
    heartbeat_interval_s: int | None = None
    admin_state: AdminState | None = None
    concurrency: int | None = None
    # Set with admin_state: quarantined (who and why), cleared by any other state.
    quarantine: Quarantine | None = None


def new_bench(
    *,
    bench_id: str,
    name: str,
    type: str,
    capabilities: frozenset[str],
    labels: dict[str, str],
    heartbeat_interval_s: int,
    now: datetime,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> Bench:
    return Bench(
        bench_id=bench_id,
        name=name,
        type=type,
        capabilities=capabilities,
        labels=labels,
        heartbeat_interval_s=heartbeat_interval_s,
        admin_state=AdminState.ACTIVE,
        version=1,
        created_at=now,
        updated_at=now,
        concurrency=concurrency,
    )


def with_maintenance(bench: Bench, window: MaintenanceWindow, now: datetime) -> Bench:
    """The bench listing one more maintenance window (those over are dropped)."""
    if bench.admin_state is AdminState.RETIRED:
        raise Conflict("a retired bench cannot be changed", allowed_transitions=[])
    kept = tuple(w for w in bench.maintenance if w.end > now and w != window)
    listed = tuple(sorted((*kept, window), key=lambda w: (w.start, w.reservation_id)))
    return replace(bench, maintenance=listed, version=bench.version + 1, updated_at=now)


def without_maintenance(bench: Bench, reservation_id: str, now: datetime) -> Bench:
    """The bench without that maintenance window (it was cancelled or released); the same
    bench when it does not list it."""
    kept = tuple(w for w in bench.maintenance if w.reservation_id != reservation_id)
    if kept == bench.maintenance or bench.admin_state is AdminState.RETIRED:
        return bench
    return replace(bench, maintenance=kept, version=bench.version + 1, updated_at=now)


def check_admin_transition(current: AdminState, target: AdminState) -> None:
    if target == current:
        return
    allowed = ADMIN_TRANSITIONS[current]
    if target not in allowed:
        raise Conflict(
            f"a bench cannot go from {current.value!r} to {target.value!r}",
            allowed_transitions=sorted(state.value for state in allowed),
        )


def apply_changes(bench: Bench, changes: BenchChanges, now: datetime) -> Bench:
    """The bench after a PATCH, one version on; the same bench when nothing changes."""
    if bench.admin_state is AdminState.RETIRED:
        raise Conflict("a retired bench cannot be changed", allowed_transitions=[])
    if changes.admin_state is not None:
        check_admin_transition(bench.admin_state, changes.admin_state)
    updated = replace(
        bench,
        name=bench.name if changes.name is None else changes.name,
        capabilities=bench.capabilities if changes.capabilities is None else changes.capabilities,
        labels=bench.labels if changes.labels is None else changes.labels,
        heartbeat_interval_s=(
            bench.heartbeat_interval_s
            if changes.heartbeat_interval_s is None
            else changes.heartbeat_interval_s
        ),
        admin_state=bench.admin_state if changes.admin_state is None else changes.admin_state,
        concurrency=bench.concurrency if changes.concurrency is None else changes.concurrency,
    )
    if updated.admin_state is not AdminState.QUARANTINED:
        updated = replace(updated, quarantine=None)
    elif bench.admin_state is not AdminState.QUARANTINED:
        updated = replace(updated, quarantine=changes.quarantine)
    if updated.config() == bench.config():
        return bench
    return replace(updated, version=bench.version + 1, updated_at=now)


@dataclass(frozen=True, slots=True)
class LivenessChange:
    """One transition of a bench's liveness, as its liveness log records it: the
    ``seq``-th since the bench was registered (1, 2, ...), at ``at``."""

    bench_id: str
    was: Liveness
    liveness: Liveness
    seq: int
    at: datetime

    @property
    def action(self) -> str:
        return "came_online" if self.liveness is Liveness.ONLINE else "went_offline"


def liveness_change(bench: Bench, now: datetime) -> LivenessChange | None:
    """The transition to record, or None when the observed liveness is the recorded one.

    Heartbeats only touch heartbeat fields; housekeeping notices a bench going offline (or
    back online) and records it once. Liveness is not configuration: the transition is
    logged with a sequence number of its own, and the bench's version does not move. A
    retired bench's record no longer moves, so nothing is recorded for it.
    """
    if bench.admin_state is AdminState.RETIRED:
        return None
    observed = bench.liveness(now)
    if observed is Liveness.UNMONITORED or observed is bench.recorded_liveness:
        return None
    return LivenessChange(
        bench_id=bench.bench_id,
        was=bench.recorded_liveness,
        liveness=observed,
        seq=bench.liveness_changes + 1,
        at=now,
    )


def heartbeat_refused(bench: Bench) -> Conflict:
    """Why a heartbeat to ``bench`` is turned away: a retired bench's record no longer
    moves, and its liveness is offline for good."""
    return Conflict(
        f"bench {bench.bench_id!r} is retired: it takes no heartbeats",
        admin_state=bench.admin_state.value,
    )


def retire(bench: Bench, now: datetime) -> Bench:
    """Retired; the same bench when it already is (retiring twice changes nothing)."""
    if bench.admin_state is AdminState.RETIRED:
        return bench
    return apply_changes(bench, BenchChanges(admin_state=AdminState.RETIRED), now)


def check_may_report_for(principal: Principal, bench_id: str) -> None:
    """An agent speaks for its own bench only; admins for any."""
    if principal.role is Role.AGENT and principal.bench_id != bench_id:
        raise Forbidden(f"this agent token belongs to bench {principal.bench_id!r}")


def health_report(details: dict[str, Any]) -> HealthReport | None:
    """The health report a heartbeat's ``details`` carry, if any: ``health`` is ``ok`` or
    ``failing`` with ``health_message`` beside it (what the agent sends), or an object
    ``{status, message, quarantine}``; ``quarantine: true`` asks for quarantine at once."""
    value = details.get("health")
    if value is None:
        return None
    quarantine: Any = details.get("quarantine", False)
    message: Any = details.get("health_message", "")
    if isinstance(value, dict):
        quarantine = value.get("quarantine", quarantine)
        message = value.get("message", message)
        value = value.get("status")
    if value not in {status.value for status in HealthStatus}:
        raise InvalidInput("details.health must be 'ok' or 'failing' (or {status, message})")
    if not isinstance(message, str):
        raise InvalidInput("the health message must be a string")
    if not isinstance(quarantine, bool):
        raise InvalidInput("details.quarantine must be true or false")
    return HealthReport(HealthStatus(value), message[:MAX_HEALTH_MESSAGE], quarantine)


def after_report(health: BenchHealth | None, report: HealthReport, at: datetime) -> BenchHealth:
    """The health kept once ``report`` is in: the run of equal reports one longer, or a new
    run. (The stores compute the same in their one write; this is its definition.)"""
    failing = report.status is HealthStatus.FAILING
    failures = health.failures if health is not None else 0
    passes = health.passes if health is not None else 0
    return BenchHealth(
        status=report.status,
        message=report.message,
        at=at,
        failures=failures + 1 if failing else 0,
        passes=0 if failing else passes + 1,
    )
