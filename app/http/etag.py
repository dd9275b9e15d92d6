"""Strong ETags derived from a resource's stored version, and the precondition headers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

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


async def if_none_match_header(
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> str | None:
    return _bounded("If-None-Match", if_none_match)


IfMatchDep = Annotated[VersionExpectation, Depends(required_if_match)]
OptionalIfMatchDep = Annotated[VersionExpectation | None, Depends(optional_if_match)]
IfNoneMatchHeader = Annotated[str | None, Depends(if_none_match_header)]
