"""History retention on reads is decided by the ``now`` handed in, not the wall clock, so
it follows the injectable clock on every adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from app.settings import Settings
from app.store.base import Store
from app.store.factory import open_store
from tests.conftest import START
from tests.support.factories import entry_for, make_bench


@pytest.fixture
async def retaining_store(settings: Settings) -> AsyncIterator[Store]:
    opened = await open_store(settings.model_copy(update={"history_ttl_days": 1}))
    try:
        yield opened
    finally:
        await opened.close()


async def test_an_entry_is_read_until_its_retention_ends_at_the_given_now(
    retaining_store: Store,
) -> None:
    bench = make_bench("rig-1")  # written at START, so it expires at START + 1 day
    await retaining_store.benches.create(bench, entry_for(bench))

    async def versions_at(moment_after_start: timedelta) -> list[int]:
        page = await retaining_store.history.find(
            "bench", "rig-1", 10, None, now=START + moment_after_start
        )
        return [entry.version for entry in page.items]

    assert await versions_at(timedelta(hours=23, minutes=59)) == [1]
    assert await versions_at(timedelta(days=1, minutes=1)) == []
    # The same store, asked about an earlier moment again: nothing was deleted by reading.
    assert await versions_at(timedelta(hours=1)) == [1]
