"""The authorisation matrix (tests/support/authz_matrix.py), cell by cell.

A cell whose request is meant to change something (a 2xx on a POST, PATCH or DELETE) runs
on a world of its own, on a store of its own. Every other cell (reads, refusals) shares
one world per worker, which is built again after any of them answered a change with a
success, so nothing a cell did can leak into another. A cell where today's app differs
from the contract is a strict xfail naming the mismatch: it starts failing the day the
app is fixed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi.routing import APIRoute
from starlette.routing import Route

from app.clock import ManualClock
from app.main import create_app
from app.settings import Settings
from app.store.factory import open_store
from tests.conftest import ADMIN, AGENT1, ALICE, BOB, CI, START, auth
from tests.support.authz_matrix import (
    CALLER_NAMES,
    CALLERS,
    README,
    REGENERATE,
    ROWS,
    TOMORROW,
    UNKNOWN_ID,
    WEBHOOK_BODY,
    Row,
    readme_block,
    render,
)

TOKENS_BY_CALLER = {caller.name: caller.token for caller in CALLERS}
IN_TWO_HOURS = START + timedelta(hours=2)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _created(response: httpx.Response, key: str) -> str:
    assert response.status_code in (200, 201), response.text
    value: str = response.json()[key]
    return value


async def _book(
    client: httpx.AsyncClient, who: dict[str, str], bench: str, start: str, end: str
) -> str:
    body = {"bench_id": bench, "start": start, "end": end, "purpose": "world"}
    return _created(await client.post("/v1/reservations", json=body, headers=who), "reservation_id")


async def _run(client: httpx.AsyncClient, who: dict[str, str], reservation_id: str) -> str:
    body = {"reservation_id": reservation_id, "commit_sha": "9fceb02", "tasks": [{"type": "t"}]}
    return _created(await client.post("/v1/executions", json=body, headers=who), "execution_id")


async def build_world(client: httpx.AsyncClient) -> dict[str, str]:
    """The state every cell starts from (authz_matrix.WORLD says it in words)."""
    for bench in ("rig-1", "rig-2", "rig-3"):
        body = {"bench_id": bench, "name": bench, "type": "hil"}
        _created(await client.post("/v1/benches", json=body, headers=ADMIN), "bench_id")
    now, later = _iso(START), _iso(IN_TWO_HOURS)
    world = {
        "unknown": UNKNOWN_ID,
        "alice_active": await _book(client, ALICE, "rig-1", now, later),
        "bob_active": await _book(client, BOB, "rig-2", now, later),
        "alice_future": await _book(
            client, ALICE, "rig-1", f"{TOMORROW}T09:00:00Z", f"{TOMORROW}T11:00:00Z"
        ),
        "bob_future": await _book(
            client, BOB, "rig-2", f"{TOMORROW}T09:00:00Z", f"{TOMORROW}T11:00:00Z"
        ),
        "alice_cancelled": await _book(
            client, ALICE, "rig-1", f"{TOMORROW}T13:00:00Z", f"{TOMORROW}T14:00:00Z"
        ),
    }
    cancelled = await client.post(
        f"/v1/reservations/{world['alice_cancelled']}/cancel", headers=ALICE
    )
    assert cancelled.status_code == 200, cancelled.text
    world["run_ci"] = await _run(client, CI, world["alice_active"])
    world["task_leased"] = _created(
        await client.post("/v1/benches/rig-1/tasks/claim", headers=AGENT1), "task_id"
    )
    world["run_alice"] = await _run(client, ALICE, world["alice_future"])
    world["hook_alice"] = _created(
        await client.post("/v1/webhooks", json=WEBHOOK_BODY, headers=ALICE), "webhook_id"
    )
    return world


def _cells() -> list[Any]:
    cells = []
    for row in ROWS:
        for caller in CALLER_NAMES:
            marks = []
            if caller in row.now:
                reason = f"today {row.now[caller]}: {row.why}"
                marks.append(pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason))
            cells.append(pytest.param(row, caller, id=f"{row.key} | {caller}", marks=marks))
    return cells


async def _request(
    client: httpx.AsyncClient, row: Row, caller: str, world: dict[str, str]
) -> httpx.Response:
    token = TOKENS_BY_CALLER[caller]
    headers = {} if token is None else auth(token)
    url = row.url(world)
    if row.if_match == "current":
        read = await client.get(url, headers=ADMIN)
        assert read.status_code == 200, read.text
        headers["If-Match"] = read.headers["etag"]
    elif row.if_match is not None:
        headers["If-Match"] = row.if_match
    body = row.json(world)
    return await client.request(
        row.method, url, headers=headers, json=None if body is None else dict(body)
    )


async def open_world(settings: Settings, stack: AsyncExitStack) -> httpx.AsyncClient:
    """A client of an app on a store of its own, open until ``stack`` closes."""
    store = await open_store(settings)
    stack.push_async_callback(store.close)
    app = create_app(settings, store=store, clock=ManualClock(START))
    manager = await stack.enter_async_context(LifespanManager(app))
    transport = httpx.ASGITransport(app=manager.app)
    return await stack.enter_async_context(
        httpx.AsyncClient(transport=transport, base_url="http://test")
    )


class SharedWorld:
    """One world for the cells that should change nothing, made again once one did."""

    def __init__(self) -> None:
        self._stack: AsyncExitStack | None = None
        self._client: httpx.AsyncClient | None = None
        self.world: dict[str, str] = {}

    async def client(self, settings: Settings) -> httpx.AsyncClient:
        if self._client is None:
            stack = AsyncExitStack()
            client = await open_world(settings, stack)
            self.world = await build_world(client)
            self._stack, self._client = stack, client
        return self._client

    async def discard(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = self._client = None


@pytest.fixture(scope="module")
async def shared_world() -> AsyncIterator[SharedWorld]:
    shared = SharedWorld()
    yield shared
    await shared.discard()


def _changes_state(row: Row, status: int) -> bool:
    return row.method not in ("GET", "HEAD") and status < 400


@pytest.mark.parametrize("store_kind", ["sqlite-memory"], indirect=True)
@pytest.mark.parametrize(("row", "caller"), _cells())
async def test_cell(settings: Settings, shared_world: SharedWorld, row: Row, caller: str) -> None:
    expected = row.expect[caller]
    async with AsyncExitStack() as stack:
        shared = not _changes_state(row, expected)
        if shared:
            client, world = await shared_world.client(settings), shared_world.world
        else:
            client = await open_world(settings, stack)
            world = await build_world(client)
        response = await _request(client, row, caller, world)
        if shared and _changes_state(row, response.status_code):
            await shared_world.discard()  # it changed what the next cells would see
    said = f"{row.method} {row.url(world)} as {caller}: {response.status_code} {response.text}"
    now = row.now.get(caller)
    if now is not None and response.status_code not in (expected, now):
        pytest.fail(f"neither the contract's {expected} nor the known {now}: {said}")
    assert response.status_code == expected, said
    if expected >= 400:
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == expected
        assert problem["instance"] == row.url(world).partition("?")[0]
    if expected == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


def _operations() -> set[tuple[str, str]]:
    app = create_app(Settings())
    operations = set()
    for route in app.routes:
        if isinstance(route, APIRoute | Route):
            methods = set(route.methods or ()) - {"HEAD"}
            operations |= {(method, route.path) for method in methods}
    for path, item in app.openapi()["paths"].items():
        operations |= {(method.upper(), path) for method in item}
    return operations


def test_every_operation_has_a_row() -> None:
    operations = _operations()
    covered = {row.operation for row in ROWS}
    assert sorted(operations - covered) == [], "operations without a row in authz_matrix.ROWS"
    assert sorted(covered - operations) == [], "rows of operations the app does not have"


def test_rows_are_complete() -> None:
    keys = [row.key for row in ROWS]
    assert len(keys) == len(set(keys)), "two rows with one key: tell them apart with `on`"
    for row in ROWS:
        assert set(row.expect) == set(CALLER_NAMES), row.key
        assert set(row.now) <= set(row.expect), row.key
        assert all(row.now[c] != row.expect[c] for c in row.now), row.key
        assert bool(row.now) == bool(row.why), row.key


def test_readme_table_is_current() -> None:
    block = readme_block(README.read_text())
    assert block is not None, f"README.md lacks the matrix: run {REGENERATE}"
    assert block == render(), f"README.md's 'Who may do what' is stale: run {REGENERATE}"
