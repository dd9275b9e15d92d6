"""The fuzzing target: one app per worker on the in-memory store, with a world to reach.

schemathesis runs the app in process, on an event loop of its own, and its pytest plugin
ends the app's lifespan after every test: with an in-memory store that would be a new,
empty store for each operation. ``SessionLifespan`` keeps the app's one lifespan (and its
store) for the whole session. The world gives the fuzzer ids that exist, so that some of
its requests get past 404 into the use-cases.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.python import asgi

from app.clock import ManualClock
from app.main import create_app
from tests.conftest import START, auth, store_settings

BASE = f"http://{asgi.HOST}"
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Who calls each operation: an admin may do all but the agent's work on a bench.
AGENT_OPERATIONS = frozenset(
    {"claim_task", "heartbeat_task", "complete_task", "fail_task", "post_heartbeat"}
)


def caller_of(operation_id: str) -> dict[str, str]:
    return auth("agent1-token" if operation_id in AGENT_OPERATIONS else "admin-token")


class SessionLifespan:
    """An ASGI app that starts the wrapped app's lifespan once and ends it only when told
    (``closing``): the shutdowns schemathesis sends between tests are acknowledged only."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.closing = False
        self._lifespan: asyncio.Task[None] | None = None
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.closing:
                    await self._stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start(self) -> None:
        if self._lifespan is not None:
            return
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._lifespan = asyncio.create_task(self.app(scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "lifespan.startup"})
        reply = await self._from_app.get()
        if reply["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"the app did not start: {reply}")

    async def _stop(self) -> None:
        if self._lifespan is None:
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        await self._from_app.get()
        await self._lifespan
        self._lifespan = None

    def close(self) -> None:
        """End the app's lifespan (closing its store) from outside the event loop."""
        self.closing = True
        with asgi.get_client(self):
            pass  # makes sure a lifespan is registered to end
        asgi.shutdown_lifespans()


@dataclass
class OperationStats:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: int = 0
    schema_mismatches: int = 0
    undocumented_statuses: int = 0
    findings: list[str] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return self.server_errors + self.schema_mismatches + self.undocumented_statuses


@dataclass
class FuzzTarget:
    schema: Any  # schemathesis' OpenApiSchema
    app: Any
    known: dict[str, list[str]]  # path parameter -> ids that exist
    stats: defaultdict[str, OperationStats] = field(
        default_factory=lambda: defaultdict(OperationStats)
    )

    def report(self) -> dict[str, Any]:
        operations = {
            label: {
                "requests": s.requests,
                "5xx": s.server_errors,
                "schema_mismatches": s.schema_mismatches,
                "undocumented_statuses": s.undocumented_statuses,
                "statuses": dict(sorted(s.statuses.items())),
            }
            for label, s in sorted(self.stats.items())
        }
        every = self.stats.values()
        total = {
            "requests": sum(s.requests for s in every),
            "5xx": sum(s.server_errors for s in every),
            "schema_mismatches": sum(s.schema_mismatches for s in every),
            "undocumented_statuses": sum(s.undocumented_statuses for s in every),
        }
        return {"total": total, "operations": operations}


def _seed(app: Any) -> dict[str, list[str]]:
    """Benches, reservations (one active now), runs and a leased task, over HTTP."""
    admin, ci, agent = auth("admin-token"), auth("ci-token"), auth("agent1-token")
    with asgi.get_client(app) as http:

        def post(path: str, body: Any, headers: dict[str, str], key: str) -> str:
            response = http.post(BASE + path, json=body, headers=headers)
            assert response.status_code in (200, 201), response.text
            value: str = response.json()[key]
            return value

        benches = [
            post("/v1/benches", {"bench_id": b, "name": b, "type": "hil"}, admin, "bench_id")
            for b in ("rig-1", "rig-2", "rig-3")
        ]
        tomorrow = START + timedelta(days=1)
        windows = [(START, START + timedelta(hours=3)), (tomorrow, tomorrow + timedelta(hours=2))]
        reservations = [
            post(
                "/v1/reservations",
                {"bench_id": "rig-1", "start": start.isoformat(), "end": end.isoformat()},
                auth("alice-token"),
                "reservation_id",
            )
            for start, end in windows
        ]
        # Bob's, on rig-2, for the runs the fuzzer creates only (no path takes them, so
        # nothing cancels them).
        for_runs = [
            post(
                "/v1/reservations",
                {"bench_id": "rig-2", "start": start.isoformat(), "end": end.isoformat()},
                auth("bob-token"),
                "reservation_id",
            )
            for start, end in windows
        ]
        run = {"commit_sha": "9fceb02", "tasks": [{"type": "flash"}, {"type": "test"}]}
        executions = [
            post("/v1/executions", {**run, "reservation_id": r}, ci, "execution_id")
            for r in reservations
        ]
        tasks = [post("/v1/benches/rig-1/tasks/claim", None, agent, "task_id")]
        listed = http.get(BASE + f"/v1/executions/{executions[1]}", headers=admin).json()
        tasks += [task["task_id"] for task in listed["tasks"]]
    return {
        "bench_id": benches[:2],
        "booking_bench_id": benches[2:],  # no path takes it: nothing retires it
        "reservation_id": reservations,
        "execution_id": executions,
        "task_id": tasks,
        "run_reservation_id": for_runs,
    }


@pytest.fixture(scope="session")
def fuzz_target(
    tmp_path_factory: pytest.TempPathFactory, tokens_file: Path
) -> Iterator[FuzzTarget]:
    folder = tmp_path_factory.mktemp("fuzz")
    # A stream ends at once: every generated request gets its whole answer.
    settings = store_settings("sqlite-memory", folder, None, tokens_file).model_copy(
        update={"event_stream_max_s": 0.05, "event_poll_ms": 10}
    )
    app = SessionLifespan(create_app(settings, clock=ManualClock(START)))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    target = FuzzTarget(schema, app, _seed(app))
    yield target
    app.close()
    report = json.dumps(target.report(), indent=2)
    (folder / "fuzz-report.json").write_text(report)
    if path := os.environ.get("FUZZ_REPORT"):
        Path(path).write_text(report)
