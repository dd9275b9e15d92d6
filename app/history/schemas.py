from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi import Response
from pydantic import BaseModel

from app.history.domain import HistoryEntry
from app.http.pagination import Pager, render_page
from app.store.base import Page


class HistoryEntryOut(BaseModel):
    version: int
    at: datetime
    actor: str
    request_id: str
    action: str
    changes: dict[str, Any]

    @classmethod
    def of(cls, entry: HistoryEntry) -> HistoryEntryOut:
        return cls(
            version=entry.version,
            at=entry.at,
            actor=entry.actor,
            request_id=entry.request_id,
            action=entry.action,
            changes=entry.changes,
        )


async def history_page(
    pager: Pager,
    scope: str,
    load: Callable[[int, int | None], Awaitable[Page[HistoryEntry]]],
) -> Response:
    """One page of a resource's history, oldest first; the cursor carries the last version."""
    after = pager.start_after(scope, {})
    page = await load(pager.limit, None if after is None else int(after))
    return render_page(
        page.items, HistoryEntryOut.of, pager.next_cursor(scope, {}, page.next_after)
    )
