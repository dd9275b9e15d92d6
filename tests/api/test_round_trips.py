"""Store round trips per API request, on every store, equal to docs/data-model.md.

Each request goes through the app over HTTP and is counted at the store's edge: on
DynamoDB every request the client sends (a RecordingClient around the store's client; the
adapter's own meter must count the same), on SQLite every call that crosses to
aiosqlite's thread (a recording proxy around the connection SqliteDatabase holds, and
around the cursors it hands back). The expected counts are read from the access-pattern
table of docs/data-model.md, column "round trips" on DynamoDB and "SQLite round trips" on
SQLite, so the doc and the code cannot drift apart. A cell counts by its leading sum:
"1 per page" is one page, "2 (3 with a key)" is 2, "5 + 2n" takes the case's n.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import aiosqlite
import httpx
import pytest

from app.settings import Settings
from app.store.base import Store
from app.store.dynamodb.store import DynamoStore
from app.store.sqlite.database import SqliteDatabase
from app.store.sqlite.store import SqliteStore
from tests.api.test_benches import RIG1
from tests.conftest import ADMIN, AGENT1, ALICE, CI
from tests.contract.dynamodb.support import RecordingClient
from tests.support.data_model import documented

TOMORROW = "2026-11-26"  # the tests' clock starts at 2026-11-25T08:00Z
LATER = datetime(2026, 11, 28, tzinfo=UTC)  # after every window and lease below

GET = "get a bench / reservation / task"
HISTORY = "history of a bench / reservation / task"
# What each measured request stands for: (access pattern as the doc names it, the values
# of the pattern's parameters here). Benches have k = 2 capabilities; the run n = 3 tasks.
CASES: dict[str, tuple[str, dict[str, int]]] = {
    "register a bench": ("register a bench with k capabilities", {"k": 2}),
    "heartbeat": ("heartbeat", {}),
    "get a bench": (GET, {}),
    "change a bench (a capability swapped)": ("change or retire a bench", {}),
    "list benches": ("list benches (all, by type/state)", {}),
    "list benches by capability": ("list benches by capabilities", {}),
    "bench history": (HISTORY, {}),
    "book a bench, one day": ("book a bench, one day", {}),
    "book with Idempotency-Key": ("… with Idempotency-Key", {}),
    "a second day (two-day booking minus one-day)": ("… each further day of the window", {}),
    "starting within the at-risk horizon (minus a later one)": (
        "… starting within `ORCH_AT_RISK_HORIZON_H`",
        {},
    ),
    "book by capability, 2 candidates": ("book by capability, c candidates", {"c": 2}),
    "cancel": ("cancel / release", {}),
    "move within a day": ("move a reservation", {}),
    "bench calendar": ("bench calendar", {}),
    "user's reservations": ("user's reservations", {}),
    "get a reservation": (GET, {}),
    "reservation history": (HISTORY, {}),
    "availability over 2 benches": ("availability search over b benches", {"b": 2}),
    "reservations that ended (store call)": ("reservations that ended (housekeeping)", {}),
    "create an execution, no key": ("create an execution with n tasks", {"n": 3}),
    "get an execution": ("get an execution with its n tasks", {"n": 3}),
    "execution history": ("history of an execution", {}),
    "executions of a reservation": ("executions of a reservation / bench / status", {}),
    # The first claim on a bench of concurrency 1, one open run, no ended reservation.
    "first claim": ("claim a task", {"t": 3}),
    "task heartbeat": ("task heartbeat", {}),
    "get a task": (GET, {}),
    "task history": (HISTORY, {}),
    "expired leases (store call)": ("expired leases (housekeeping)", {}),
    # The first of three tasks done: two unfinished siblings, no verdict yet.
    "complete a task": ("complete / fail a task", {"n": 3, "u": 2}),
    "retire a bench": ("change or retire a bench", {}),
}


_TERM = r"(?:\d*[a-z]|\d+)"
_SUM = re.compile(rf"\s*({_TERM}(?:\s*\+\s*{_TERM})*)(?!\w)")


def leading_sum(cell: str, values: dict[str, int]) -> int:
    """ "5 + 2n (...)" with n = 3 is 11; a name the case gives no value is an error."""
    match = _SUM.match(cell)
    assert match is not None, f"no count in {cell!r}"
    total = 0
    for term in (term.strip() for term in match.group(1).split("+")):
        total += int(term) if term.isdigit() else int(term[:-1] or 1) * values[term[-1]]
    return total


def test_leading_sum_reads_the_cells_as_the_doc_writes_them() -> None:
    values = {"n": 3, "c": 2}
    cells = ["1 per page", "2 (3 with a key)", "4 + c with one", "5 + 2n (one INSERT)", "0"]
    assert [leading_sum(cell, values) for cell in cells] == [1, 2, 6, 11, 0]
    assert leading_sum("1 + n + 1 per page", values) == 5


class Meter(Protocol):
    def reset(self) -> None: ...

    def trips(self) -> list[str]: ...


class RecordingAiosqlite:
    """Forwards to an aiosqlite connection (or cursor) and records every method call: each
    crosses to aiosqlite's thread (a statement, BEGIN, COMMIT, a fetch); properties such
    as ``rowcount`` do not. Cursors it hands back record into the same list."""

    def __init__(self, target: Any, calls: list[str], prefix: str = "") -> None:
        self._target = target
        self._prefix = prefix
        self.calls = calls

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name.startswith("_") or not callable(getattr(type(self._target), name, None)):
            return value

        async def record(*args: Any, **kwargs: Any) -> Any:
            words = args[0].split()[:3] if args and isinstance(args[0], str) else []
            self.calls.append(" ".join([f"{self._prefix}{name}", *words]))
            result = await value(*args, **kwargs)
            if isinstance(result, aiosqlite.Cursor):
                return RecordingAiosqlite(result, self.calls, "cursor.")
            return result

        return record

    def reset(self) -> None:
        self.calls.clear()

    def trips(self) -> list[str]:
        return list(self.calls)


class DynamoMeter:
    def __init__(self, store: DynamoStore, recorder: RecordingClient) -> None:
        self._store = store
        self._recorder = recorder

    def reset(self) -> None:
        self._store.calls.clear()
        self._recorder.requests.clear()

    def trips(self) -> list[str]:
        sent = [name for name, _ in self._recorder.requests]
        # Every request went through the adapter's meter, which bench/dynamodb_costs.py reads.
        assert sum(self._store.calls.values()) == len(sent), (self._store.calls, sent)
        return sent


@pytest.fixture
async def metered(settings: Settings) -> AsyncIterator[tuple[Store, Meter]]:
    opened: Store
    meter: Meter
    if settings.store == "dynamodb":
        recorders: list[RecordingClient] = []

        def wrap(client: Any) -> Any:
            recorders.append(RecordingClient(client))
            return recorders[-1]

        dynamo = await DynamoStore.open(settings, wrap_client=wrap)
        opened, meter = dynamo, DynamoMeter(dynamo, recorders[0])
    else:
        plain = await SqliteDatabase.open(settings.sqlite_path, settings.history_retention)
        recording = RecordingAiosqlite(plain._connection, [])
        connection = cast(aiosqlite.Connection, recording)
        opened, meter = SqliteStore(SqliteDatabase(connection, plain.history_retention)), recording
    try:
        yield opened, meter
    finally:
        await opened.close()


@pytest.fixture
def store(metered: tuple[Store, Meter]) -> Store:
    """Overrides conftest's: the app (``client``) runs on the metered store."""
    return metered[0]


@pytest.fixture
def meter(metered: tuple[Store, Meter]) -> Meter:
    return metered[1]


async def test_round_trips_per_request_are_the_documented_ones(
    client: httpx.AsyncClient, store: Store, meter: Meter, settings: Settings
) -> None:
    measured: dict[str, int] = {}
    seen: dict[str, list[str]] = {}

    async def count(label: str, request: Awaitable[Any]) -> Any:
        meter.reset()
        response = await request  # a coroutine: it starts here, on the reset meter
        seen[label] = meter.trips()
        measured[label] = len(seen[label])
        if not isinstance(response, httpx.Response):
            return response
        assert response.status_code < 300, (label, response.text)
        return response.json()

    def book(start: str, end: str, headers: dict[str, str] = ALICE, **body: Any) -> Any:
        payload = {"start": start, "end": end, **body}
        if "capabilities" not in payload:
            payload["bench_id"] = "rig-1"
        return client.post("/v1/reservations", json=payload, headers=headers)

    def at(hour: int, date: str = TOMORROW) -> str:
        return f"{date}T{hour:02}:00:00Z"

    # Benches. rig-2 (unmeasured) is the second candidate, and the one retired at the end.
    await count("register a bench", client.post("/v1/benches", json=RIG1, headers=ADMIN))
    spare = {**RIG1, "bench_id": "rig-2"}
    assert (await client.post("/v1/benches", json=spare, headers=ADMIN)).status_code == 201
    beat = {"agent_version": "1"}
    await count("heartbeat", client.post("/v1/benches/rig-1/heartbeats", json=beat, headers=AGENT1))
    await count("get a bench", client.get("/v1/benches/rig-1", headers=ALICE))
    await count(
        "change a bench (a capability swapped)",
        client.patch(
            "/v1/benches/rig-1",
            json={"capabilities": ["can-bus", "usb"]},
            headers={**ADMIN, "If-Match": '"1"'},
        ),
    )
    await count("list benches", client.get("/v1/benches", headers=ALICE))
    await count(
        "list benches by capability", client.get("/v1/benches?capability=can-bus", headers=ALICE)
    )
    await count("bench history", client.get("/v1/benches/rig-1/history", headers=ALICE))

    # Reservations, tomorrow; the two-day one spans midnight.
    one_day = await count("book a bench, one day", book(at(9), at(10)))
    keyed = await count(
        "book with Idempotency-Key", book(at(11), at(12), {**ALICE, "Idempotency-Key": "k-1"})
    )
    await count("two days", book(at(22), at(2, "2026-11-27")))
    measured["a second day (two-day booking minus one-day)"] = (
        measured.pop("two days") - measured["book a bench, one day"]
    )
    await count("soon", book(at(20, "2026-11-25"), at(21, "2026-11-25")))
    measured["starting within the at-risk horizon (minus a later one)"] = (
        measured.pop("soon") - measured["book a bench, one day"]
    )
    await count("book by capability, 2 candidates", book(at(13), at(14), capabilities=["can-bus"]))
    cancel = f"/v1/reservations/{one_day['reservation_id']}/cancel"
    await count("cancel", client.post(cancel, headers=ALICE))
    url = f"/v1/reservations/{keyed['reservation_id']}"
    move = client.patch(
        url, json={"start": at(15), "end": at(16)}, headers={**ALICE, "If-Match": '"1"'}
    )
    await count("move within a day", move)
    await count("bench calendar", client.get("/v1/benches/rig-1/reservations", headers=ALICE))
    await count("user's reservations", client.get("/v1/reservations", headers=ALICE))
    await count("get a reservation", client.get(url, headers=ALICE))
    await count("reservation history", client.get(f"{url}/history", headers=ALICE))
    search = "/v1/availability?duration=PT1H&capability=can-bus"
    await count("availability over 2 benches", client.get(search, headers=ALICE))
    ended = store.reservations.find_ended(LATER, 100)
    assert await count("reservations that ended (store call)", ended)

    # A run of three tasks in a reservation under way now.
    active = (await book("2026-11-25T08:00:00Z", "2026-11-25T10:00:00Z")).json()
    body = {
        "reservation_id": active["reservation_id"],
        "commit_sha": "9fceb02d0ae598e95dc970b74767f19372d61af8",
        "tasks": [{"type": "test", "timeout_s": 300}] * 3,
    }
    run = await count(
        "create an execution, no key", client.post("/v1/executions", json=body, headers=CI)
    )
    run_url = f"/v1/executions/{run['execution_id']}"
    await count("get an execution", client.get(run_url, headers=CI))
    await count("execution history", client.get(f"{run_url}/history", headers=CI))
    runs = f"/v1/reservations/{active['reservation_id']}/executions"
    await count("executions of a reservation", client.get(runs, headers=CI))
    task = await count("first claim", client.post("/v1/benches/rig-1/tasks/claim", headers=AGENT1))
    task_url = f"/v1/tasks/{task['task_id']}"
    await count("task heartbeat", client.post(f"{task_url}/heartbeat", headers=AGENT1))
    await count("get a task", client.get(task_url, headers=AGENT1))
    await count("task history", client.get(f"{task_url}/history", headers=AGENT1))
    leases = store.executions.find_expired_leases(LATER, 100)
    assert len(await count("expired leases (store call)", leases)) == 1
    done = {"result": {"ok": True}}
    await count("complete a task", client.post(f"{task_url}/complete", json=done, headers=AGENT1))
    retire = client.delete("/v1/benches/rig-2", headers={**ADMIN, "If-Match": '"1"'})
    await count("retire a bench", retire)

    column = "round trips" if settings.store == "dynamodb" else "SQLite round trips"
    cells = documented(column)
    expected = {label: leading_sum(cells[row], values) for label, (row, values) in CASES.items()}
    wrong = {label: seen.get(label) for label in CASES if measured.get(label) != expected[label]}
    assert measured == expected, f"round trips made: {wrong}"
