"""The floor app: bare FastAPI on the same uvicorn, one store operation per request.

It answers the paths the benchmark sends to the service, with no authentication, no
validation beyond parsing, no history and no middleware: what is left is the least any
service on this stack pays for the same work. Each route does the one store operation
the service's request cannot do without (a read by key, one UPDATE / UpdateItem, one
booking transaction with its consistent read, one query), on tables of its own that
``seed`` fills at start-up with the same amounts the benchmark gives the service.

    FLOOR_STORE=sqlite FLOOR_SQLITE_PATH=/tmp/floor.db python -m bench.floor --fd N

It is served as ``orchestrator serve`` serves the service: the same uvicorn settings, on
an inherited socket opened with its real family. (uvicorn's own ``--fd`` takes every
socket for a Unix one, so asyncio leaves Nagle's algorithm on and each answer waits
~40 ms for a delayed ACK.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

import aioboto3
import aiosqlite
from botocore.exceptions import ClientError
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from app.store.dynamodb.store import CLIENT_CONFIG

CAPABILITIES = ("can", "lin", "jtag")


def bench_doc(n: int) -> dict[str, Any]:
    """A bench as the service would render it: the same fields, the same size."""
    return {
        "bench_id": f"b-{n:04d}",
        "name": f"bench {n}",
        "type": "hil",
        "capabilities": [CAPABILITIES[n % len(CAPABILITIES)]],
        "labels": {"room": "lab-1"},
        "heartbeat_interval_s": 30,
        "admin_state": "active",
        "concurrency": 1,
        "status": "online",
        "last_heartbeat_at": None,
        "agent_version": None,
        "version": 1,
        "created_at": "2026-12-01T00:00:00Z",
        "updated_at": "2026-12-01T00:00:00Z",
    }


def _now() -> str:
    return datetime.now(UTC).isoformat()


class FloorStore(Protocol):
    async def get(self, bench_id: str) -> dict[str, Any] | None: ...
    async def heartbeat(self, bench_id: str, at: str, version: str) -> dict[str, Any] | None: ...
    async def book(self, bench_id: str, start: str, end: str) -> dict[str, Any] | None: ...
    async def by_capability(self, capability: str, limit: int) -> list[dict[str, Any]]: ...
    async def calendar(self, bench_id: str, start: str, end: str) -> list[dict[str, Any]]: ...
    async def history(self, bench_id: str, limit: int) -> list[dict[str, Any]]: ...
    async def claim(self, bench_id: str) -> dict[str, Any] | None: ...
    async def complete(self, task_id: str) -> bool: ...
    async def close(self) -> None: ...


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS benches (bench_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS capabilities (capability TEXT, bench_id TEXT,
    PRIMARY KEY (capability, bench_id));
CREATE TABLE IF NOT EXISTS reservations (reservation_id TEXT PRIMARY KEY, bench_id TEXT,
    start TEXT, "end" TEXT);
CREATE INDEX IF NOT EXISTS reservations_by_bench ON reservations (bench_id, start);
CREATE TABLE IF NOT EXISTS history (entity_id TEXT, version INTEGER, doc TEXT,
    PRIMARY KEY (entity_id, version));
CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, bench_id TEXT, status TEXT);
CREATE INDEX IF NOT EXISTS tasks_ready ON tasks (bench_id, status, task_id);
"""


class SqliteFloor:
    """One connection, as the service has, so one lock: a statement sent while another
    request's transaction is open would run inside it."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> SqliteFloor:
        connection = await aiosqlite.connect(path, isolation_level=None)
        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.executescript(_SQLITE_SCHEMA)
        return cls(connection)

    async def seed(
        self, benches: int, history: int, claim_benches: int, tasks_per_bench: int
    ) -> None:
        await self._db.execute("BEGIN")
        for n in range(benches):
            doc = bench_doc(n)
            await self._db.execute(
                "INSERT OR REPLACE INTO benches VALUES (?, ?)", (doc["bench_id"], json.dumps(doc))
            )
            await self._db.execute(
                "INSERT OR REPLACE INTO capabilities VALUES (?, ?)",
                (doc["capabilities"][0], doc["bench_id"]),
            )
        await self._db.executemany(
            "INSERT OR REPLACE INTO history VALUES ('b-0000', ?, ?)",
            [
                (v, json.dumps({"version": v, "action": "update", "at": _now()}))
                for v in range(history)
            ],
        )
        await self._db.executemany(
            "INSERT OR REPLACE INTO tasks VALUES (?, ?, 'ready')",
            [
                (f"c-{b:04d}.{t:06d}", f"c-{b:04d}")
                for b in range(claim_benches)
                for t in range(tasks_per_bench)
            ],
        )
        await self._db.execute("COMMIT")

    async def get(self, bench_id: str) -> dict[str, Any] | None:
        async with self._lock:
            rows = await self._db.execute_fetchall(
                "SELECT doc FROM benches WHERE bench_id = ?", (bench_id,)
            )
            return next((json.loads(row[0]) for row in rows), None)

    async def heartbeat(self, bench_id: str, at: str, version: str) -> dict[str, Any] | None:
        async with self._lock:
            rows = await self._db.execute_fetchall(
                "UPDATE benches SET doc = json_set(doc, '$.last_heartbeat_at', ?,"
                " '$.agent_version', ?) WHERE bench_id = ? RETURNING doc",
                (at, version, bench_id),
            )
            return next((json.loads(row[0]) for row in rows), None)

    async def book(self, bench_id: str, start: str, end: str) -> dict[str, Any] | None:
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                overlap = await self._db.execute_fetchall(
                    'SELECT 1 FROM reservations WHERE bench_id = ? AND start < ? AND "end" > ?'
                    " LIMIT 1",
                    (bench_id, end, start),
                )
                if overlap:
                    await self._db.execute("ROLLBACK")
                    return None
                reservation = {
                    "reservation_id": str(uuid.uuid4()),
                    "bench_id": bench_id,
                    "start": start,
                    "end": end,
                }
                await self._db.execute(
                    "INSERT INTO reservations VALUES (?, ?, ?, ?)",
                    (reservation["reservation_id"], bench_id, start, end),
                )
                await self._db.execute("COMMIT")
                return reservation
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise

    async def by_capability(self, capability: str, limit: int) -> list[dict[str, Any]]:
        async with self._lock:
            rows = await self._db.execute_fetchall(
                "SELECT doc FROM benches WHERE bench_id IN"
                " (SELECT bench_id FROM capabilities WHERE capability = ?)"
                " ORDER BY bench_id LIMIT ?",
                (capability, limit),
            )
            return [json.loads(row[0]) for row in rows]

    async def calendar(self, bench_id: str, start: str, end: str) -> list[dict[str, Any]]:
        async with self._lock:
            rows = await self._db.execute_fetchall(
                'SELECT reservation_id, start, "end" FROM reservations WHERE bench_id = ?'
                ' AND start < ? AND "end" > ? ORDER BY start',
                (bench_id, end, start),
            )
            return [{"reservation_id": r[0], "start": r[1], "end": r[2]} for r in rows]

    async def history(self, bench_id: str, limit: int) -> list[dict[str, Any]]:
        async with self._lock:
            rows = await self._db.execute_fetchall(
                "SELECT doc FROM history WHERE entity_id = ? ORDER BY version LIMIT ?",
                (bench_id, limit),
            )
            return [json.loads(row[0]) for row in rows]

    async def claim(self, bench_id: str) -> dict[str, Any] | None:
        async with self._lock:
            rows = await self._db.execute_fetchall(
                "UPDATE tasks SET status = 'leased' WHERE task_id = (SELECT task_id FROM tasks"
                " WHERE bench_id = ? AND status = 'ready' ORDER BY task_id LIMIT 1)"
                " RETURNING task_id, bench_id",
                (bench_id,),
            )
            return next(
                ({"task_id": r[0], "bench_id": r[1], "status": "leased"} for r in rows), None
            )

    async def complete(self, task_id: str) -> bool:
        async with self._lock:
            cursor = await self._db.execute(
                "UPDATE tasks SET status = 'succeeded' WHERE task_id = ? AND status = 'leased'",
                (task_id,),
            )
            return cursor.rowcount == 1

    async def close(self) -> None:
        await self._db.close()


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
                                "doc": {"S": json.dumps({"at": _now()})},
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


def create_app() -> FastAPI:
    store_kind = os.environ.get("FLOOR_STORE", "sqlite")
    benches = int(os.environ.get("FLOOR_BENCHES", "200"))
    history = int(os.environ.get("FLOOR_HISTORY", "50"))
    tasks = int(os.environ.get("FLOOR_TASKS_PER_BENCH", "2000"))
    claim_benches = int(os.environ.get("FLOOR_CLAIM_BENCHES", "32"))
    holder: dict[str, FloorStore] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if store_kind == "sqlite":
            sqlite = await SqliteFloor.open(os.environ["FLOOR_SQLITE_PATH"])
            await sqlite.seed(benches, history, claim_benches, tasks)
            holder["store"] = sqlite
            yield
            await sqlite.close()
            return
        session = aioboto3.Session(
            aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
        )
        # The service's own client settings: the floor differs only in what it does.
        async with session.client(
            "dynamodb", endpoint_url=os.environ["FLOOR_DYNAMODB_ENDPOINT"], config=CLIENT_CONFIG
        ) as client:
            dynamo = await DynamoFloor.open(client, os.environ.get("FLOOR_TABLE", "floor"))
            await dynamo.seed(benches, history, claim_benches, tasks)
            holder["store"] = dynamo
            yield

    app = FastAPI(lifespan=lifespan, openapi_url=None)

    def store() -> FloorStore:
        return holder["store"]

    @app.get("/v1/benches/{bench_id}")
    async def get_bench(bench_id: str, request: Request) -> Response:
        doc = await store().get(bench_id)
        if doc is None:
            return JSONResponse({"title": "Not Found"}, status_code=404)
        etag = f'"{doc["version"]}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return JSONResponse(doc, headers={"ETag": etag})

    @app.post("/v1/benches/{bench_id}/heartbeats")
    async def heartbeat(bench_id: str, request: Request) -> Response:
        body = await request.json()
        doc = await store().heartbeat(bench_id, _now(), str(body.get("agent_version")))
        if doc is None:
            return JSONResponse({"title": "Not Found"}, status_code=404)
        return JSONResponse(doc)

    @app.post("/v1/reservations")
    async def book(request: Request) -> Response:
        body = await request.json()
        reservation = await store().book(body["bench_id"], body["start"], body["end"])
        if reservation is None:
            return JSONResponse({"title": "Conflict"}, status_code=409)
        return JSONResponse(reservation, status_code=201)

    @app.get("/v1/benches")
    async def list_benches(capability: str, limit: int = 50) -> Response:
        return JSONResponse({"items": await store().by_capability(capability, limit)})

    @app.get("/v1/benches/{bench_id}/reservations")
    async def calendar(bench_id: str, request: Request) -> Response:
        query = request.query_params
        items = await store().calendar(bench_id, query["from"], query["to"])
        return JSONResponse({"items": items})

    @app.get("/v1/benches/{bench_id}/history")
    async def history_page(bench_id: str, limit: int = 50) -> Response:
        return JSONResponse({"items": await store().history(bench_id, limit)})

    @app.post("/v1/benches/{bench_id}/tasks/claim")
    async def claim(bench_id: str) -> Response:
        task = await store().claim(bench_id)
        return Response(status_code=204) if task is None else JSONResponse(task)

    @app.post("/v1/tasks/{task_id}/complete")
    async def complete(task_id: str) -> Response:
        if not await store().complete(task_id):
            return JSONResponse({"title": "Conflict"}, status_code=409)
        return JSONResponse({"task_id": task_id, "status": "succeeded"})

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="the floor app, on an inherited socket")
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    server = uvicorn.Server(
        uvicorn.Config(
            "bench.floor:create_app",
            factory=True,
            log_config=None,
            log_level="warning",
            access_log=False,
        )
    )
    server.run(sockets=[socket.socket(fileno=args.fd)])


if __name__ == "__main__":
    main()
