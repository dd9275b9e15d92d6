"""A Server-Sent Events parser, as the WHATWG HTML standard says a user agent reads an
``text/event-stream`` (9.2.6 "Interpreting an event stream"), fed the body in whatever
chunks it arrives in.

- The body is UTF-8 (a byte sequence split across chunks is kept for the next one; bad
  bytes become U+FFFD), with one leading byte order mark ignored.
- Lines end with CRLF, LF or CR, also when a CRLF is split across two chunks.
- ``:`` starts a comment (ignored: keep-alive); ``field: value`` drops one space after the
  colon; a line without a colon is a field with an empty value; unknown fields are ignored.
- ``data`` lines are joined with LF; ``event`` names the type (``message`` when none);
  ``id`` sets the last event ID (unless it holds a NUL), also on a message without data;
  ``retry`` (ASCII digits only) sets the reconnection time in milliseconds.
- A blank line dispatches the message: none when it had no ``data`` line. What is pending
  when the body ends is never dispatched (``SseParser`` simply keeps it).

The last event ID is the parser's, and outlives each message (a message without ``id``
leaves it as it was); seed a new parser with it after reconnecting
(``SseParser(last_event_id=...)``) so a message without ``id`` on the new connection does
not forget where to resume.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = ["ServerSentEvent", "SseParser"]

_EOL = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched message: ``event`` its type, ``data`` its data lines joined with LF,
    ``last_event_id`` the stream's last event ID once it was dispatched."""

    event: str
    data: str
    last_event_id: str


class SseParser:
    """``feed(chunk)`` returns the messages completed by that chunk, in order."""

    def __init__(self, last_event_id: str = "") -> None:
        self.last_event_id = last_event_id
        # The reconnection time the stream asked for (``retry:``), in milliseconds.
        self.retry_ms: int | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False
        self._pending = ""  # the start of a line whose end has not arrived
        self._after_cr = False  # the last chunk ended in CR: a leading LF belongs to it
        self._data: list[str] = []
        self._event = ""
        self._id = last_event_id

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix(_BOM)
        if self._after_cr:
            self._after_cr = False
            text = text.removeprefix("\n")
        out: list[ServerSentEvent] = []
        buffer = self._pending + text
        start = 0
        for end in _EOL.finditer(buffer):
            message = self._line(buffer[start : end.start()])
            if message is not None:
                out.append(message)
            start = end.end()
        self._pending = buffer[start:]
        self._after_cr = buffer.endswith("\r")
        return out

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        self.last_event_id = self._id
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerSentEvent(event or "message", "\n".join(data), self.last_event_id)
