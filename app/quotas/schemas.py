"""Quotas and usage as the API shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.quotas.domain import NEVER, Limits, Quota, QuotaKind
from app.quotas.service import DayUsage


class QuotaIn(BaseModel):
    """Each limit, or null for none."""

    model_config = ConfigDict(extra="forbid")

    max_booked_hours_7d: float | None = Field(default=None, gt=0, le=24 * 7 * 1000)
    max_concurrent: int | None = Field(default=None, ge=1, le=10_000)
    max_window_hours: float | None = Field(default=None, gt=0, le=24 * 31)

    def limits(self) -> Limits:
        return Limits(self.max_booked_hours_7d, self.max_concurrent, self.max_window_hours)


class QuotaOut(QuotaIn):
    kind: QuotaKind
    name: str
    version: int = Field(description="0: never set, the defaults from settings")
    updated_at: datetime | None

    @classmethod
    def of(cls, quota: Quota) -> QuotaOut:
        return cls(
            kind=quota.kind,
            name=quota.name,
            max_booked_hours_7d=quota.limits.max_booked_hours_7d,
            max_concurrent=quota.limits.max_concurrent,
            max_window_hours=quota.limits.max_window_hours,
            version=quota.version,
            updated_at=None if quota.updated_at == NEVER else quota.updated_at,
        )


class DayUsageOut(BaseModel):
    day: datetime
    booked_hours: float = Field(description="Time held by bookings that day (so far)")
    used_hours: float = Field(description="Time a run was under way on those bookings")

    @classmethod
    def of(cls, usage: DayUsage) -> DayUsageOut:
        return cls(
            day=usage.day,
            booked_hours=round(usage.booked.total_seconds() / 3600, 3),
            used_hours=round(usage.used.total_seconds() / 3600, 3),
        )


class UsageOut(BaseModel):
    user_id: str | None
    team: str | None
    days: list[DayUsageOut]
    booked_hours: float
    used_hours: float
    quota: QuotaOut
