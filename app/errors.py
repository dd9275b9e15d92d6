"""Errors that services raise in domain terms; app/http/problems.py renders them as HTTP.

Each kind carries its own status, so a new subclass inherits a meaningful one instead of
falling through to 500. Services never build HTTP responses, and routers never decide
what went wrong.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    """Base of every error a use-case may raise on purpose."""

    status: ClassVar[int] = 500

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions


class NotFound(AppError):
    status = 404


class Conflict(AppError):
    """The request is well formed but collides with the current state."""

    status = 409


class Forbidden(AppError):
    status = 403


class PreconditionFailed(AppError):
    """The client's If-Match no longer names the stored version."""

    status = 412

    def __init__(self, detail: str, current_version: int) -> None:
        super().__init__(detail)
        self.current_version = current_version


class PreconditionRequired(AppError):
    """The change needs If-Match with the ETag the client last read, and it sent none."""

    status = 428


class InvalidInput(AppError):
    """Semantically invalid input the schema could not catch (422)."""

    status = 422


class Unavailable(AppError):
    """The store could not be reached or kept losing races; safe to retry later."""

    status = 503

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
