"""The reservations API's bodies. Timestamps must carry an offset; they come back in UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.benches.schemas import BenchId, Capability
from app.http.limits import Instant, QueryDuration
from app.reservations.domain import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    USER_PRIORITY,
    FreeWindow,
    Reservation,
    ReservationKind,
    ReservationStatus,
)

Purpose = Annotated[str, Field(max_length=500)]


class ReservationCreate(BaseModel):
    """Book ``bench_id``, or let the service pick an active bench with all ``capabilities``.

    A plain booking gives ``start`` and ``end`` (or ``duration``). With ``advance: true``
    the service books the earliest free window of ``duration`` from ``not_before`` (or
    now), and moves the booking up by itself whenever an earlier window frees."""

    model_config = ConfigDict(extra="forbid")

    bench_id: BenchId | None = None
    capabilities: Annotated[list[Capability], Field(min_length=1, max_length=32)] | None = None
    start: Instant | None = None
    end: Instant | None = None
    duration: QueryDuration | None = Field(default=None, description="ISO 8601, e.g. PT2H")
    purpose: Purpose = ""
    advance: bool = False
    not_before: Instant | None = None
    latest_start: Instant | None = Field(
        default=None,
        description="With advance: a 409 naming the earliest window if none starts by then",
    )
    priority: int = Field(
        default=DEFAULT_PRIORITY,
        ge=0,
        le=MAX_PRIORITY,
        description=f"Who moves up first when a window frees; users up to {USER_PRIORITY}",
    )
    allow_swap: bool = Field(
        default=False,
        description="When the bench becomes unfit, move the booking to an equivalent bench"
        " (one with all its capabilities) by itself; bookings by capability always may",
    )

    @model_validator(mode="after")
    def _one_target(self) -> ReservationCreate:
        if (self.bench_id is None) == (self.capabilities is None):
            raise ValueError("give either bench_id or capabilities")
        if self.end is not None and self.duration is not None:
            raise ValueError("give end or duration, not both")
        if self.advance:
            if self.duration is None and (self.start is None or self.end is None):
                raise ValueError("an advancing booking needs duration (or start and end)")
        else:
            if self.start is None or (self.end is None and self.duration is None):
                raise ValueError("give start, and end or duration (or advance: true)")
            if self.not_before is not None or self.latest_start is not None:
                raise ValueError("not_before and latest_start are for advance: true")
        return self


class ReservationExtend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: QueryDuration = Field(description="How much later the window ends, e.g. PT30M")


class ReservationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: Instant | None = None
    end: Instant | None = None
    purpose: Purpose | None = None


class AtRiskOut(BaseModel):
    reason: str = Field(description="offline, quarantined, maintenance or health_failing")
    since: datetime


class ReservationOut(BaseModel):
    reservation_id: str
    bench_id: str
    user_id: str
    start: datetime
    end: datetime
    purpose: str
    status: ReservationStatus
    version: int
    created_at: datetime
    updated_at: datetime
    advance: bool = False
    priority: int = DEFAULT_PRIORITY
    not_before: datetime | None = None
    checked_in_at: datetime | None = None
    allow_swap: bool = False
    at_risk: AtRiskOut | None = Field(
        default=None, description="The bench looks unfit for this window; null when healthy"
    )
    kind: ReservationKind = ReservationKind.BOOKING

    @classmethod
    def of(cls, reservation: Reservation, now: datetime) -> ReservationOut:
        return cls(
            reservation_id=reservation.reservation_id,
            bench_id=reservation.bench_id,
            user_id=reservation.user_id,
            start=reservation.start,
            end=reservation.end,
            purpose=reservation.purpose,
            status=reservation.status(now),
            version=reservation.version,
            created_at=reservation.created_at,
            updated_at=reservation.updated_at,
            advance=reservation.advance,
            priority=reservation.priority,
            not_before=reservation.not_before,
            checked_in_at=reservation.checked_in_at,
            allow_swap=reservation.allow_swap,
            at_risk=None
            if reservation.at_risk is None
            else AtRiskOut(reason=reservation.at_risk.reason, since=reservation.at_risk.since),
            kind=reservation.kind,
        )


class FreeWindowOut(BaseModel):
    bench_id: str
    start: datetime
    end: datetime

    @classmethod
    def of(cls, free: FreeWindow) -> FreeWindowOut:
        return cls(bench_id=free.bench_id, start=free.window.start, end=free.window.end)


class AvailabilityOut(BaseModel):
    items: list[FreeWindowOut]
