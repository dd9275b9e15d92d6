"""The running app picks up tokens-file edits and SIGHUP without a restart.

The once-a-second check follows the app's ManualClock; SIGHUP is a real signal to this
process, handled in the event loop, polled for with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.clock import ManualClock
from app.http.auth import token_digest
from app.main import create_app
from app.settings import Settings
from app.store.base import Store
from tests.api.test_benches import assert_problem

pytestmark = pytest.mark.parametrize("store_kind", ["sqlite-memory"], indirect=True)

ALICE = {"Authorization": "Bearer alice-own-token"}
CAROL = {"Authorization": "Bearer carol-new-token"}


def write_tokens(path: Path, *people: tuple[str, str]) -> None:
    records = [
        {"token_sha256": token_digest(token), "subject": subject, "role": "user"}
        for token, subject in people
    ]
    path.write_text(json.dumps(records))


def cut_short(path: Path) -> None:
    path.write_text('[{"token_sha256": ')  # as if read mid-write


@pytest.fixture
def tokens_path(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.json"
    write_tokens(path, ("alice-own-token", "alice"))
    return path


@asynccontextmanager
async def running(
    settings: Settings, store: Store, clock: ManualClock, tokens: Path
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"tokens_file": tokens}), store=store, clock=clock)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


async def status_of(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    return (await client.get("/v1/benches", headers=headers)).status_code


async def test_a_user_added_to_the_file_is_admitted_without_a_restart(
    settings: Settings, store: Store, clock: ManualClock, tokens_path: Path
) -> None:
    async with running(settings, store, clock, tokens_path) as client:
        assert_problem(await client.get("/v1/benches", headers=CAROL), 401)
        write_tokens(tokens_path, ("alice-own-token", "alice"), ("carol-new-token", "carol"))
        assert await status_of(client, CAROL) == 401  # checked at most once a second
        clock.advance(timedelta(seconds=1))
        assert await status_of(client, CAROL) == 200
        assert await status_of(client, ALICE) == 200


async def test_a_broken_edit_keeps_the_tokens_in_force(
    settings: Settings, store: Store, clock: ManualClock, tokens_path: Path
) -> None:
    async with running(settings, store, clock, tokens_path) as client:
        cut_short(tokens_path)
        clock.advance(timedelta(seconds=1))
        assert await status_of(client, ALICE) == 200


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
async def test_sighup_reloads_the_file(
    settings: Settings, store: Store, clock: ManualClock, tokens_path: Path
) -> None:
    async with running(settings, store, clock, tokens_path) as client:
        assert signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL
        write_tokens(tokens_path, ("carol-new-token", "carol"))
        # The clock never moves here: only the signal can make the app read the file.
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = time.monotonic() + 5
        while await status_of(client, CAROL) != 200:
            assert time.monotonic() < deadline, "SIGHUP did not reload the tokens file"
            await asyncio.sleep(0.01)
        assert await status_of(client, ALICE) == 401  # alice was removed
    # Shut down: the handler is gone again (the default would end the test run).
    assert signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, None)
