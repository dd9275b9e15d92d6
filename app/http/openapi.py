"""The OpenAPI document: each operation lists the errors it can really answer, each with
the Problem schema, so a generated client gets typed errors.

Most of an operation's errors follow from its shape, and are derived here once: a body
can be malformed, too large or not JSON; a path parameter names something that may not
exist; If-Match can be stale or missing; a bearer token can be wrong. The errors of its
rules (403, 409) are declared on the route, FastAPI's way: ``responses={409: {"description":
...}}``; this module gives them the Problem schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic.json_schema import models_json_schema

from app.http.problems import PROBLEM_MEDIA_TYPE, ConflictProblem, Problem, ValidationProblem

_HEADER = {"schema": {"type": "string"}}
_RETRY_AFTER = {"Retry-After": {**_HEADER, "description": "seconds to wait before retrying"}}
_ETAG = {"ETag": {**_HEADER, "description": "the resource's version, for If-Match"}}

# What each status means for any operation that can answer it.
_MEANING: dict[int, str] = {
    400: "Malformed request: bad JSON, an unknown query parameter, a bad cursor or header",
    401: "Missing, unknown or expired bearer token",
    403: "Authenticated, but not allowed to do this",
    404: "Unknown resource",
    409: "Conflicts with the current state",
    412: "If-Match names a version that is no longer current; ETag has the current one",
    413: "The body is too large",
    415: "The body is not JSON",
    422: "The request does not match the schema",
    428: "If-Match is required",
    429: "Rate limited; retry after Retry-After seconds",
    503: "The store is unavailable; retry after Retry-After seconds",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {**_HEADER, "description": "the Bearer challenge"}},
    412: _ETAG,
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}

TAGS: list[dict[str, str]] = [
    {"name": "benches", "description": "Test benches: registration, configuration, liveness"},
    {"name": "reservations", "description": "Booking a bench for a time window"},
    {"name": "executions", "description": "Test runs of a commit on a reserved bench"},
    {"name": "tasks", "description": "The steps of an execution, leased to a bench's agent"},
    {"name": "events", "description": "What changed, as a live stream or pages of JSON"},
    {"name": "webhooks", "description": "Events delivered to your URL, signed"},
    {"name": "quotas", "description": "How much of the lab a user or a team may hold, and uses"},
    {"name": "health", "description": "Liveness, readiness and metrics of the service"},
]


# Problems with members of their own, by status; the others are plain Problems.
_PROBLEM_MODELS: dict[int, type[Problem]] = {
    400: ValidationProblem,
    409: ConflictProblem,
    422: ValidationProblem,
}
_REF = "#/components/schemas/{model}"


def _problem_schemas() -> dict[str, Any]:
    models: list[type[Problem]] = [Problem, *_PROBLEM_MODELS.values()]
    _, schemas = models_json_schema(
        [(model, "serialization") for model in models], ref_template=_REF
    )
    return dict(schemas["$defs"])


def _problem(status: int, description: str | None = None) -> dict[str, Any]:
    model = _PROBLEM_MODELS.get(status, Problem)
    response: dict[str, Any] = {
        "description": description or _MEANING[status],
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": _REF.format(model=model.__name__)}}},
    }
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def _derived_errors(method: str, operation: dict[str, Any]) -> set[int]:
    parameters = operation.get("parameters", [])
    headers = {p["name"] for p in parameters if p["in"] == "header"}
    # Unknown query parameters are refused everywhere (query_params.py).
    found = {400}
    if parameters or "requestBody" in operation:
        found.add(422)
    if "requestBody" in operation:
        found |= {413, 415}
    if any(p["in"] == "path" for p in parameters):
        found.add(404)
    if operation.get("security"):
        found |= {401, 429, 503}
    if "If-Match" in headers:
        found.add(412)
        if method in ("patch", "put", "delete"):
            found.add(428)
    if "Idempotency-Key" in headers:
        found.add(409)  # the same key still in flight
    return found


def _document_operation(
    method: str, operation: dict[str, Any], schemas: dict[str, dict[str, Any]]
) -> None:
    responses: dict[str, Any] = operation["responses"]
    declared = {int(code): r for code, r in responses.items() if int(code) >= 400}
    declared.pop(422, None)  # FastAPI's own, with its error shape: ours is a Problem
    for status in sorted(_derived_errors(method, operation) | set(declared)):
        responses[str(status)] = _problem(status, declared.get(status, {}).get("description"))
    for code in ("200", "201"):
        if code in responses and _is_versioned(responses[code], schemas):
            headers = responses[code].setdefault("headers", {})
            headers.update(_ETAG)
            if code == "201":
                headers["Location"] = {**_HEADER, "description": "where the new resource is"}
    if any(p["name"] == "If-None-Match" for p in operation.get("parameters", [])):
        responses["304"] = {
            "description": "Not modified: If-None-Match names the current ETag",
            "headers": _ETAG,
        }
    operation["responses"] = dict(sorted(responses.items()))


def _is_versioned(response: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> bool:
    """A stored resource (it has a ``version``) is answered with its ETag (the contract)."""
    ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    if ref is None:
        return False
    schema = schemas[ref.removeprefix("#/components/schemas/")]
    return "version" in schema.get("properties", {})


# Every operation under /v1 authenticates (``auth.current_principal``, in each route's
# role check; the authorization matrix test sends every one without a token).
AUTHENTICATED_PREFIX = "/v1/"
BEARER_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "A token from the tokens file, or a JWT of a trusted issuer",
}


def install_openapi(app: FastAPI, *, description: str) -> None:
    """Post-process FastAPI's document once, when it is first asked for."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            document["info"]["description"] = description
            document["info"]["contact"] = {"name": "Bench Orchestrator maintainers"}
            # Relative: "Try it out" calls the server that served the console.
            document["servers"] = [{"url": "/", "description": "this server"}]
            document["tags"] = TAGS
            components = document.setdefault("components", {})
            components.setdefault("schemas", {}).update(_problem_schemas())
            components["securitySchemes"] = {"bearer": BEARER_SCHEME}
            for path, item in document["paths"].items():
                for method, operation in item.items():
                    if path.startswith(AUTHENTICATED_PREFIX):
                        operation["security"] = [{"bearer": []}]
                    _document_operation(method, operation, components["schemas"])
            # FastAPI's validation error shapes: every 422 here is a Problem.
            for unused in ("HTTPValidationError", "ValidationError"):
                components["schemas"].pop(unused, None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
