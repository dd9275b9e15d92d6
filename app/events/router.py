"""HTTP for the event log: a live Server-Sent Events stream, or pages of JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import StreamingResponse

from app.deps import EventServiceDep
from app.errors import InvalidInput
from app.events.auth import Reader
from app.events.domain import EventFilter, invalid_glob
from app.events.schemas import EventOut, EventPageOut
from app.events.service import Idle
from app.http.query_params import KnownQueryRoute
from app.http.responses import json_bytes_response

router = APIRouter(prefix="/v1/events", tags=["events"], route_class=KnownQueryRoute)

# How long a client waits before reconnecting after the stream ends (the SSE `retry:`).
RECONNECT_MS = 3000
Position = Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[0-9a-f-]+$")]


def _filter(types: list[str], bench_id: str | None, user_id: str | None, me: str) -> EventFilter:
    for pattern in types:
        reason = invalid_glob(pattern)
        if reason is not None:
            raise InvalidInput(reason)
    return EventFilter(tuple(types), bench_id, me if user_id == "me" else user_id)


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
    wanted = _filter(type, bench_id, user_id, principal.subject)
    if format == "json":
        page = await service.page(after, wanted, limit)
        body = EventPageOut(
            items=[EventOut.of(logged) for logged in page.events], next_after=page.next_after
        )
        return json_bytes_response(body.model_dump_json().encode())
    start = await service.start(last_event_id or after)

    async def stream() -> AsyncIterator[bytes]:
        # The start position as the first id: a client that reconnects before any event
        # arrived still resumes from here, not from whatever is newest by then.
        yield f"retry: {RECONNECT_MS}\n: stream open\nid: {start}\n\n".encode()
        async for item in service.follow(start, wanted):
            if isinstance(item, Idle):
                yield b": keep-alive\n\n"
                continue
            data = EventOut.of(item).model_dump_json()
            yield f"id: {item.position}\nevent: {item.event.type}\ndata: {data}\n\n".encode()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        # No proxy buffering and no caching: each message is meant to arrive at once.
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
