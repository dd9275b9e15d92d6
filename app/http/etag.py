"""Strong ETags derived from a resource's stored version, and the precondition headers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request

from app.http.exceptions import ProblemException
from app.http.limits import MAX_PRECONDITION_HEADER
from app.versioning import MISSING, VersionExpectation

# Versions are counters: a longer number is not one of ours (and int() of 10,000 digits
# is refused by Python itself), so it simply matches nothing.
_MAX_VERSION_DIGITS = 18


def etag_for(version: int) -> str:
    return f'"{version}"'


def _parse_tags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def parse_if_match(header: str) -> VersionExpectation:
    tags = _parse_tags(header)
    if tags == ["*"]:
        return VersionExpectation(any_version=True, versions=frozenset())
    versions: set[int] = set()
    for tag in tags:
        if tag.startswith("W/"):
            continue  # If-Match uses strong comparison: a weak tag never matches
        value = tag.strip('"')
        if value.isdigit() and len(value) <= _MAX_VERSION_DIGITS:
            versions.add(int(value))
    return VersionExpectation(any_version=False, versions=frozenset(versions))


def if_none_match_hits(header: str | None, version: int) -> bool:
    """Weak comparison, as RFC 9110 asks for If-None-Match."""
    if header is None:
        return False
    tags = _parse_tags(header)
    if tags == ["*"]:
        return True
    current = str(version)
    return any(tag.removeprefix("W/").strip('"') == current for tag in tags)


def _bounded(name: str, value: str | None) -> str | None:
    if value is not None and len(value) > MAX_PRECONDITION_HEADER:
        raise ProblemException(
            400, f"{name} is longer than {MAX_PRECONDITION_HEADER} characters", slug="bad-request"
        )
    return value


async def optional_if_match(
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
) -> VersionExpectation | None:
    if_match = _bounded("If-Match", if_match)
    return None if if_match is None else parse_if_match(if_match)


async def required_if_match(
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
) -> VersionExpectation:
    """Without the header the change is refused (428), but by the service, once it knows
    the resource exists: an unknown resource is a 404 whatever the preconditions."""
    if_match = _bounded("If-Match", if_match)
    return MISSING if if_match is None else parse_if_match(if_match)


def if_none_match(request: Request) -> str | None:
    """The request's If-None-Match. Read from the request, not declared as a header
    parameter: a declared one costs a conditional GET about a tenth of its time. The
    routes that read it document it with ``CONDITIONAL_GET``."""
    return _bounded("If-None-Match", request.headers.get("if-none-match"))


# ``openapi_extra`` of the routes that read If-None-Match: the parameter as FastAPI would
# have declared it.
CONDITIONAL_GET: dict[str, Any] = {
    "parameters": [
        {
            "in": "header",
            "name": "If-None-Match",
            "required": False,
            "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "If-None-Match"},
        }
    ]
}


IfMatchDep = Annotated[VersionExpectation, Depends(required_if_match)]
OptionalIfMatchDep = Annotated[VersionExpectation | None, Depends(optional_if_match)]
