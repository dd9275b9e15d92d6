"""Benches: what a bench is, which changes are allowed, and how liveness is judged. No I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from app.errors import Conflict, Forbidden
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
# A bench is online while its last heartbeat is younger than this many intervals.
LIVENESS_INTERVALS = 3

_bench_id_re = re.compile(BENCH_ID_PATTERN)


class AdminState(StrEnum):
    ACTIVE = "active"
    MAINTENANCE = "maintenance"
    RETIRED = "retired"


class Liveness(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


# Retired is the end of a bench's life: its id, record and history stay, nothing else moves.
ADMIN_TRANSITIONS: dict[AdminState, frozenset[AdminState]] = {
    AdminState.ACTIVE: frozenset({AdminState.MAINTENANCE, AdminState.RETIRED}),
    AdminState.MAINTENANCE: frozenset({AdminState.ACTIVE, AdminState.RETIRED}),
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
)


def is_valid_bench_id(value: str) -> bool:
    return _bench_id_re.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    at: datetime
    agent_version: str
    details: dict[str, Any] = field(default_factory=dict)


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
        }

    def audited(self) -> dict[str, Any]:
        """What bench history records a change of: the configuration only. Liveness
        transitions have a log of their own (see ``liveness_change``)."""
        return self.config()

    def liveness(self, now: datetime) -> Liveness:
        """Online while heartbeats keep coming; a retired bench is offline whatever its
        agent last said (it no longer takes heartbeats)."""
        if self.admin_state is AdminState.RETIRED or self.last_heartbeat is None:
            return Liveness.OFFLINE
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
    if observed is bench.recorded_liveness:
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
