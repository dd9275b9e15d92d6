"""The floor app's DynamoDB store: one table, one request per operation, asked as the
service's adapter asks (see ``bench/floor.py``)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from botocore.exceptions import ClientError

from bench.floor_sqlite import bench_doc, now_iso


def _item(pk: str, sk: str, doc: dict[str, Any]) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}, "doc": {"S": json.dumps(doc)}}


class _AsTheServiceAsks:
    """Sends every data request as the service's adapter does, with
    ``ReturnConsumedCapacity`` (its meter), so that moto does the same work for both."""

    _DATA = frozenset({"get_item", "update_item", "query", "transact_write_items"})

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if name not in self._DATA:
            return method

        async def metered(**params: Any) -> Any:
            return await method(ReturnConsumedCapacity="TOTAL", **params)

        return metered


class DynamoFloor:
    """One table, partition key ``pk`` and sort key ``sk``: every read is a GetItem or a
    Query, every write one UpdateItem or one TransactWriteItems."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = _AsTheServiceAsks(client)
        self._table = table

    @classmethod
    async def open(cls, client: Any, table: str) -> DynamoFloor:
        try:
            await client.create_table(
                TableName=table,
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
                # As the service's tables have: its change feed reads their streams.
                StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceInUseException":
                raise
        return cls(client, table)

    async def seed(
        self, benches: int, history: int, claim_benches: int, tasks_per_bench: int
    ) -> None:
        items: list[dict[str, Any]] = []
        for n in range(benches):
            doc = bench_doc(n)
            items.append(_item(f"bench#{doc['bench_id']}", "-", doc))
            items.append(_item(f"cap#{doc['capabilities'][0]}", doc["bench_id"], doc))
        for version in range(history):
            items.append(_item("hist#b-0000", f"{version:09d}", {"version": version}))
        for bench in range(claim_benches):
            for task in range(tasks_per_bench):
                items.append(_item(f"ready#c-{bench:04d}", f"{task:06d}", {}))
        for first in range(0, len(items), 25):
            batch = [{"PutRequest": {"Item": item}} for item in items[first : first + 25]]
            await self._client.batch_write_item(RequestItems={self._table: batch})

    async def _query(self, pk: str, limit: int, **extra: Any) -> list[dict[str, Any]]:
        answer = await self._client.query(
            TableName=self._table,
            KeyConditionExpression=extra.pop("condition", "pk = :pk"),
            ExpressionAttributeValues={":pk": {"S": pk}, **extra.pop("values", {})},
            Limit=limit,
            **extra,
        )
        return list(answer["Items"])

    async def get(self, bench_id: str) -> dict[str, Any] | None:
        answer = await self._client.get_item(
            TableName=self._table,
            Key={"pk": {"S": f"bench#{bench_id}"}, "sk": {"S": "-"}},
            ConsistentRead=True,
        )
        item = answer.get("Item")
        return None if item is None else json.loads(item["doc"]["S"])

    async def heartbeat(self, bench_id: str, at: str, version: str) -> dict[str, Any] | None:
        answer = await self._client.update_item(
            TableName=self._table,
            Key={"pk": {"S": f"bench#{bench_id}"}, "sk": {"S": "-"}},
            UpdateExpression="SET last_heartbeat_at = :at, agent_version = :v",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":at": {"S": at}, ":v": {"S": version}},
            ReturnValues="ALL_NEW",
        )
        return dict(json.loads(answer["Attributes"]["doc"]["S"]), last_heartbeat_at=at)

    async def book(self, bench_id: str, start: str, end: str) -> dict[str, Any] | None:
        # As the service books: a consistent read of the day's calendar item, then one
        # transaction conditioned on its version (bench check, reservation, day, history).
        day_key = {"pk": {"S": f"day#{bench_id}"}, "sk": {"S": start[:10]}}
        day = await self._client.get_item(TableName=self._table, Key=day_key, ConsistentRead=True)
        windows = json.loads(day["Item"]["doc"]["S"]) if "Item" in day else []
        version = int(day["Item"]["version"]["N"]) if "Item" in day else 0
        if any(s < end and start < e for s, e in windows):
            return None
        reservation_id = str(uuid.uuid4())
        day_condition: dict[str, Any] = (
            {"ConditionExpression": "attribute_not_exists(pk)"}
            if version == 0
            else {
                "ConditionExpression": "version = :old",
                "ExpressionAttributeValues": {":old": {"N": str(version)}},
            }
        )
        try:
            await self._client.transact_write_items(
                TransactItems=[
                    {
                        "ConditionCheck": {
                            "TableName": self._table,
                            "Key": {"pk": {"S": f"bench#{bench_id}"}, "sk": {"S": "-"}},
                            "ConditionExpression": "attribute_exists(pk)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": {
                                "pk": {"S": f"res#{bench_id}"},
                                "sk": {"S": f"{start}|{reservation_id}"},
                                "end": {"S": end},
                            },
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": {
                                **day_key,
                                "doc": {"S": json.dumps([*windows, [start, end]])},
                                "version": {"N": str(version + 1)},
                            },
                            **day_condition,
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": {
                                "pk": {"S": f"hist#{reservation_id}"},
                                "sk": {"S": "000000001"},
                                "doc": {"S": json.dumps({"at": now_iso()})},
                            },
                        }
                    },
                ]
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "TransactionCanceledException":
                return None
            raise
        return {"reservation_id": reservation_id, "bench_id": bench_id, "start": start, "end": end}

    async def by_capability(self, capability: str, limit: int) -> list[dict[str, Any]]:
        return [
            json.loads(item["doc"]["S"]) for item in await self._query(f"cap#{capability}", limit)
        ]

    async def calendar(self, bench_id: str, start: str, end: str) -> list[dict[str, Any]]:
        items = await self._query(
            f"res#{bench_id}",
            100,
            condition="pk = :pk AND sk BETWEEN :lo AND :hi",
            values={":lo": {"S": start}, ":hi": {"S": end}},
        )
        return [{"sk": item["sk"]["S"], "end": item["end"]["S"]} for item in items]

    async def history(self, bench_id: str, limit: int) -> list[dict[str, Any]]:
        items = await self._query(f"hist#{bench_id}", limit, ConsistentRead=True)
        return [json.loads(item["doc"]["S"]) for item in items]

    async def claim(self, bench_id: str) -> dict[str, Any] | None:
        # Ready tasks wait in a partition of their own, so the first one is a Query of one
        # item; the claim moves it to the leased partition in one transaction.
        ready = await self._query(f"ready#{bench_id}", 1, ConsistentRead=True)
        if not ready:
            return None
        sk = ready[0]["sk"]["S"]
        try:
            await self._client.transact_write_items(
                TransactItems=[
                    {
                        "Delete": {
                            "TableName": self._table,
                            "Key": {"pk": {"S": f"ready#{bench_id}"}, "sk": {"S": sk}},
                            "ConditionExpression": "attribute_exists(pk)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": {
                                "pk": {"S": f"task#{bench_id}"},
                                "sk": {"S": sk},
                                "status": {"S": "leased"},
                            },
                        }
                    },
                ]
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "TransactionCanceledException":
                return None
            raise
        return {"task_id": f"{bench_id}.{sk}", "bench_id": bench_id, "status": "leased"}

    async def complete(self, task_id: str) -> bool:
        bench_id, _, sk = task_id.rpartition(".")
        try:
            await self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"task#{bench_id}"}, "sk": {"S": sk}},
                UpdateExpression="SET #s = :done",
                ConditionExpression="#s = :leased",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":done": {"S": "succeeded"}, ":leased": {"S": "leased"}},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    async def close(self) -> None:
        return None
