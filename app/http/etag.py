"""Strong ETags derived from a resource's stored version, and the precondition headers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from app.http.exceptions import ProblemException
from app.versioning import VersionExpectation


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
        if value.isdigit():
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


def optional_if_match(
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
) -> VersionExpectation | None:
    return None if if_match is None else parse_if_match(if_match)


def required_if_match(
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
) -> VersionExpectation:
    if if_match is None:
        raise ProblemException(
            428,
            "this request must carry If-Match with the ETag you last read",
            slug="precondition-required",
        )
    return parse_if_match(if_match)


IfMatchDep = Annotated[VersionExpectation, Depends(required_if_match)]
OptionalIfMatchDep = Annotated[VersionExpectation | None, Depends(optional_if_match)]
IfNoneMatchHeader = Annotated[str | None, Header(alias="If-None-Match")]
