"""Single-resource responses: every one carries the strong ETag of the version it shows."""

from __future__ import annotations

from fastapi import Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.http.etag import etag_for, if_none_match_hits
from app.http.idempotency import REPLAYED_HEADER


def resource_response(
    body: BaseModel, version: int, *, status_code: int = 200, location: str | None = None
) -> JSONResponse:
    headers = {"ETag": etag_for(version)}
    if location is not None:
        headers["Location"] = location
    # pydantic writes the JSON itself: no dict of Python values for json.dumps to walk.
    return json_bytes_response(
        body.model_dump_json().encode(), status_code=status_code, headers=headers
    )


class _JsonBytes(JSONResponse):
    """A JSON response whose body is already encoded."""

    def render(self, content: object) -> bytes:
        assert isinstance(content, bytes)
        return content


def json_bytes_response(
    body: bytes, *, status_code: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    """``body``, JSON already encoded (by pydantic), as the response."""
    return _JsonBytes(body, status_code=status_code, headers=headers)


def created_response(
    body: BaseModel, version: int, location: str, *, replayed: bool
) -> JSONResponse:
    """201 for a create, and the same 201 when an Idempotency-Key replays it."""
    response = resource_response(body, version, status_code=201, location=location)
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return response


def conditional_get(body: BaseModel, version: int, if_none_match: str | None) -> Response:
    """200 with the resource, or 304 with no body when the client's copy is current."""
    if if_none_match_hits(if_none_match, version):
        return Response(status_code=304, headers={"ETag": etag_for(version)})
    return resource_response(body, version)
