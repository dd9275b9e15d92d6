"""Shared fixtures: moto's server (once per session), stores of every adapter, the API.

Every fixture that starts a server lives here and starts it once per session: under
pytest-xdist (make pytest), once per worker, each its own session on ports of its own.
The DynamoDB store tests share one set of tables per session, emptied for each test.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

import app.ids
from app.clock import ManualClock
from app.http.auth import token_digest
from app.main import create_app
from app.ops.housekeeping import Housekeeper
from app.settings import Settings
from app.store.base import Store

STORE_KINDS = ["sqlite-memory", "sqlite-file", "dynamodb"]
START = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)

# token -> (subject, role, bench_id)
TOKENS: dict[str, tuple[str, str, str | None]] = {
    "admin-token": ("root", "admin", None),
    "alice-token": ("alice", "user", None),
    "bob-token": ("bob", "user", None),
    "ci-token": ("ci-bot", "ci", None),
    "agent1-token": ("agent-rig-1", "agent", "rig-1"),
    "agent2-token": ("agent-rig-2", "agent", "rig-2"),
    "carol-token": ("carol", "user", None),
    "dave-token": ("dave", "user", None),
}
# Teams, where a token names one (team quotas).
TEAMS = {"carol-token": "hw", "dave-token": "hw"}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = auth("admin-token")
ALICE = auth("alice-token")
BOB = auth("bob-token")
CI = auth("ci-token")
AGENT1 = auth("agent1-token")
AGENT2 = auth("agent2-token")
CAROL = auth("carol-token")
DAVE = auth("dave-token")


@pytest.hookimpl(trylast=True)  # after pytest has grouped the tests by fixture parameters
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked slow first, in their order. A pytest-xdist worker takes the next tests
    as it frees up: a slow test collected near the end would run on alone after the rest."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from tests.support.moto_server import running_moto_server

    with running_moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
async def dynamodb_client(moto_endpoint: str) -> AsyncIterator[Any]:
    """A client of the session's own, for the tests' requests rather than a store's."""
    from tests.support.dynamodb_tables import dynamodb_session

    async with dynamodb_session().client("dynamodb", endpoint_url=moto_endpoint) as client:
        yield client


@pytest.fixture(scope="session")
async def shared_tables(dynamodb_client: Any) -> str:
    """The prefix of the tables the store tests share, created once per session."""
    from tests.support.dynamodb_tables import create_shared_tables

    return await create_shared_tables(dynamodb_client)


@pytest.fixture
async def dynamodb_prefix(dynamodb_client: Any, shared_tables: str) -> str:
    """The shared tables, empty: a test sees no item of another."""
    from tests.support.dynamodb_tables import empty_tables

    await empty_tables(dynamodb_client, shared_tables)
    return shared_tables


@pytest.fixture(scope="session")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens.json"
    records = []
    for token, (subject, role, bench_id) in TOKENS.items():
        record = {"token_sha256": token_digest(token), "subject": subject, "role": role}
        if bench_id is not None:
            record["bench_id"] = bench_id
        if token in TEAMS:
            record["team"] = TEAMS[token]
        records.append(record)
    path.write_text(json.dumps(records))
    return path


def store_settings(
    kind: str, tmp_path: Path, moto: str | None, tokens: Path, tables: str | None = None
) -> Settings:
    """Settings of a store of ``kind``; on DynamoDB, tables of their own prefix unless
    ``tables`` names the prefix of tables that exist."""
    if kind == "dynamodb":
        assert moto is not None
        return Settings(
            store="dynamodb",
            dynamodb_endpoint_url=moto,
            table_prefix=tables or f"t{uuid.uuid4().hex[:10]}-",
            create_tables=tables is None,
            tokens_file=tokens,
            cursor_secret="test-secret",
            housekeeping_interval_s=0,
            rate_limit_per_s=0,
            webhook_delivery=False,
            no_show_grace_min=0,
            # Tests read events at the instant they were raised (contract tests of the
            # settle window set their own).
            event_settle_ms=0,
        )
    path = ":memory:" if kind == "sqlite-memory" else str(tmp_path / "orchestrator.db")
    return Settings(
        store="sqlite",
        sqlite_path=path,
        tokens_file=tokens,
        cursor_secret="test-secret",
        housekeeping_interval_s=0,
        rate_limit_per_s=0,
        webhook_delivery=False,
        # Reservations nobody checks in to stay: the tests of no-shows turn it on.
        no_show_grace_min=0,
    )


@pytest.fixture(autouse=True)
def _ids_from_the_test_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids made in a test carry the instants they are made for. sortable_uuid never goes
    back within a process, so once any test made an id at a later instant (a clock moved
    on by days, the real clock), ids made for START would carry that later one; the
    DynamoDB event log reads by the ids' time, so it needs the test's own."""
    monkeypatch.setattr(app.ids, "_last_ms", -1)
    monkeypatch.setattr(app.ids, "_sequence", 0)


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def settings(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest, tokens_file: Path
) -> Settings:
    if store_kind != "dynamodb":
        return store_settings(store_kind, tmp_path, None, tokens_file)
    moto = request.getfixturevalue("moto_endpoint")
    tables = request.getfixturevalue("dynamodb_prefix")
    return store_settings(store_kind, tmp_path, moto, tokens_file, tables)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    from app.store.factory import open_store

    opened = await open_store(settings)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def housekeeper(store: Store, clock: ManualClock, settings: Settings) -> Housekeeper:
    return Housekeeper(store, clock, settings)


@pytest.fixture
async def client(
    settings: Settings, store: Store, clock: ManualClock
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, store=store, clock=clock)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


@pytest.fixture(scope="session", params=["sqlite-file", "dynamodb"])
def api_replicas(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tokens_file: Path,
) -> Iterator[list[str]]:
    """Two uvicorn processes sharing one store, started once per session per store kind."""
    from tests.support.api_processes import running_api_processes

    kind: str = request.param
    folder = tmp_path_factory.mktemp(f"replicas-{kind}")
    moto = request.getfixturevalue("moto_endpoint") if kind == "dynamodb" else None
    settings = store_settings(kind, folder, moto, tokens_file)
    env = {
        f"ORCH_{name.upper()}": str(value)
        for name, value in settings.model_dump().items()
        if value is not None
    }
    if kind == "dynamodb":
        # Create the tables once, before two processes race to do it.
        from app.cli import main as cli_main

        os.environ.update(env)
        try:
            cli_main(["create-tables"])
        finally:
            for name in env:
                os.environ.pop(name, None)
        env["ORCH_CREATE_TABLES"] = "false"
    with running_api_processes(env, count=2, log_dir=folder) as urls:
        yield urls
