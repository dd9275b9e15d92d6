"""Reading a Server-Sent Events stream in tests, message by message."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Message:
    id: str | None
    event: str | None
    data: str
    comments: tuple[str, ...] = ()

    @property
    def json(self) -> Any:
        return json.loads(self.data)


async def messages(response: httpx.Response) -> AsyncIterator[Message]:
    """Messages as they arrive; a message of comments only is yielded too (keep-alive)."""
    fields: dict[str, list[str]] = {}
    comments: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if fields or comments:
                ids, events = fields.get("id", []), fields.get("event", [])
                yield Message(
                    id=ids[-1] if ids else None,
                    event=events[-1] if events else None,
                    data="\n".join(fields.get("data", [])),
                    comments=tuple(comments),
                )
            fields, comments = {}, []
            continue
        if line.startswith(":"):
            comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value.removeprefix(" "))
