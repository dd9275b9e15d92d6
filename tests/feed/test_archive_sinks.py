"""Archive sinks: gzip JSON Lines in table=/dt= partitions, objects never overwritten."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioboto3
import pytest

from app.clock import ManualClock
from app.feed.archive import FileSink, S3Sink, decode, partitions
from app.feed.events import ChangeEvent
from app.feed.exporter import Exporter
from app.feed.factory import FeedSource
from app.feed.sinks import open_sink
from app.store.base import Store
from tests.feed.conftest import ADMIN, ALICE, benches, booking, new_bench, read_all, reservations

LAYOUT = re.compile(r"^table=([a-z_]+)/dt=(\d{4}-\d{2}-\d{2})/[0-9]+-[0-9a-f]{24}\.jsonl\.gz$")


@pytest.fixture
async def s3(moto_endpoint: str) -> AsyncIterator[Any]:
    session = aioboto3.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    async with session.client("s3", endpoint_url=moto_endpoint) as client:
        yield client


@pytest.fixture
async def bucket(s3: Any) -> str:
    name = f"feed-{uuid.uuid4().hex[:12]}"
    await s3.create_bucket(Bucket=name)
    return name


def file_objects(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file()
    }


async def s3_objects(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix + "/"):
        for entry in page.get("Contents", []):
            body = await s3.get_object(Bucket=bucket, Key=entry["Key"])
            found[entry["Key"].removeprefix(prefix + "/")] = await body["Body"].read()
    return found


def check_layout(objects: dict[str, bytes]) -> list[ChangeEvent]:
    """Every object in the layout, holding only its partition's events; all of them."""
    events: list[ChangeEvent] = []
    for key, data in objects.items():
        match = LAYOUT.match(key)
        assert match, key
        table, day = match.groups()
        held = decode(data)
        assert held
        assert {(event.table, event.at.date().isoformat()) for event in held} == {(table, day)}
        events += held
    return events


async def make_changes(store: Store, clock: ManualClock, tag: str) -> None:
    await benches(store, clock).create(new_bench(f"rig-{tag}", "can-bus"), ADMIN)
    await reservations(store, clock).book(booking(f"rig-{tag}", 1, 2), ALICE, None)


async def test_file_sink_layout_and_a_second_run_adds_new_objects(
    feed_store: Store, source: FeedSource, clock: ManualClock, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    await make_changes(feed_store, clock, "a")
    first = await Exporter(source.feed, source.checkpoints, FileSink(root), name="files").run()
    after_first = file_objects(root)
    delivered = check_layout(after_first)
    everything, _ = await read_all(source.feed)
    assert sorted(e.event_id for e in delivered) == sorted(e.event_id for e in everything)
    assert first.events == len(everything)

    await make_changes(feed_store, clock, "b")
    second = await Exporter(source.feed, source.checkpoints, FileSink(root), name="files").run()

    after_second = file_objects(root)
    assert second.events > 0
    # Old objects are untouched, new events went into new objects only.
    assert {key: after_second[key] for key in after_first} == after_first
    added = check_layout({k: v for k, v in after_second.items() if k not in after_first})
    assert {e.event_id for e in added}.isdisjoint(e.event_id for e in delivered)
    assert len(added) == second.events


async def test_s3_sink_layout_and_a_second_run_adds_new_objects(
    feed_store: Store,
    source: FeedSource,
    clock: ManualClock,
    moto_endpoint: str,
    s3: Any,
    bucket: str,
) -> None:
    url = f"s3://{bucket}/lab/changes"
    await make_changes(feed_store, clock, "a")
    async with open_sink(url, s3_endpoint_url=moto_endpoint) as sink:
        await Exporter(source.feed, source.checkpoints, sink, name="s3").run()
    after_first = await s3_objects(s3, bucket, "lab/changes")
    delivered = check_layout(after_first)
    everything, _ = await read_all(source.feed)
    assert sorted(e.event_id for e in delivered) == sorted(e.event_id for e in everything)

    await make_changes(feed_store, clock, "b")
    async with open_sink(url, s3_endpoint_url=moto_endpoint) as sink:
        second = await Exporter(source.feed, source.checkpoints, sink, name="s3").run()

    after_second = await s3_objects(s3, bucket, "lab/changes")
    assert {key: after_second[key] for key in after_first} == after_first
    added = check_layout({k: v for k, v in after_second.items() if k not in after_first})
    assert len(added) == second.events > 0


async def test_sinks_never_overwrite_an_object(
    feed_store: Store, source: FeedSource, clock: ManualClock, tmp_path: Path, s3: Any, bucket: str
) -> None:
    await make_changes(feed_store, clock, "a")
    events, _ = await read_all(source.feed)
    keys = list(partitions(events))
    # Something else already sits at the first key (it cannot happen by accident: the
    # name holds a digest of the event ids): the sink must leave it as it is.
    squatter = b"not ours"
    root = tmp_path / "archive"
    (root / keys[0]).parent.mkdir(parents=True)
    (root / keys[0]).write_bytes(squatter)
    await s3.put_object(Bucket=bucket, Key=f"p/{keys[0]}", Body=squatter)

    for _ in range(2):  # and the same batch twice is the same objects, once
        await FileSink(root).write(events)
        await S3Sink(s3, bucket, "p").write(events)

    files = file_objects(root)
    stored = await s3_objects(s3, bucket, "p")
    assert set(files) == set(stored) == set(keys)
    assert files[keys[0]] == stored[keys[0]] == squatter
    assert sorted(e.event_id for e in check_layout({k: files[k] for k in keys[1:]})) == sorted(
        e.event_id for key in keys[1:] for e in partitions(events)[key]
    )


async def test_the_exporter_reports_delivered_events_and_lag(
    feed_store: Store, source: FeedSource, clock: ManualClock, tmp_path: Path
) -> None:
    await make_changes(feed_store, clock, "m")
    seen: list[tuple[int, float]] = []
    stats = await Exporter(
        source.feed,
        source.checkpoints,
        FileSink(tmp_path / "archive"),
        name="metered",
        batch_size=2,
        on_batch=lambda events, lag: seen.append((events, lag)),
    ).run()
    assert sum(events for events, _ in seen) == stats.events > 0
    assert all(lag >= 0 for _, lag in seen)
    assert seen[-1] == (0, 0.0)  # caught up
    assert len([events for events, _ in seen if events]) == stats.batches


async def test_on_a_local_stack_the_archive_bucket_is_made_when_missing(
    moto_endpoint: str, source: FeedSource, feed_store: Store, clock: ManualClock
) -> None:
    bucket = f"fresh-{uuid.uuid4().hex[:10]}"
    await make_changes(feed_store, clock, "z")
    async with open_sink(f"s3://{bucket}/changes", s3_endpoint_url=moto_endpoint) as sink:
        stats = await Exporter(source.feed, source.checkpoints, sink, name=bucket).run()
    assert stats.events > 0
    session = aioboto3.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    async with session.client("s3", endpoint_url=moto_endpoint) as s3:
        listed = await s3.list_objects_v2(Bucket=bucket)
    assert listed["KeyCount"] > 0
