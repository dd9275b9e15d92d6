"""Per-caller rate limiting: a token bucket per subject, in each process.

A runaway script should slow down, not take the lab's API with it. Buckets are per
process, so N replicas allow up to N times the rate: this is load shedding, not quota.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from app.http.exceptions import ProblemException


@dataclass(slots=True)
class _Bucket:
    tokens: float
    refilled_at: float


class RateLimiter:
    def __init__(self, per_second: float, burst: int) -> None:
        self._rate = per_second
        self._burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def retry_after(self, subject: str, now: float) -> float:
        """Take one token for ``subject``; 0 when allowed, else seconds until one is free."""
        if self._rate <= 0:
            return 0.0
        bucket = self._buckets.setdefault(subject, _Bucket(float(self._burst), now))
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.refilled_at) * self._rate)
        bucket.refilled_at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self._rate


def refuse_if_limited(limiter: RateLimiter, subject: str) -> None:
    """A 429 ProblemException when ``subject`` has used up its bucket."""
    wait = limiter.retry_after(subject, time.monotonic())
    if wait > 0:
        raise ProblemException(
            429,
            f"too many requests from {subject!r}; slow down",
            headers={"Retry-After": str(math.ceil(wait))},
        )
