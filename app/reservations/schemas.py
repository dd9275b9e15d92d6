"""The reservations API's bodies. Timestamps must carry an offset; they come back in UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.benches.schemas import BenchId, Capability
from app.http.limits import Instant
from app.reservations.domain import FreeWindow, Reservation, ReservationStatus

Purpose = Annotated[str, Field(max_length=500)]


class ReservationCreate(BaseModel):
    """Book ``bench_id``, or let the service pick an active bench with all ``capabilities``."""

    model_config = ConfigDict(extra="forbid")

    bench_id: BenchId | None = None
    capabilities: Annotated[list[Capability], Field(min_length=1, max_length=32)] | None = None
    start: Instant
    end: Instant
    purpose: Purpose = ""

    @model_validator(mode="after")
    def _one_target(self) -> ReservationCreate:
        if (self.bench_id is None) == (self.capabilities is None):
            raise ValueError("give either bench_id or capabilities")
        return self


class ReservationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: Instant | None = None
    end: Instant | None = None
    purpose: Purpose | None = None


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
