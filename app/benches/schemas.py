"""The benches API's request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.benches.domain import (
    BENCH_ID_PATTERN,
    CAPABILITY_PATTERN,
    DEFAULT_CONCURRENCY,
    MAX_CAPABILITIES,
    MAX_CONCURRENCY,
    MAX_LABELS,
    AdminState,
    Bench,
    BenchHealth,
    HealthStatus,
    Liveness,
    MaintenanceWindow,
)
from app.http.limits import NOT_NULL, SmallJsonObject

BenchId = Annotated[str, Field(pattern=BENCH_ID_PATTERN, examples=["rig-7"])]
Capability = Annotated[str, Field(pattern=CAPABILITY_PATTERN, examples=["can-bus"])]
Name = Annotated[str, Field(min_length=1, max_length=200)]
BenchType = Annotated[str, Field(min_length=1, max_length=64, examples=["hil-rig"])]
LabelKey = Annotated[str, Field(min_length=1, max_length=63)]
LabelValue = Annotated[str, Field(max_length=256)]
HeartbeatInterval = Annotated[int, Field(ge=5, le=3600)]
# How many tasks the bench runs at once; tasks of one execution always run one by one.
Concurrency = Annotated[int, Field(ge=1, le=MAX_CONCURRENCY)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BenchCreate(_Strict):
    bench_id: BenchId
    name: Name
    type: BenchType
    capabilities: Annotated[list[Capability], Field(max_length=MAX_CAPABILITIES)] = []
    labels: Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_LABELS)] = {}
    heartbeat_interval_s: HeartbeatInterval = 30
    concurrency: Concurrency = DEFAULT_CONCURRENCY


class BenchPatch(_Strict):
    """Only the fields sent change; ``null`` is not a value any of them can take."""

    name: Name | None = NOT_NULL
    capabilities: Annotated[list[Capability], Field(max_length=MAX_CAPABILITIES)] | None = NOT_NULL
    labels: Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_LABELS)] | None = NOT_NULL
    heartbeat_interval_s: HeartbeatInterval | None = NOT_NULL
    admin_state: AdminState | None = NOT_NULL
    concurrency: Concurrency | None = NOT_NULL

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = sorted(key for key, value in data.items() if value is None)
            if nulls:
                raise ValueError(f"these fields cannot be null: {', '.join(nulls)}")
        return data


class HealthOut(BaseModel):
    """The last health report the agent sent, and the run of equal ones it ends."""

    status: HealthStatus
    message: str
    at: datetime
    consecutive: int = Field(description="Reports in a row with this status, this one included")

    @classmethod
    def of(cls, health: BenchHealth | None) -> HealthOut | None:
        if health is None:
            return None
        consecutive = health.failures if health.status is HealthStatus.FAILING else health.passes
        return cls(
            status=health.status, message=health.message, at=health.at, consecutive=consecutive
        )


class QuarantineOut(BaseModel):
    reason: str = Field(
        description="health_failures, infrastructure_failures, agent_report or admin"
    )
    by: str
    since: datetime
    evidence: dict[str, Any]


class MaintenanceWindowOut(BaseModel):
    reservation_id: str
    start: datetime
    end: datetime
    reason: str

    @classmethod
    def of(cls, window: MaintenanceWindow) -> MaintenanceWindowOut:
        return cls(
            reservation_id=window.reservation_id,
            start=window.start,
            end=window.end,
            reason=window.reason,
        )


class BenchOut(BaseModel):
    bench_id: str
    name: str
    type: str
    capabilities: list[str]
    labels: dict[str, str]
    heartbeat_interval_s: int
    admin_state: AdminState
    concurrency: int
    status: Liveness
    last_heartbeat_at: datetime | None
    agent_version: str | None
    version: int
    created_at: datetime
    updated_at: datetime
    health: HealthOut | None = None
    quarantine: QuarantineOut | None = None
    maintenance: list[MaintenanceWindowOut] = Field(
        default=[], description="Maintenance windows not over yet, soonest first"
    )

    @classmethod
    def of(cls, bench: Bench, now: datetime) -> BenchOut:
        heartbeat = bench.last_heartbeat
        quarantine = bench.quarantine
        return cls(
            bench_id=bench.bench_id,
            name=bench.name,
            type=bench.type,
            capabilities=sorted(bench.capabilities),
            labels=bench.labels,
            heartbeat_interval_s=bench.heartbeat_interval_s,
            admin_state=bench.admin_state_at(now),
            concurrency=bench.concurrency,
            status=bench.liveness(now),
            last_heartbeat_at=heartbeat.at if heartbeat else None,
            agent_version=heartbeat.agent_version if heartbeat else None,
            version=bench.version,
            created_at=bench.created_at,
            updated_at=bench.updated_at,
            health=HealthOut.of(bench.health),
            quarantine=None
            if quarantine is None
            else QuarantineOut(
                reason=quarantine.reason,
                by=quarantine.by,
                since=quarantine.since,
                evidence=quarantine.evidence,
            ),
            maintenance=[MaintenanceWindowOut.of(w) for w in bench.maintenance if w.end > now],
        )


class HeartbeatIn(_Strict):
    agent_version: Annotated[str, Field(min_length=1, max_length=64)]
    details: SmallJsonObject = {}


class HeartbeatOut(BaseModel):
    bench_id: str
    status: Liveness
    last_heartbeat_at: datetime
    next_heartbeat_due_at: datetime
    offline_after: datetime
    heartbeat_interval_s: int
    run_health_check: bool = Field(
        default=False,
        description="A window starts soon on this bench and no health report came since:"
        " run the health command now and report it",
    )

    @classmethod
    def of(cls, bench: Bench, now: datetime, run_health_check: bool = False) -> HeartbeatOut:
        heartbeat = bench.last_heartbeat
        due = bench.next_heartbeat_due()
        assert heartbeat is not None and due is not None  # just recorded
        return cls(
            bench_id=bench.bench_id,
            status=bench.liveness(now),
            last_heartbeat_at=heartbeat.at,
            next_heartbeat_due_at=due,
            offline_after=heartbeat.at + bench.liveness_window,
            heartbeat_interval_s=bench.heartbeat_interval_s,
            run_health_check=run_health_check,
        )
