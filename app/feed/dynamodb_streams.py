"""The DynamoDB source of the change feed: DynamoDB Streams, every shard, parents first.

Each read starts from the checkpointed position: per table, the stream it belongs to and,
per shard, the last sequence number delivered or ``END`` once a closed shard is read out.
A child shard is read only after its parent is ``END`` (or trimmed from the listing), so
the changes of one item come out in the order they were made.

Shard iterators are asked for afresh on every read rather than kept between reads: they
expire after 15 minutes in DynamoDB, and moto's server swaps a table's shard object when it
rolls a cancelled transaction back, which strands any iterator kept across requests.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeAlias

from boto3.dynamodb.types import Binary, TypeDeserializer
from botocore.exceptions import ClientError

from app.feed.events import ChangeEvent, ChangeKind, FeedBatch
from app.store.dynamodb.tables import (
    DELIVERIES,
    EVENTS,
    FEED_CHECKPOINTS,
    IDEMPOTENCY,
    LEDGERS,
    TABLES,
    WEBHOOKS,
    DynamoClient,
    TableSpec,
)

log = logging.getLogger(__name__)

# aioboto3 ships no type information: the dynamodbstreams client is Any as well.
StreamsClient: TypeAlias = Any

DONE = "END"
# GetRecords returns at most 1,000 records per call.
_MAX_RECORDS_PER_CALL = 1000
# A closed shard may answer empty pages before its end: follow it this far in one read.
_CLOSED_SHARD_EMPTY_PAGES = 10
# DescribeStream is rate-limited: list shards again only this often, or when one closes.
_SHARD_LISTING_TTL_S = 30.0
_KINDS: dict[str, ChangeKind] = {"INSERT": "insert", "MODIFY": "modify", "REMOVE": "remove"}
_DESERIALIZER = TypeDeserializer()


def streamed_tables(tables: Sequence[TableSpec] = TABLES) -> tuple[TableSpec, ...]:
    """Every table but request bookkeeping (idempotency keys, the quota holders' ledgers:
    each booking rewrites its holder's whole ledger, and the reservations hold the same
    windows), the checkpoints, and the webhook side: subscriptions hold signing secrets,
    deliveries and the event log are the service's own delivery machinery (the SQLite
    outbox leaves them out as well)."""
    excluded = {
        IDEMPOTENCY.name,
        LEDGERS.name,
        FEED_CHECKPOINTS.name,
        WEBHOOKS.name,
        DELIVERIES.name,
        EVENTS.name,
    }
    return tuple(spec for spec in tables if spec.name not in excluded)


def logical_name(spec_name: str) -> str:
    """The SQLite store's name of a table: BenchCalendar -> bench_calendar."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", spec_name).lower()


@dataclass(frozen=True, slots=True)
class Shard:
    shard_id: str
    parent_id: str | None
    closed: bool


def ready_shards(shards: Sequence[Shard], progress: Mapping[str, str]) -> list[Shard]:
    """The shards to read now: not read out, and whose parent is read out or trimmed."""
    listed = {shard.shard_id for shard in shards}
    return [
        shard
        for shard in shards
        if progress.get(shard.shard_id) != DONE
        and (
            shard.parent_id is None
            or shard.parent_id not in listed
            or progress.get(shard.parent_id) == DONE
        )
    ]


def plain_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item in attribute-value form ({"N": "1"}) as plain JSON values."""
    return {name: _plain(_DESERIALIZER.deserialize(value)) for name, value in item.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Binary):
        return base64.b64encode(value.value).decode("ascii")
    if isinstance(value, set | frozenset):
        # A set is all strings, all numbers or all binaries: sortable, and JSON has no sets.
        return sorted(_plain(member) for member in value)
    if isinstance(value, dict):
        return {key: _plain(member) for key, member in value.items()}
    if isinstance(value, list):
        return [_plain(member) for member in value]
    return value


def record_event(record: Mapping[str, Any], table: str) -> ChangeEvent:
    data = record["dynamodb"]
    created = data.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        at = created.astimezone(UTC)
    elif created is not None:
        at = datetime.fromtimestamp(float(created), UTC)
    else:
        at = datetime.now(UTC)
    old, new = data.get("OldImage"), data.get("NewImage")
    return ChangeEvent(
        event_id=str(record["eventID"]),
        table=table,
        key=plain_item(data["Keys"]),
        kind=_KINDS[record["eventName"]],
        old_image=None if old is None else plain_item(old),
        new_image=None if new is None else plain_item(new),
        at=at,
        seq=int(data["SequenceNumber"]),
    )


class DynamoStreamsFeed:
    def __init__(
        self,
        dynamodb: DynamoClient,
        streams: StreamsClient,
        table_prefix: str,
        tables: Sequence[TableSpec] | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dynamodb = dynamodb
        self._streams = streams
        self._prefix = table_prefix
        self._tables = tuple(streamed_tables() if tables is None else tables)
        if not self._tables:
            raise ValueError("no tables to read the streams of")
        self._monotonic = monotonic
        self._stream_arns: dict[str, str] = {}
        self._listings: dict[str, tuple[float, list[Shard]]] = {}
        self._turn = 0

    async def read(self, position: str | None, limit: int) -> FeedBatch:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        state = _parse(position)
        # Start at another table each read, so one busy table cannot starve the others.
        first = self._turn % len(self._tables)
        self._turn += 1
        events: list[ChangeEvent] = []
        next_state: dict[str, dict[str, Any]] = {}
        for spec in self._tables[first:] + self._tables[:first]:
            table = logical_name(spec.name)
            previous = state.get(table)
            if len(events) >= limit:
                if previous is not None:
                    next_state[table] = previous
                continue
            arn = await self._stream_arn(spec)
            if arn is None:
                if previous is not None:
                    next_state[table] = previous
                continue
            # A new stream (disabled and enabled again) starts over: its shards are new.
            progress: dict[str, str] = {}
            if previous is not None and previous.get("stream") == arn:
                progress = dict(previous.get("shards", {}))
            events += await self._read_stream(arn, table, progress, limit - len(events))
            next_state[table] = {"stream": arn, "shards": progress}
        return FeedBatch(events, json.dumps(next_state, sort_keys=True, separators=(",", ":")))

    async def _read_stream(
        self, arn: str, table: str, progress: dict[str, str], limit: int
    ) -> list[ChangeEvent]:
        shards = await self._shards(arn)
        listed = {shard.shard_id for shard in shards}
        for shard_id in list(progress):
            if shard_id not in listed:
                del progress[shard_id]  # trimmed by retention: nothing left to read there
        events: list[ChangeEvent] = []
        again = True
        while again and len(events) < limit:
            again = False
            for shard in ready_shards(shards, progress):
                if len(events) >= limit:
                    break
                read, last, finished = await self._read_shard(
                    arn, shard, progress.get(shard.shard_id), limit - len(events), table
                )
                events += read
                if finished:
                    progress[shard.shard_id] = DONE
                    # Its children may not be listed yet: list afresh, then read them.
                    self._listings.pop(arn, None)
                    shards = await self._shards(arn)
                    again = True
                elif last is not None:
                    progress[shard.shard_id] = last
        return events

    async def _read_shard(
        self, arn: str, shard: Shard, after: str | None, limit: int, table: str
    ) -> tuple[list[ChangeEvent], str | None, bool]:
        """(events, last sequence number read, whether the shard is read to its end)."""
        iterator = await self._iterator(arn, shard.shard_id, after)
        events: list[ChangeEvent] = []
        last = after
        empty_pages = 0
        while iterator is not None and len(events) < limit:
            wanted = min(limit - len(events), _MAX_RECORDS_PER_CALL)
            page = await self._streams.get_records(ShardIterator=iterator, Limit=wanted)
            records = page.get("Records") or []
            for record in records:
                events.append(record_event(record, table))
                last = str(record["dynamodb"]["SequenceNumber"])
            iterator = page.get("NextShardIterator")
            if not records:
                empty_pages += 1
                if not shard.closed or empty_pages >= _CLOSED_SHARD_EMPTY_PAGES:
                    break
            elif len(records) < wanted and not shard.closed:
                break  # caught up with an open shard: the rest comes in a later read
        return events, last, iterator is None

    async def _iterator(self, arn: str, shard_id: str, after: str | None) -> str | None:
        params: dict[str, Any] = {"StreamArn": arn, "ShardId": shard_id}
        if after is None:
            params["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            params["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            params["SequenceNumber"] = after
        try:
            response = await self._streams.get_shard_iterator(**params)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code == "TrimmedDataAccessException" and after is not None:
                # The records after our position outlived retention (24 h) unread: they are
                # gone whatever we do; say so loudly and go on from the oldest kept.
                log.error(
                    "stream records trimmed before export",
                    extra={"stream": arn, "shard": shard_id, "after": after},
                )
                return await self._iterator(arn, shard_id, None)
            if code == "ResourceNotFoundException":
                return None  # the shard went away with retention between listing and read
            raise
        iterator: str | None = response.get("ShardIterator")
        return iterator

    async def _stream_arn(self, spec: TableSpec) -> str | None:
        name = spec.table_name(self._prefix)
        if name not in self._stream_arns:
            described = await self._dynamodb.describe_table(TableName=name)
            arn = described["Table"].get("LatestStreamArn")
            if arn is None:
                return None
            self._stream_arns[name] = str(arn)
        return self._stream_arns[name]

    async def _shards(self, arn: str) -> list[Shard]:
        now = self._monotonic()
        cached = self._listings.get(arn)
        if cached is not None and now - cached[0] < _SHARD_LISTING_TTL_S:
            return cached[1]
        shards: list[Shard] = []
        params: dict[str, Any] = {"StreamArn": arn}
        while True:
            described = (await self._streams.describe_stream(**params))["StreamDescription"]
            for shard in described.get("Shards", []):
                shards.append(
                    Shard(
                        shard_id=shard["ShardId"],
                        parent_id=shard.get("ParentShardId"),
                        closed="EndingSequenceNumber" in shard.get("SequenceNumberRange", {}),
                    )
                )
            last = described.get("LastEvaluatedShardId")
            if not last:
                break
            params["ExclusiveStartShardId"] = last
        self._listings[arn] = (now, shards)
        return shards


def _parse(position: str | None) -> dict[str, dict[str, Any]]:
    if position is None:
        return {}
    parsed = json.loads(position)
    if not isinstance(parsed, dict):
        raise ValueError(f"not a DynamoDB Streams position: {position[:80]!r}")
    return parsed
