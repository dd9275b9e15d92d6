"""Archive sinks: gzip JSON Lines under ``table=<name>/dt=YYYY-MM-DD/``, never overwritten.

An object's name ends in a digest of the event ids it holds, and objects are only ever
created, never replaced (S3: ``If-None-Match: *``; files: a hard link, which fails if the
name exists). A batch delivered twice, after a crash before its checkpoint, finds its
objects already there with the very same content and leaves them alone; a different batch
always makes new objects.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

from botocore.exceptions import ClientError

from app.feed.events import ChangeEvent

# aioboto3 ships no type information.
S3Client: TypeAlias = Any

# S3 answers 409 when another conditional write of the same key is in flight; a retry then
# finds the object made (412) or makes it.
_S3_CONFLICT_RETRIES = 3


def partitions(events: Sequence[ChangeEvent]) -> dict[str, list[ChangeEvent]]:
    """Events by object key (relative to the sink's root), each list in feed order."""
    groups: dict[tuple[str, str], list[ChangeEvent]] = {}
    for event in events:
        day = event.at.date().isoformat()  # ``at`` is UTC
        groups.setdefault((event.table, day), []).append(event)
    return {object_key(table, day, group): group for (table, day), group in groups.items()}


def object_key(table: str, day: str, events: Sequence[ChangeEvent]) -> str:
    digest = hashlib.sha256("\n".join(event.event_id for event in events).encode()).hexdigest()
    first = min(event.at for event in events)
    # Time first, so a partition lists in roughly the order it was written.
    return f"table={table}/dt={day}/{first:%H%M%S%f}-{digest[:24]}.jsonl.gz"


def encode(events: Sequence[ChangeEvent]) -> bytes:
    lines = b"".join(
        json.dumps(event.to_json(), sort_keys=True, separators=(",", ":")).encode() + b"\n"
        for event in events
    )
    # mtime=0: the same events always make the same bytes.
    return gzip.compress(lines, mtime=0)


def decode(data: bytes) -> list[ChangeEvent]:
    return [
        ChangeEvent.from_json(json.loads(line))
        for line in gzip.decompress(data).splitlines()
        if line.strip()
    ]


class FileSink:
    """The archive layout in a local directory, for development."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def write(self, events: Sequence[ChangeEvent]) -> None:
        for key, group in partitions(events).items():
            await asyncio.to_thread(self._create, self.root / key, encode(group))

    async def close(self) -> None:
        return None

    @staticmethod
    def _create(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with temporary.open("wb") as file:
                file.write(data)
                file.flush()
                # On disk before the checkpoint says so, or a power cut loses the batch.
                os.fsync(file.fileno())
            try:
                os.link(temporary, path)  # fails if the name exists: never overwrites
            except FileExistsError:
                return  # delivered before (same ids, same bytes)
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        finally:
            temporary.unlink(missing_ok=True)


class S3Sink:
    def __init__(self, client: S3Client, bucket: str, prefix: str) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    async def write(self, events: Sequence[ChangeEvent]) -> None:
        for relative, group in partitions(events).items():
            await self._create(self.key(relative), encode(group))

    async def close(self) -> None:
        return None

    async def _create(self, key: str, data: bytes) -> None:
        for attempt in range(_S3_CONFLICT_RETRIES):
            try:
                await self._client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=data,
                    ContentType="application/x-ndjson",
                    ContentEncoding="gzip",
                    IfNoneMatch="*",
                )
                return
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code")
                if code == "PreconditionFailed":
                    return  # delivered before (same ids, same bytes)
                if code != "ConditionalRequestConflict" or attempt == _S3_CONFLICT_RETRIES - 1:
                    raise
