"""Builds the feed of the configured store and the checkpoints beside it, from settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from app.aws import local_credentials
from app.feed.checkpoints import CheckpointStore
from app.feed.events import ChangeFeed
from app.settings import Settings
from app.store.dynamodb.tables import FEED_CHECKPOINTS, create_tables


@dataclass(frozen=True, slots=True)
class FeedSource:
    feed: ChangeFeed
    checkpoints: CheckpointStore


@asynccontextmanager
async def open_feed(settings: Settings) -> AsyncIterator[FeedSource]:
    """The store's change feed over connections of its own, as a separate process has."""
    if settings.store == "dynamodb":
        async with _dynamodb_feed(settings) as source:
            yield source
        return
    from app.feed.checkpoints import SqliteCheckpoints
    from app.feed.sqlite_outbox import SqliteOutboxFeed
    from app.store.sqlite.database import SqliteDatabase

    if settings.sqlite_path == ":memory:":
        # Another connection to ":memory:" is another, empty database.
        raise ValueError("an in-memory SQLite store has no feed another process can read")
    db = await SqliteDatabase.open(settings.sqlite_path)
    try:
        yield FeedSource(SqliteOutboxFeed(db), SqliteCheckpoints(db))
    finally:
        await db.close()


@asynccontextmanager
async def _dynamodb_feed(settings: Settings) -> AsyncIterator[FeedSource]:
    import aioboto3

    from app.feed.checkpoints import DynamoCheckpoints
    from app.feed.dynamodb_streams import DynamoStreamsFeed

    session = aioboto3.Session(
        region_name=settings.aws_region, **local_credentials(settings.dynamodb_endpoint_url)
    )
    endpoint = settings.dynamodb_endpoint_url
    async with (
        session.client("dynamodb", endpoint_url=endpoint) as dynamodb,
        session.client("dynamodbstreams", endpoint_url=endpoint) as streams,
    ):
        if settings.create_tables:
            await create_tables(dynamodb, settings.table_prefix)
        yield FeedSource(
            DynamoStreamsFeed(dynamodb, streams, settings.table_prefix),
            DynamoCheckpoints(dynamodb, FEED_CHECKPOINTS.table_name(settings.table_prefix)),
        )


async def ensure_local_bucket(client: Any, bucket: str) -> None:
    """Local stacks only (like create-tables): make the archive bucket if it is missing."""
    try:
        await client.head_bucket(Bucket=bucket)
    except ClientError:
        await client.create_bucket(Bucket=bucket)
