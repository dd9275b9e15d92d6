"""Fixtures of the change-feed tests: a store and its feed, on SQLite and on DynamoDB.

The feed is opened over connections of its own (a file for SQLite, moto over HTTP for
DynamoDB), as the exporter process has in production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from app.benches.service import BenchService, NewBench
from app.clock import ManualClock
from app.deps import reservation_service
from app.feed.events import ChangeEvent, ChangeFeed
from app.feed.factory import FeedSource, open_feed
from app.identity import Actor, Principal, Role
from app.reservations.domain import Window
from app.reservations.service import BookingRequest, ReservationService
from app.settings import Settings
from app.store.base import Store
from tests.conftest import START, store_settings

FEED_KINDS = ["sqlite-file", "dynamodb"]

ADMIN = Actor(Principal("root", Role.ADMIN), "req-admin")
ALICE = Actor(Principal("alice", Role.USER), "req-alice")
BOB = Actor(Principal("bob", Role.USER), "req-bob")


@pytest.fixture(params=FEED_KINDS)
def feed_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def feed_settings(
    feed_kind: str, tmp_path: Path, request: pytest.FixtureRequest, tokens_file: Path
) -> Settings:
    moto = request.getfixturevalue("moto_endpoint") if feed_kind == "dynamodb" else None
    return store_settings(feed_kind, tmp_path, moto, tokens_file)


@pytest.fixture
async def feed_store(feed_settings: Settings) -> AsyncIterator[Store]:
    from app.store.factory import open_store

    opened = await open_store(feed_settings)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def source(feed_settings: Settings, feed_store: Store) -> AsyncIterator[FeedSource]:
    # After feed_store: on DynamoDB the store creates the tables whose streams we read.
    async with open_feed(feed_settings) as opened:
        yield opened


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


def benches(store: Store, clock: ManualClock) -> BenchService:
    return BenchService(store, clock)


def reservations(store: Store, clock: ManualClock) -> ReservationService:
    return reservation_service(store, clock, Settings())


def new_bench(bench_id: str, *capabilities: str) -> NewBench:
    return NewBench(
        bench_id=bench_id,
        name=f"Bench {bench_id}",
        type="hil",
        capabilities=frozenset(capabilities),
        labels={"room": "b2"},
        heartbeat_interval_s=30,
    )


def booking(bench_id: str, start_h: float, hours: float, purpose: str = "soak") -> BookingRequest:
    start = START + timedelta(hours=start_h)
    return BookingRequest(
        window=Window(start, start + timedelta(hours=hours)), purpose=purpose, bench_id=bench_id
    )


async def read_all(
    feed: ChangeFeed, position: str | None = None, limit: int = 100
) -> tuple[list[ChangeEvent], str | None]:
    """Every event after ``position``, and the position after the last of them."""
    events: list[ChangeEvent] = []
    while True:
        batch = await feed.read(position, limit)
        events += batch.events
        if not batch.events and batch.position == position:
            return events, position
        position = batch.position


def entity_events(events: list[ChangeEvent], table: str) -> list[ChangeEvent]:
    """The events of one table's entity items (not DynamoDB's capability guard items)."""
    return [
        event
        for event in events
        if event.table == table and not str(event.key.get("sk", "")).startswith("CAP#")
    ]
