"""History retention (ORCH_HISTORY_TTL_DAYS): entries carry an expiry; reads skip expired ones."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from app.settings import Settings
from app.store.base import Store
from app.store.dynamodb.store import DynamoStore
from app.store.factory import open_store
from tests.support.factories import entry_for, make_bench, next_version


@pytest.fixture
async def retaining_store(settings: Settings) -> AsyncIterator[Store]:
    opened = await open_store(settings.model_copy(update={"history_ttl_days": 1}))
    try:
        yield opened
    finally:
        await opened.close()


async def test_expired_entries_are_not_read(retaining_store: Store) -> None:
    now = datetime.now(UTC)
    old = replace(
        make_bench("rig-1"), created_at=now - timedelta(days=2), updated_at=now - timedelta(days=2)
    )
    await retaining_store.benches.create(old, entry_for(old))
    recent = replace(next_version(old), updated_at=now - timedelta(hours=1))
    await retaining_store.benches.update(old, recent, entry_for(recent, "updated"))
    page = await retaining_store.history.find("bench", "rig-1", 10, None, now=now)
    assert [e.version for e in page.items] == [2]

    purged = await retaining_store.purge_expired(now)
    if isinstance(retaining_store, DynamoStore):
        assert purged == 0  # TTL deletes; moto never does
    else:
        assert purged >= 1  # the expired entry, and change events older than a day
        assert await retaining_store.purge_expired(now) == 0
    page = await retaining_store.history.find("bench", "rig-1", 10, None, now=now)
    assert [e.version for e in page.items] == [2]


async def test_without_retention_nothing_expires(store: Store) -> None:
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    old = replace(make_bench("rig-1"), created_at=long_ago, updated_at=long_ago)
    await store.benches.create(old, entry_for(old))
    assert (
        len((await store.history.find("bench", "rig-1", 10, None, now=datetime.now(UTC))).items)
        == 1
    )


@pytest.mark.parametrize("store_kind", ["dynamodb"], indirect=True)
async def test_dynamodb_history_items_carry_the_ttl_attribute(retaining_store: Store) -> None:
    assert isinstance(retaining_store, DynamoStore)
    bench = make_bench("rig-1")
    await retaining_store.benches.create(bench, entry_for(bench))
    item = await retaining_store.client.get_item(
        TableName=f"{retaining_store.table_prefix}History",
        Key={"entity": {"S": "bench#rig-1"}, "version": {"N": "1"}},
    )
    expected = (bench.updated_at + timedelta(days=1)).timestamp()
    assert int(item["Item"]["expires_at"]["N"]) == int(expected) + (expected % 1 > 0)
