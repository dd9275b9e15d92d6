"""The live event stream from a real server, on a file store and on DynamoDB: events as
they commit, resuming with Last-Event-ID after a disconnect without a gap, keep-alive
comments, a 410 for a position older than the log keeps, and a clean end at SIGTERM."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from tests.conftest import ADMIN, ALICE, store_settings
from tests.support.api_server import ApiServer, running_api, settings_env
from tests.support.sse import Message, messages

pytestmark = [pytest.mark.system]

DEADLINE_S = 20.0


@pytest.fixture(params=["sqlite-file", "dynamodb"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, tokens_file: Path) -> Settings:
    kind: str = request.param
    moto = request.getfixturevalue("moto_endpoint") if kind == "dynamodb" else None
    return store_settings(kind, tmp_path, moto, tokens_file).model_copy(
        update={"event_poll_ms": 50, "event_keepalive_s": 0.5, "event_settle_ms": 200}
    )


@pytest.fixture
async def api(settings: Settings, tmp_path: Path) -> AsyncIterator[ApiServer]:
    async with running_api(settings_env(settings), tmp_path / "api.log") as server:
        yield server


async def next_events(stream: AsyncIterator[Message], count: int) -> list[Message]:
    """The next ``count`` events (keep-alive comments skipped), within the deadline."""
    found: list[Message] = []

    async def collect() -> None:
        async for message in stream:
            if message.event is not None:
                found.append(message)
                if len(found) == count:
                    return

    await asyncio.wait_for(collect(), DEADLINE_S)
    return found


async def register(http: httpx.AsyncClient, bench_id: str) -> None:
    answer = await http.post(
        "/v1/benches", json={"bench_id": bench_id, "name": bench_id, "type": "hil"}, headers=ADMIN
    )
    assert answer.status_code == 201, answer.text


async def test_events_arrive_as_they_commit_and_resume_without_a_gap(api: ApiServer) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=DEADLINE_S) as http:
        async with http.stream("GET", "/v1/events", headers=ALICE) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = messages(response)
            await register(http, "rig-1")
            [first] = await next_events(stream, 1)
        assert first.event == "bench.registered"
        assert first.json["entity"] == {"type": "bench", "id": "rig-1", "version": 1}
        assert first.id == first.json["position"]

        # Disconnected: three changes happen meanwhile.
        for bench_id in ("rig-2", "rig-3", "rig-4"):
            await register(http, bench_id)
        resumed = {**ALICE, "Last-Event-ID": first.id or ""}
        async with http.stream("GET", "/v1/events", headers=resumed) as response:
            missed = await next_events(messages(response), 3)
        assert [m.json["entity"]["id"] for m in missed] == ["rig-2", "rig-3", "rig-4"]
        assert len({m.json["event_id"] for m in [first, *missed]}) == 4

        # Filters apply to the live stream too.
        query = {"type": "bench.changed", "bench_id": "rig-3"}
        async with http.stream("GET", "/v1/events", params=query, headers=ALICE) as response:
            stream = messages(response)
            for bench_id in ("rig-2", "rig-3"):
                changed = await http.patch(
                    f"/v1/benches/{bench_id}",
                    json={"labels": {"room": "b"}},
                    headers={**ADMIN, "If-Match": '"1"'},
                )
                assert changed.status_code == 200, changed.text
            [only] = await next_events(stream, 1)
        assert (only.event, only.json["bench_id"]) == ("bench.changed", "rig-3")


async def test_an_idle_stream_sends_keep_alive_comments(api: ApiServer) -> None:
    async with (
        httpx.AsyncClient(base_url=api.url, timeout=DEADLINE_S) as http,
        http.stream("GET", "/v1/events", headers=ALICE) as response,
    ):

        async def first_keep_alive() -> Message:
            async for message in messages(response):
                if "keep-alive" in message.comments:
                    return message
            raise AssertionError("the stream ended")

        message = await asyncio.wait_for(first_keep_alive(), DEADLINE_S)
    assert message.event is None


async def test_a_position_the_log_never_gave_is_410(api: ApiServer) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=DEADLINE_S) as http:
        old = "00000000-0000-7000-8000-000000000000" if "dynamodb" in api.log_text() else "999"
        answer = await http.get("/v1/events", headers={**ALICE, "Last-Event-ID": old})
    assert answer.status_code == 410, answer.text
    assert answer.headers["content-type"] == "application/problem+json"


async def test_sigterm_ends_an_open_stream_cleanly(api: ApiServer) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=DEADLINE_S) as http:
        async with http.stream("GET", "/v1/events", headers=ALICE) as response:
            stream = messages(response)
            await register(http, "rig-1")
            await next_events(stream, 1)
            started = time.monotonic()
            api.terminate()

            async def drain() -> None:
                async for _ in stream:
                    pass

            # The body ends (no read error): the server closed the stream itself.
            await asyncio.wait_for(drain(), DEADLINE_S)
        assert await api.exit_code() == 0
    # Well inside the graceful shutdown's period: nobody waited for it to run out.
    assert time.monotonic() - started < 10
