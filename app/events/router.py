"""HTTP for the event log: a live Server-Sent Events stream, or pages of JSON."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response

from app.deps import EventServiceDep
from app.events.auth import Reader
from app.events.schemas import EventOut, EventPageOut
from app.events.sse import event_filter, event_stream
from app.http.query_params import KnownQueryRoute
from app.http.responses import json_bytes_response

router = APIRouter(prefix="/v1/events", tags=["events"], route_class=KnownQueryRoute)

Position = Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[0-9a-f-]+$")]


@router.get(
    "",
    operation_id="list_events",
    response_model=EventPageOut,
    responses={
        200: {
            "description": "With `format=json`: a page of events. Otherwise a"
            " `text/event-stream`: one message per event (`id:` its position, `event:` its"
            " type, `data:` the event as in the page), and a comment line when idle.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        410: {"description": "The position is older than the log keeps: start afresh"},
        422: {"description": "A type filter matches no event type"},
    },
)
async def events(
    service: EventServiceDep,
    principal: Reader,
    type: Annotated[list[str], Query(max_length=20, description="Type or glob, repeatable")] = [],  # noqa: B006
    bench_id: Annotated[str | None, Query(max_length=64)] = None,
    user_id: Annotated[
        str | None, Query(max_length=128, description="A subject, or `me` for the caller")
    ] = None,
    after: Position | None = None,
    format: Literal["sse", "json"] = "sse",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> Response:
    """The event log after a position, live (Server-Sent Events) or as JSON pages.

    The stream starts at the newest event, or after `Last-Event-ID` (or `after`) so that
    a client that reconnects misses nothing the log still keeps. Pages (`format=json`)
    start at the oldest kept event unless `after` says where."""
    wanted = event_filter(type, bench_id, user_id, principal.subject)
    if format == "json":
        page = await service.page(after, wanted, limit)
        body = EventPageOut(
            items=[EventOut.of(logged) for logged in page.events], next_after=page.next_after
        )
        return json_bytes_response(body.model_dump_json().encode())
    return await event_stream(service, last_event_id or after, wanted)
