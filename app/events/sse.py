"""The live event stream as Server-Sent Events: one framing for every route that serves it
(``GET /v1/events`` with a bearer token, ``GET /ui/events`` with the dashboard's session)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from fastapi.responses import StreamingResponse

from app.errors import InvalidInput
from app.events.domain import EventFilter, invalid_glob
from app.events.schemas import EventOut
from app.events.service import EventService, Idle

# How long a client waits before reconnecting after the stream ends (the SSE `retry:`).
RECONNECT_MS = 3000


def event_filter(
    types: Sequence[str], bench_id: str | None, user_id: str | None, me: str
) -> EventFilter:
    """The filter the query asks for; ``user_id=me`` is the caller. A type glob that
    matches no event type is a 422."""
    for pattern in types:
        reason = invalid_glob(pattern)
        if reason is not None:
            raise InvalidInput(reason)
    return EventFilter(tuple(types), bench_id, me if user_id == "me" else user_id)


async def event_stream(
    service: EventService, after: str | None, wanted: EventFilter
) -> StreamingResponse:
    """The stream from after ``after`` (a 410 now, before it begins, when the log no
    longer keeps that position), or from the newest event."""
    start = await service.start(after)

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
