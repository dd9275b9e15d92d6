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


async def page_of(
    owner_exists: Callable[[], Awaitable[object]], fetch: Callable[[], Awaitable[Page[T]]]
) -> Page[T]:
    """A page of what belongs to one resource (its history, a bench's calendar), and the
    resource's 404 when it does not exist.

    Nothing is ever stored for a resource that does not exist, and resources are never
    deleted (retired, cancelled, finished): a page with items proves its owner exists.
    So the owner is read only when the page is empty, which costs one round trip less
    on every page that has something to show."""
    page = await fetch()
    if not page.items:
        await owner_exists()  # raises NotFound
    return page
