"""The bench health API's bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.benches.schemas import BenchId, BenchOut
from app.health.service import Alternative, Displacement, MaintenancePlan
from app.http.limits import Instant


class SwapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bench_id: BenchId


class AlternativeOut(BaseModel):
    bench_id: str
    start: datetime
    end: datetime
    same_window: bool = Field(description="False: the nearest window free on that bench")

    @classmethod
    def of(cls, alternative: Alternative) -> AlternativeOut:
        return cls(
            bench_id=alternative.bench_id,
            start=alternative.window.start,
            end=alternative.window.end,
            same_window=alternative.same_window,
        )


class AlternativesOut(BaseModel):
    items: list[AlternativeOut]


class MaintenanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: Instant
    end: Instant
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    dry_run: bool = Field(default=False, description="List what it would displace; change nothing")

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceIn:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class DisplacementOut(BaseModel):
    reservation_id: str
    user_id: str
    start: datetime
    end: datetime
    outcome: str = Field(description="swapped (to bench_id) or cancelled")
    bench_id: str | None = Field(description="Where it moves (swapped), else null")

    @classmethod
    def of(cls, item: Displacement) -> DisplacementOut:
        return cls(
            reservation_id=item.reservation.reservation_id,
            user_id=item.reservation.user_id,
            start=item.reservation.start,
            end=item.reservation.end,
            outcome=item.outcome,
            bench_id=item.bench_id,
        )


class MaintenanceOut(BaseModel):
    reservation_id: str = Field(description="The reservation holding the window")
    start: datetime
    end: datetime
    reason: str
    dry_run: bool
    displaced: list[DisplacementOut]
    bench: BenchOut | None = Field(description="The bench after the change (null in a dry run)")

    @classmethod
    def of(cls, plan: MaintenancePlan, dry_run: bool, now: datetime) -> MaintenanceOut:
        return cls(
            reservation_id=plan.window.reservation_id,
            start=plan.window.start,
            end=plan.window.end,
            reason=plan.window.reason,
            dry_run=dry_run,
            displaced=[DisplacementOut.of(item) for item in plan.displaced],
            bench=None if plan.bench is None else BenchOut.of(plan.bench, now),
        )


class RunRecordOut(BaseModel):
    uptime: float | None = Field(description="Share of the period online; null: unmonitored")
    executions: dict[str, int] = Field(description="Finished executions by verdict")
    finished: int
    infrastructure_failure_rate: float | None = Field(
        description="errored + timed_out over the finished ones not cancelled; null: none"
    )


class PeersOut(BaseModel):
    benches: int = Field(description="Benches of the same type compared (up to 50)")
    periods: dict[str, RunRecordOut]


class BenchStatsOut(BaseModel):
    bench_id: str
    type: str
    as_of: datetime
    consecutive_infrastructure_failures: int
    periods: dict[str, RunRecordOut] = Field(description="'7d' and '30d'")
    peers: PeersOut
