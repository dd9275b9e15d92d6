"""Filtering a store's pages by what only the clock can tell (liveness, derived status)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from app.store.base import Page

T = TypeVar("T")


async def filtered_page(
    fetch: Callable[[int, str | None], Awaitable[Page[T]]],
    keep: Callable[[T], bool],
    page_key: Callable[[T], str],
    limit: int,
    after: str | None,
) -> Page[T]:
    """Up to ``limit`` items that ``keep`` admits, reading the store's pages in order.

    The next page starts after the last item kept, so a client paging with the cursor
    sees each matching item once.
    """
    found: list[T] = []
    while True:
        page = await fetch(limit, after)
        for item in page.items:
            if keep(item):
                found.append(item)
                if len(found) == limit:
                    return Page(found, page_key(item))
        if page.next_after is None:
            return Page(found, None)
        after = page.next_after
