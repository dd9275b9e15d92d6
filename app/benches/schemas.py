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
    Liveness,
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

    @classmethod
    def of(cls, bench: Bench, now: datetime) -> BenchOut:
        heartbeat = bench.last_heartbeat
        return cls(
            bench_id=bench.bench_id,
            name=bench.name,
            type=bench.type,
            capabilities=sorted(bench.capabilities),
            labels=bench.labels,
            heartbeat_interval_s=bench.heartbeat_interval_s,
            admin_state=bench.admin_state,
            concurrency=bench.concurrency,
            status=bench.liveness(now),
            last_heartbeat_at=heartbeat.at if heartbeat else None,
            agent_version=heartbeat.agent_version if heartbeat else None,
            version=bench.version,
            created_at=bench.created_at,
            updated_at=bench.updated_at,
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

    @classmethod
    def of(cls, bench: Bench, now: datetime) -> HeartbeatOut:
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
        )
