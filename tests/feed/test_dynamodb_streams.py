"""DynamoDB Streams specifics: shard lineage, attribute-value conversion, which tables.

moto's server keeps one shard per table forever, so shard splits cannot happen there: the
lineage tests read from a small in-memory stand-in of the streams API (the three calls
the source makes), handed to the source in place of the client.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.feed.dynamodb_streams import (
    DONE,
    DynamoStreamsFeed,
    Shard,
    logical_name,
    plain_item,
    ready_shards,
    streamed_tables,
)
from app.store.dynamodb.tables import FEED_CHECKPOINTS, IDEMPOTENCY, TABLES, TASKS

ARN = "arn:aws:dynamodb:us-east-1:1:table/p-Tasks/stream/label"
AT = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def _record(seq: int) -> dict[str, Any]:
    return {
        "eventID": f"event-{seq}",
        "eventName": "INSERT" if seq == 1 else "MODIFY",
        "dynamodb": {
            "Keys": {"task_id": {"S": "t1"}},
            "NewImage": {"task_id": {"S": "t1"}, "attempts": {"N": str(seq)}},
            "OldImage": {"task_id": {"S": "t1"}, "attempts": {"N": str(seq - 1)}},
            "SequenceNumber": str(seq),
            "ApproximateCreationDateTime": AT,
        },
    }


class StreamsStandIn:
    """A closed parent shard (records 1-3) and its open child (4-5), listed child first,
    over two DescribeStream pages."""

    def __init__(self) -> None:
        self.shards: dict[str, dict[str, Any]] = {
            "child": {"parent": "parent", "closed": False, "records": [_record(4), _record(5)]},
            "parent": {
                "parent": "trimmed-grandparent",
                "closed": True,
                "records": [_record(1), _record(2), _record(3)],
            },
        }

    async def describe_table(self, TableName: str) -> dict[str, Any]:
        return {"Table": {"TableName": TableName, "LatestStreamArn": ARN}}

    async def describe_stream(
        self, StreamArn: str, ExclusiveStartShardId: str | None = None
    ) -> dict[str, Any]:
        names = list(self.shards)
        start = 0 if ExclusiveStartShardId is None else names.index(ExclusiveStartShardId) + 1
        name = names[start]
        shard = self.shards[name]
        description: dict[str, Any] = {
            "Shards": [
                {
                    "ShardId": name,
                    "ParentShardId": shard["parent"],
                    "SequenceNumberRange": {"StartingSequenceNumber": "1"}
                    | ({"EndingSequenceNumber": "3"} if shard["closed"] else {}),
                }
            ]
        }
        if start + 1 < len(names):
            description["LastEvaluatedShardId"] = name
        return {"StreamDescription": description}

    async def get_shard_iterator(
        self,
        StreamArn: str,
        ShardId: str,
        ShardIteratorType: str,
        SequenceNumber: str | None = None,
    ) -> dict[str, Any]:
        records = self.shards[ShardId]["records"]
        index = 0
        if ShardIteratorType == "AFTER_SEQUENCE_NUMBER":
            assert SequenceNumber is not None
            index = sum(
                1 for r in records if int(r["dynamodb"]["SequenceNumber"]) <= int(SequenceNumber)
            )
        return {"ShardIterator": f"{ShardId}|{index}"}

    async def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        name, _, start = ShardIterator.partition("|")
        shard = self.shards[name]
        records = shard["records"][int(start) : int(start) + Limit]
        end = int(start) + len(records)
        at_end = end >= len(shard["records"])
        # A closed shard read to its end has no next iterator; an open one always has.
        next_iterator = None if shard["closed"] and at_end else f"{name}|{end}"
        return {"Records": records, "NextShardIterator": next_iterator}


def _feed() -> DynamoStreamsFeed:
    stand_in = StreamsStandIn()
    return DynamoStreamsFeed(stand_in, stand_in, "p-", tables=(TASKS,))


async def test_a_parent_shard_is_read_to_its_end_before_its_child() -> None:
    batch = await _feed().read(None, 10)

    assert [event.event_id for event in batch.events] == [f"event-{n}" for n in range(1, 6)]
    assert batch.position is not None
    assert '"parent":"END"' in batch.position
    assert '"child":"5"' in batch.position


async def test_a_child_waits_while_its_parent_has_records_left() -> None:
    feed = _feed()
    first = await feed.read(None, 2)
    assert [event.event_id for event in first.events] == ["event-1", "event-2"]

    rest = await feed.read(first.position, 10)

    assert [event.event_id for event in rest.events] == ["event-3", "event-4", "event-5"]
    assert (await feed.read(rest.position, 10)).events == []


async def test_stream_images_become_plain_values() -> None:
    event = (await _feed().read(None, 1)).events[0]
    assert event.table == "tasks"
    assert event.kind == "insert"
    assert event.key == {"task_id": "t1"}
    assert event.new_image == {"task_id": "t1", "attempts": 1}
    assert event.seq == 1
    assert event.at == AT


def test_ready_shards_follow_lineage() -> None:
    shards = [
        Shard("child", "parent", closed=False),
        Shard("parent", "gone", closed=True),
        Shard("other", None, closed=False),
    ]
    assert [s.shard_id for s in ready_shards(shards, {})] == ["parent", "other"]
    assert [s.shard_id for s in ready_shards(shards, {"parent": "7"})] == ["parent", "other"]
    assert [s.shard_id for s in ready_shards(shards, {"parent": DONE})] == ["child", "other"]


def test_plain_item_converts_every_attribute_type() -> None:
    item = {
        "s": {"S": "text"},
        "int": {"N": "42"},
        "big": {"N": "110000000001745442300900"},
        "float": {"N": "1.5"},
        "ss": {"SS": ["b", "a"]},
        "ns": {"NS": ["2", "1.5"]},
        "bin": {"B": b"\x00\x01"},
        "bool": {"BOOL": True},
        "null": {"NULL": True},
        "map": {"M": {"n": {"N": "3"}, "l": {"L": [{"S": "x"}, {"N": "0"}]}}},
    }
    assert plain_item(item) == {
        "s": "text",
        "int": 42,
        "big": 110000000001745442300900,
        "float": 1.5,
        "ss": ["a", "b"],
        "ns": [1.5, 2],
        "bin": "AAE=",
        "bool": True,
        "null": None,
        "map": {"n": 3, "l": ["x", 0]},
    }


def test_streamed_tables_are_all_but_idempotency_and_checkpoints() -> None:
    names = {spec.name for spec in streamed_tables((*TABLES, FEED_CHECKPOINTS))}
    assert IDEMPOTENCY.name not in names
    assert FEED_CHECKPOINTS.name not in names
    assert {"Benches", "History", "Reservations", "Executions", "Tasks"} <= names
    assert logical_name("BenchCalendar") == "bench_calendar"
    assert logical_name("Benches") == "benches"
