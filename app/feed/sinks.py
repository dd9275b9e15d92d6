"""Where the exporter writes: chosen by the URL of ``--sink``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from app.aws import local_credentials
from app.feed.events import ChangeEvent


class Sink(Protocol):
    async def write(self, events: Sequence[ChangeEvent]) -> None:
        """Deliver every event, or raise. Called again with the same events after a crash."""
        ...

    async def close(self) -> None: ...


SINK_SCHEMES = ("file://", "s3://", "postgresql://", "postgres://")


def sink_label(url: str) -> str:
    """The URL without credentials: the default checkpoint name, and safe to print."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


@asynccontextmanager
async def open_sink(
    url: str, *, aws_region: str = "us-east-1", s3_endpoint_url: str | None = None
) -> AsyncIterator[Sink]:
    if url.startswith("file://"):
        # file://./var/archive is relative, file:///srv/archive absolute.
        from app.feed.archive import FileSink

        yield FileSink(Path(url.removeprefix("file://")))
        return
    if url.startswith("s3://"):
        import aioboto3

        from app.feed.archive import S3Sink

        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError(f"no bucket in {url!r}: use s3://bucket/prefix")
        session = aioboto3.Session(region_name=aws_region, **local_credentials(s3_endpoint_url))
        async with session.client("s3", endpoint_url=s3_endpoint_url) as client:
            if s3_endpoint_url is not None:
                from app.feed.factory import ensure_local_bucket

                # A local stack (moto, MinIO) starts empty; on AWS the bucket is
                # infrastructure (infra/) and the exporter may not create buckets.
                await ensure_local_bucket(client, parts.netloc)
            yield S3Sink(client, parts.netloc, parts.path)
        return
    if url.startswith(("postgresql://", "postgres://")):
        from app.feed.postgres import PostgresSink

        sink = await PostgresSink.open(url)
        try:
            yield sink
        finally:
            await sink.close()
        return
    raise ValueError(f"unknown sink {sink_label(url)!r}: use one of {', '.join(SINK_SCHEMES)}")
