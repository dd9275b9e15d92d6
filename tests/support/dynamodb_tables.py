"""DynamoDB tables shared by the tests of one session, emptied before each test.

Creating the eight tables is some twenty requests to moto's one-request-at-a-time server;
emptying them is one Scan per table and a BatchWriteItem per 25 items left behind. So the
store tests use one set of tables per session (per pytest-xdist worker: each has a
session, and a moto server, of its own), empty when every test starts.

The shared tables have no streams: moto copies a table, stream records and all, before
every transaction on it (to roll back), so the records of a whole session would make each
transaction slower than the one before. Tests that read DynamoDB Streams, or create
tables on purpose, make tables of their own prefix, as the application creates them.
"""

from __future__ import annotations

import uuid
from typing import Any

import aioboto3

from app.store.dynamodb.tables import TABLES, DynamoClient, create_tables

REGION = "us-east-1"
# BatchWriteItem takes at most 25 requests.
_BATCH = 25


def dynamodb_session() -> Any:
    """An aioboto3 session with moto's dummy credentials."""
    return aioboto3.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION
    )


def new_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}-"


class _WithoutStreams:
    """Forwards to a client, creating tables without a stream."""

    def __init__(self, client: DynamoClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def create_table(self, **request: Any) -> Any:
        request.pop("StreamSpecification", None)
        return await self._client.create_table(**request)


async def create_shared_tables(client: DynamoClient) -> str:
    """Create the tables every store test shares, as the application does but without
    streams; return their prefix."""
    prefix = new_prefix()
    await create_tables(_WithoutStreams(client), prefix)
    return prefix


async def empty_tables(client: DynamoClient, prefix: str) -> None:
    """Delete every item of the tables of ``prefix``, reading only their keys."""
    for spec in TABLES:
        name = spec.table_name(prefix)
        keys = [key.name for key in (spec.partition, spec.sort) if key is not None]
        names = {f"#k{n}": key for n, key in enumerate(keys)}  # "key", "day": reserved words
        params: dict[str, Any] = {
            "TableName": name,
            "ProjectionExpression": ", ".join(names),
            "ExpressionAttributeNames": names,
            "ConsistentRead": True,
        }
        while True:
            page = await client.scan(**params)
            items = page["Items"]
            for start in range(0, len(items), _BATCH):
                deletes = [
                    {"DeleteRequest": {"Key": item}} for item in items[start : start + _BATCH]
                ]
                pending: dict[str, Any] = {name: deletes}
                while pending:
                    answer = await client.batch_write_item(RequestItems=pending)
                    pending = answer.get("UnprocessedItems") or {}
            if "LastEvaluatedKey" not in page:
                break
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
