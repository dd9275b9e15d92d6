"""Typed errors: one class per HTTP status the API answers with, built from its RFC 9457
Problem Details body (``application/problem+json``).

``str(error)`` is one line, ``"<status> <title>: <detail>"``; ``error.problem`` is the whole
body, extension members included.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx
from pydantic import ValidationError

from bench_client.models import ConflictingReservation

__all__ = [
    "ApiError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "Gone",
    "InvalidTransition",
    "NotFound",
    "PreconditionFailed",
    "PreconditionRequired",
    "QuotaExceeded",
    "RateLimited",
    "TransportFailure",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
    "error_from_response",
    "parse_retry_after",
]


class ApiError(Exception):
    """The service answered with an error status (4xx or 5xx)."""

    status_code: ClassVar[int | None] = None

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        problem: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.problem: dict[str, Any] = dict(problem or {})
        self.request_id = request_id
        super().__init__(str(self))

    def __str__(self) -> str:
        line = f"{self.status} {self.title}: {self.detail}"
        return " ".join(line.split())  # one line, whatever the detail holds

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, request_id={self.request_id!r})"


class BadRequest(ApiError):
    status_code = 400


class Unauthorized(ApiError):
    status_code = 401


class Forbidden(ApiError):
    status_code = 403


class QuotaExceeded(Forbidden):
    """403 whose problem names the ``limit`` a booking, a move or an extension would go
    over (``max_booked_hours_7d``, ``max_concurrent``, ``max_window_hours``); ``detail``
    says it in words, with the figures and when room frees. ``quota`` is the limit;
    ``frees_at`` (max_booked_hours_7d only) when enough booked time leaves the 7 days."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        problem: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(status, title, detail, problem, request_id)
        self.limit = str(self.problem.get("limit"))
        quota = self.problem.get("quota")
        self.quota: float | None = float(quota) if isinstance(quota, int | float) else None
        self.frees_at: datetime | None = _instant(self.problem.get("frees_at"))


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    """409: a double booking (``conflicts``), a state that refuses the request
    (``current_status``, ``allowed_transitions``), a duplicate id, a key in flight.

    ``holders``: who holds each of ``conflicts`` (by reservation id), where the service
    says (an extension's 409 does). ``earliest_start`` and ``earliest_bench_id``: for an
    advancing booking with nothing free by its ``latest_start``, the earliest window found
    (None when none is within the search)."""

    status_code = 409

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        problem: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(status, title, detail, problem, request_id)
        self.conflicts: list[ConflictingReservation] = _conflicts(self.problem.get("conflicts"))
        allowed = self.problem.get("allowed_transitions")
        self.allowed_transitions: list[str] | None = (
            [str(item) for item in allowed] if isinstance(allowed, list) else None
        )
        current = self.problem.get("current_status")
        self.current_status: str | None = None if current is None else str(current)
        self.holders: dict[str, str] = _holders(self.problem.get("conflicts"))
        self.earliest_start: datetime | None = _instant(self.problem.get("earliest_start"))
        bench = self.problem.get("earliest_bench_id")
        self.earliest_bench_id: str | None = None if bench is None else str(bench)


class InvalidTransition(Conflict):
    """409 whose problem names ``allowed_transitions``: the state does not allow the action."""


class Gone(ApiError):
    """410: no longer kept. From the event stream: the position to resume after is older
    than the event log keeps (events since then may be lost); follow again without it."""

    status_code = 410


class PreconditionFailed(ApiError):
    """412: the If-Match was stale; ``current_etag`` is the stored version's ETag."""

    status_code = 412

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        problem: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        current_etag: str | None = None,
    ) -> None:
        super().__init__(status, title, detail, problem, request_id)
        self.current_etag = current_etag


class PreconditionRequired(ApiError):
    status_code = 428


class ValidationFailed(ApiError):
    """422: ``errors`` lists what was wrong, field by field
    (``{"location": [...], "message": ..., "type": ...}``)."""

    status_code = 422

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        problem: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(status, title, detail, problem, request_id)
        raw = self.problem.get("errors")
        self.errors: list[dict[str, Any]] = (
            [dict(item) for item in raw if isinstance(item, Mapping)]
            if isinstance(raw, list)
            else []
        )


class _RetryLater(ApiError):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        problem: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        retry_after: float = 0.0,
    ) -> None:
        super().__init__(status, title, detail, problem, request_id)
        self.retry_after = retry_after


class RateLimited(_RetryLater):
    """429: ``retry_after`` seconds (from the Retry-After header; 0 when it had none)."""

    status_code = 429


class Unavailable(_RetryLater):
    """503: ``retry_after`` seconds (from the Retry-After header; 0 when it had none)."""

    status_code = 503


class TransportFailure(Exception):
    """The service could not be reached (connection refused or dropped, timeout) even
    after the bounded retries; ``__cause__`` is the last httpx error."""


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status_code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        Gone,
        PreconditionFailed,
        PreconditionRequired,
        ValidationFailed,
        RateLimited,
        Unavailable,
    )
    if cls.status_code is not None
}


def _conflicts(raw: object) -> list[ConflictingReservation]:
    if not isinstance(raw, list):
        return []
    out: list[ConflictingReservation] = []
    for item in raw:
        try:
            out.append(ConflictingReservation.model_validate(item))
        except ValidationError:
            continue
    return out


def _holders(raw: object) -> dict[str, str]:
    if not isinstance(raw, list):
        return {}
    return {
        str(item["reservation_id"]): str(item["user_id"])
        for item in raw
        if isinstance(item, Mapping) and item.get("reservation_id") and item.get("user_id")
    }


def _instant(raw: object) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def error_from_response(response: httpx.Response) -> ApiError:
    """The typed error for an error response (its body read already)."""
    status = response.status_code
    problem: dict[str, Any] = {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        problem = body
    title = str(problem.get("title") or response.reason_phrase or "Error")
    detail = str(problem.get("detail") or (response.text.strip()[:500] if not problem else ""))
    request_id = response.headers.get("X-Request-ID")
    cls = _BY_STATUS.get(status, ApiError)
    if cls is Conflict and problem.get("allowed_transitions") is not None:
        cls = InvalidTransition
    if cls is Forbidden and problem.get("limit") is not None:
        cls = QuotaExceeded
    if cls is PreconditionFailed:
        return PreconditionFailed(
            status, title, detail, problem, request_id, current_etag=response.headers.get("ETag")
        )
    if cls is RateLimited or cls is Unavailable:
        retry_after = parse_retry_after(response.headers.get("Retry-After")) or 0.0
        return cls(status, title, detail, problem, request_id, retry_after=retry_after)
    return cls(status, title, detail, problem, request_id)
