"""Python calls per request, the service against its floor: a count, not a time.

The machines are noisy (shared cores, steal time): throughput moves by a third between
runs, so a change worth a tenth is lost in it. The number of Python function calls a
request makes (cProfile's count, builtins included) does not move: it says, run after
run, how much work the service does per request beside the floor app doing the same
store operation. Both apps are built in this process, on SQLite files of their own with
the access log on, and each request goes straight into the ASGI app (no HTTP parsing,
which is uvicorn's and the same for both); the count is over ``--requests`` requests
after a warm-up.

    python -m bench.calls [--requests 500] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message

from bench.http_bench import ADMIN_TOKEN, AGENT_TOKEN, write_tokens

WARM_UP = 200
BENCH = {
    "bench_id": "b-0000",
    "name": "bench 0",
    "type": "hil",
    "capabilities": ["can"],
    "labels": {"room": "lab-1"},
}
# The requests counted: (name, method, path, token, body).
REQUESTS = (
    ("heartbeat", "POST", "/v1/benches/b-0000/heartbeats", AGENT_TOKEN, {"agent_version": "1"}),
    ("get", "GET", "/v1/benches/b-0000", ADMIN_TOKEN, None),
)


async def _call(
    app: ASGIApp,
    method: str,
    path: str,
    token: str,
    body: dict[str, Any] | None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, dict[bytes, bytes]]:
    """One request into ``app``; its status and headers."""
    data = b"" if body is None else json.dumps(body).encode()
    headers = [(b"host", b"bench"), (b"authorization", f"Bearer {token}".encode())]
    if body is not None:
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    headers += extra_headers or []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent = False
    answer: dict[str, Any] = {}

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # the client stays connected
        sent = True
        return {"type": "http.request", "body": data, "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["headers"] = dict(message.get("headers", []))

    await app(scope, receive, send)
    return answer["status"], answer["headers"]


async def _count(request: Callable[[], Awaitable[int]], requests: int) -> float:
    for _ in range(WARM_UP):
        status = await request()
        if status >= 300:
            raise RuntimeError(f"the request answered {status}")
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(requests):
        await request()
    profile.disable()
    calls: int = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    return calls / requests


async def _counts(
    app: Any, seeded: Callable[[], Awaitable[None]], requests: int
) -> dict[str, float]:
    lifespan: AbstractAsyncContextManager[None] = app.router.lifespan_context(app)
    async with lifespan:
        await seeded()
        counts: dict[str, float] = {}
        for name, method, path, token, body in REQUESTS:

            async def request(
                method: str = method,
                path: str = path,
                token: str = token,
                body: dict[str, Any] | None = body,
            ) -> int:
                return (await _call(app, method, path, token, body))[0]

            counts[name] = await _count(request, requests)
        _, headers = await _call(app, "GET", "/v1/benches/b-0000", ADMIN_TOKEN, None)
        etag = [(b"if-none-match", headers[b"etag"])]

        async def not_modified() -> int:
            status, _ = await _call(app, "GET", "/v1/benches/b-0000", ADMIN_TOKEN, None, etag)
            return 200 if status == 304 else status + 1000

        counts["get_not_modified"] = await _count(not_modified, requests)
        return counts


def _apps() -> tuple[Any, Any]:
    """The service and the floor app, each on a SQLite file of its own."""
    folder = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    os.environ.update(
        {
            "FLOOR_STORE": "sqlite",
            "FLOOR_SQLITE_PATH": str(folder / "floor.db"),
            "FLOOR_BENCHES": "5",
            "FLOOR_HISTORY": "5",
            "FLOOR_CLAIM_BENCHES": "2",
            "FLOOR_TASKS_PER_BENCH": "2",
        }
    )
    from app.logs import configure_logging
    from app.main import create_app
    from app.settings import Settings
    from bench.floor import create_app as create_floor

    settings = Settings(
        store="sqlite",
        sqlite_path=str(folder / "service.db"),
        tokens_file=write_tokens(folder),
        rate_limit_per_s=0,
        cursor_secret="bench",
        log_format="json",
        log_level="INFO",
        housekeeping_interval_s=0,
        webhook_delivery=False,
    )
    service = create_app(settings)
    # The access log is on, as served, but written where it costs no disk.
    configure_logging("INFO", "json", open(os.devnull, "w"))  # noqa: SIM115
    return service, create_floor()


async def measure(service: Any, floor: Any, requests: int) -> list[dict[str, Any]]:
    async def seed_service() -> None:
        status, _ = await _call(service, "POST", "/v1/benches", ADMIN_TOKEN, BENCH)
        if status != 201:
            raise RuntimeError(f"seeding the service: {status}")

    async def seed_floor() -> None:
        return None  # the floor seeds its own tables in its lifespan

    service_counts = await _counts(service, seed_service, requests)
    floor_counts = await _counts(floor, seed_floor, requests)
    return [
        {
            "scenario": name,
            "service_calls": round(service_counts[name]),
            "floor_calls": round(floor_counts[name]),
            "ratio": round(floor_counts[name] / service_counts[name], 3),
        }
        for name in service_counts
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--json", type=Path, help="write the outcomes here")
    args = parser.parse_args()
    rows = asyncio.run(measure(*_apps(), args.requests))
    for row in rows:
        print(
            f"  {row['scenario']:<18} service {row['service_calls']:6d} calls"
            f"  floor {row['floor_calls']:6d}  floor/service {row['ratio']:.2f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
