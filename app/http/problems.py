"""RFC 9457 Problem Details: the one error shape of the API, and the handlers that make it."""

from __future__ import annotations

import logging
from datetime import datetime
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from app import errors
from app.http.etag import etag_for
from app.http.exceptions import ProblemException

PROBLEM_MEDIA_TYPE = "application/problem+json"
# Where the request middleware leaves the request id for handlers that run outside it.
REQUEST_ID_SCOPE_KEY = "orchestrator.request_id"
PROBLEM_TYPE_BASE = "https://bench-orchestrator.dev/problems/"

logger = logging.getLogger("app.http")


class Problem(BaseModel):
    """RFC 9457 Problem Details; some problems add members (below)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str = Field(description="the request's path")


class FieldError(BaseModel):
    location: list[str] = Field(description='where: ["body", "start"], ["query", "limit"]')
    message: str
    type: str


class ValidationProblem(Problem):
    """400 and 422: what was wrong, field by field (absent for a whole-request problem)."""

    errors: list[FieldError] | None = None


class ConflictingReservation(BaseModel):
    reservation_id: str
    start: datetime
    end: datetime
    user_id: str | None = Field(
        default=None, description="Who holds it (an extension's 409 names them)"
    )


class ConflictProblem(Problem):
    """409: what the request collided with."""

    conflicts: list[ConflictingReservation] | None = Field(
        None, description="the reservations holding the window asked for"
    )
    current_status: str | None = Field(None, description="the state that refused the request")
    allowed_transitions: list[str] | None = Field(
        None, description="what that state allows now ([] when nothing)"
    )
    lease_expired: bool | None = Field(None, description="the task's lease ran out")


def problem_response(
    request: Request | None,
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
    **extensions: Any,
) -> JSONResponse:
    """``instance`` is the request's path: from ``request``, or given where there is none
    yet (the middleware refusing a body before the app sees it)."""
    title = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + (slug or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.url.path
    elif instance is not None:
        body["instance"] = instance
    # pydantic's encoder, so instants in problems read exactly as in resources.
    body.update(to_jsonable_python(extensions))
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def app_error_response(request: Request, error: errors.AppError) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(error, errors.PreconditionFailed):
        headers["ETag"] = etag_for(error.current_version)
    elif isinstance(error, errors.Unavailable):
        headers["Retry-After"] = str(error.retry_after_s)
    return problem_response(
        request, error.status, error.detail, headers=headers or None, **error.extensions
    )


def _validation_errors(error: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {
            "location": [str(part) for part in item.get("loc", ())],
            "message": item.get("msg", ""),
            "type": item.get("type", ""),
        }
        for item in error.errors()
    ]


def _is_malformed(location: list[str]) -> bool:
    return bool(location) and (location[0] == "header" or location == ["query", "cursor"])


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def _allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route serves at this path: the router's own 405 names only the
    methods of the first route whose path matched, not all of them."""
    allowed: list[str] = []
    for method in _METHODS:
        probe = {**scope, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in app.router.routes):
            allowed.append(method)
    return allowed


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemException)
        return problem_response(
            request, exc.status, exc.detail, slug=exc.slug, headers=exc.headers, **exc.extensions
        )

    async def on_app_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.AppError)
        if exc.status >= 500:
            logger.warning("%s: %s", type(exc).__name__, exc.detail)
        return app_error_response(request, exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = _validation_errors(exc)
        # A body that is not JSON at all is malformed (400), not merely invalid (422).
        if any(problem["type"] == "json_invalid" for problem in problems):
            return problem_response(
                request, 400, "the request body is not valid JSON", errors=problems
            )
        # A header or cursor the service parses that is out of shape is malformed too
        # (http-contract.md, "Input limits"); the body and the filters are validated (422).
        malformed = [problem for problem in problems if _is_malformed(problem["location"])]
        if malformed:
            names = ", ".join(sorted({problem["location"][-1] for problem in malformed}))
            return problem_response(request, 400, f"malformed {names}", errors=malformed)
        return problem_response(
            request, 422, "the request does not match the schema", errors=problems
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(app, request.scope))
        return problem_response(request, exc.status_code, str(exc.detail), headers=headers)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # This handler runs outside the request middleware, whose context has ended:
        # the request id comes from the scope it left behind.
        logger.exception(
            "unhandled error",
            exc_info=exc,
            extra={"request_id": request.scope.get(REQUEST_ID_SCOPE_KEY, "-")},
        )
        return problem_response(request, 500, "an unexpected error occurred; it has been logged")

    app.add_exception_handler(ProblemException, on_problem)
    app.add_exception_handler(errors.AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
