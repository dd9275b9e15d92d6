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
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aioboto3
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from app.store.dynamodb.store import CLIENT_CONFIG
from bench.floor_dynamodb import DynamoFloor
from bench.floor_sqlite import CAPABILITIES, SqliteFloor, now_iso

__all__ = ["CAPABILITIES", "create_app"]


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
        doc = await store().heartbeat(bench_id, now_iso(), str(body.get("agent_version")))
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
