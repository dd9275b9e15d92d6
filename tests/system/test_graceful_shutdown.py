"""SIGTERM stops the API and the exporter gracefully: what is in flight finishes, exit 0.

The API runs as ``orchestrator serve`` (tests/support/api_server.py). A request is held in
flight honestly: its headers carry ``Expect: 100-continue``, so the server's ``100
Continue`` proves the application is reading the body; half of it is sent, then SIGTERM,
then (once the port refuses connections) the rest. The exporter runs as ``orchestrator
export``; its sink is a directory per run, so what each run delivered can be compared.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.benches.service import BenchService, NewBench
from app.clock import SystemClock
from app.feed.archive import decode
from app.feed.exporter import FAULT_ENV, FAULT_TERM_AFTER_WRITE
from app.feed.factory import open_feed
from app.identity import Actor, Principal, Role
from app.settings import Settings
from app.store.base import Store
from app.store.factory import open_store
from tests.conftest import ADMIN, AGENT1, store_settings
from tests.support.api_server import (
    REPO,
    ApiServer,
    connection_refused,
    running_api,
    settings_env,
    start_api,
    until,
)

pytestmark = [pytest.mark.system, pytest.mark.xdist_group("shutdown")]

STORES = ["sqlite-file", "dynamodb"]
# Housekeeping passes back to back: SIGTERM finds the loop in a pass or between two.
HOUSEKEEPING_INTERVAL_S = 0.05
DEADLINE_S = 30.0


@pytest.fixture(params=STORES)
def settings(request: pytest.FixtureRequest, tmp_path: Path, tokens_file: Path) -> Settings:
    """This module's stores: ones that several processes can open (a file, moto), each
    with tables of its own, and the API's housekeeping loop on."""
    kind: str = request.param
    moto = request.getfixturevalue("moto_endpoint") if kind == "dynamodb" else None
    return store_settings(kind, tmp_path, moto, tokens_file).model_copy(
        update={"housekeeping_interval_s": HOUSEKEEPING_INTERVAL_S}
    )


def _log_problems(log: str) -> list[str]:
    """Lines of a JSON-lines log that report a failure: errors, exceptions, tracebacks."""
    problems = []
    for line in log.splitlines():
        if "Traceback" in line:
            problems.append(line)
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the banner `serve` prints before logging starts
        if record.get("level") in ("ERROR", "CRITICAL") or "exception" in record:
            problems.append(line)
    return problems


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, read off a raw connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), DEADLINE_S)
    return int(status_line.split()[1]), headers, body


async def _came_online(http: httpx.AsyncClient, server: ApiServer, bench_id: str) -> bool:
    log = await http.get(f"{server.url}/v1/benches/{bench_id}/liveness", headers=ADMIN)
    return any(entry["action"] == "came_online" for entry in log.json()["items"])


async def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(
    settings: Settings, tmp_path: Path
) -> None:
    env = settings_env(settings)
    log = tmp_path / "api.log"
    async with (
        running_api(env, log) as server,
        httpx.AsyncClient(timeout=DEADLINE_S) as http,
    ):
        created = await http.post(
            f"{server.url}/v1/benches",
            json={"bench_id": "rig-1", "name": "rig 1", "type": "hil", "heartbeat_interval_s": 5},
            headers=ADMIN,
        )
        assert created.status_code == 201, created.text
        beat = await http.post(
            f"{server.url}/v1/benches/rig-1/heartbeats",
            json={"agent_version": "1.0"},
            headers=AGENT1,
        )
        assert beat.status_code == 200, beat.text
        # The housekeeping loop runs: it records the bench coming online in its liveness log.
        await until(
            lambda: _came_online(http, server, "rig-1"), DEADLINE_S, "housekeeping ran a pass"
        )

        bench_id = f"late-{uuid.uuid4().hex[:8]}"
        body = json.dumps({"bench_id": bench_id, "name": "in flight", "type": "hil"}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = (
            "POST /v1/benches HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n"
            f"Authorization: {ADMIN['Authorization']}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "X-Request-ID: in-flight-1\r\n"
            "Expect: 100-continue\r\n\r\n"
        )
        writer.write(head.encode() + body[:10])
        await writer.drain()
        # 100 Continue: the request is parsed and the application awaits its body.
        informational = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
        assert informational.startswith(b"HTTP/1.1 100 "), informational

        server.terminate()

        async def refused() -> bool:
            return await asyncio.to_thread(connection_refused, server.port)

        # The listening socket is closed while the request is still in flight.
        await until(refused, DEADLINE_S, "new connections are refused after SIGTERM")
        assert server.process.poll() is None, "the server exited with a request in flight"

        writer.write(body[10:])
        await writer.drain()
        status, headers, answer = await _read_response(reader)
        assert status == 201, answer
        assert json.loads(answer)["bench_id"] == bench_id
        assert headers["x-request-id"] == "in-flight-1"
        # Then the server closes the connection: no further request on it.
        assert await asyncio.wait_for(reader.read(), DEADLINE_S) == b""
        writer.close()

        assert await server.exit_code() == 0
        assert connection_refused(server.port)
        text = server.log_text()
        assert _log_problems(text) == []
        assert "Application shutdown complete." in text

    # What the request in flight created is stored: it was a whole, normal request.
    async with (
        running_api(env, tmp_path / "api-again.log") as again,
        httpx.AsyncClient(timeout=DEADLINE_S) as http,
    ):
        stored = await http.get(f"{again.url}/v1/benches/{bench_id}", headers=ADMIN)
        assert stored.status_code == 200, stored.text
        assert stored.json()["version"] == 1


@pytest.mark.parametrize("settings", ["sqlite-file"], indirect=True)
async def test_a_request_stuck_past_the_graceful_timeout_does_not_hold_the_exit(
    settings: Settings, tmp_path: Path
) -> None:
    """A client that never finishes its body is cut after --graceful-timeout; exit 0 still."""
    server = await start_api(
        settings_env(settings), tmp_path / "api.log", "--graceful-timeout", "1"
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /v1/benches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: {ADMIN['Authorization']}\r\n".encode()
            + b"Content-Length: 100\r\nExpect: 100-continue\r\n\r\n{"
        )
        await writer.drain()
        informational = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
        assert informational.startswith(b"HTTP/1.1 100 ")
        started = time.monotonic()
        server.terminate()
        assert await server.exit_code() == 0
        assert time.monotonic() - started < 10
        writer.close()
        assert "timeout graceful shutdown exceeded" in server.log_text()
    finally:
        server.kill()
        await server.exit_code()


# --- the exporter ------------------------------------------------------------------------

CHECKPOINT = "graceful"
ADMIN_ACTOR = Actor(Principal("root", Role.ADMIN), "req-graceful")


@pytest.fixture
async def feed_store(settings: Settings) -> AsyncIterator[Store]:
    opened = await open_store(settings)
    try:
        yield opened
    finally:
        await opened.close()


async def _create_benches(store: Store, prefix: str, count: int) -> None:
    service = BenchService(store, SystemClock())
    for number in range(count):
        await service.create(
            NewBench(
                bench_id=f"{prefix}-{number}",
                name=f"bench {number}",
                type="hil",
                capabilities=frozenset(),
                labels={},
                heartbeat_interval_s=30,
            ),
            ADMIN_ACTOR,
        )


def _export_command(sink: Path, *options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "app.cli",
        "export",
        "--sink",
        f"file://{sink}",
        "--name",
        CHECKPOINT,
        *options,
    ]


def _exporter_env(settings: Settings, fault: str | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORCH_")}
    env.update(settings_env(settings))
    if fault is not None:
        env[FAULT_ENV] = fault
    return env


def _spawn_follower(settings: Settings, sink: Path, folder: Path) -> subprocess.Popen[bytes]:
    with (folder / "export.out").open("wb") as out, (folder / "export.err").open("wb") as err:
        return subprocess.Popen(
            _export_command(sink, "--follow", "--batch", "3", "--poll-interval", "0.05"),
            cwd=REPO,
            env=_exporter_env(settings),
            stdout=out,
            stderr=err,
        )


def _delivered(sink: Path) -> list[str]:
    """Every event id in the sink, as many times as it was delivered."""
    return [
        event.event_id
        for path in sorted(sink.rglob("*.jsonl.gz"))
        for event in decode(path.read_bytes())
    ]


async def _feed_ids(settings: Settings) -> set[str]:
    ids: set[str] = set()
    async with open_feed(settings) as source:
        position: str | None = None
        while True:
            batch = await source.feed.read(position, 500)
            ids |= {event.event_id for event in batch.events}
            if not batch.events and batch.position == position:
                return ids
            position = batch.position


def _summary(stdout: str) -> dict[str, object]:
    summary: dict[str, object] = json.loads(stdout.strip().splitlines()[-1])
    return summary


async def _drain(settings: Settings, sink: Path) -> dict[str, object]:
    done = await asyncio.to_thread(
        subprocess.run,
        _export_command(sink, "--batch", "50"),
        cwd=REPO,
        env=_exporter_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return _summary(done.stdout)


async def test_exporter_checkpoints_the_batch_in_hand_when_sigterm_lands_mid_batch(
    settings: Settings, feed_store: Store, tmp_path: Path
) -> None:
    """SIGTERM at the worst instant (written to the sink, not yet checkpointed)."""
    await _create_benches(feed_store, "mid", 12)
    first, second = tmp_path / "run-1", tmp_path / "run-2"
    done = await asyncio.to_thread(
        subprocess.run,
        _export_command(first, "--follow", "--batch", "4", "--poll-interval", "0.05"),
        cwd=REPO,
        env=_exporter_env(settings, FAULT_TERM_AFTER_WRITE),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = _summary(done.stdout)
    # The one batch it had written, and its checkpoint: it stopped before another.
    assert (summary["batches"], summary["checkpoint_version"]) == (1, 1)
    delivered_first = _delivered(first)
    assert len(delivered_first) == summary["events"] and 1 <= len(delivered_first) <= 4

    rest = await _drain(settings, second)
    delivered_second = _delivered(second)
    assert len(delivered_second) == rest["events"]
    everything = await _feed_ids(settings)
    # Nothing twice (the checkpoint covered the first batch), nothing missed.
    assert set(delivered_first).isdisjoint(delivered_second)
    assert len(set(delivered_first)) == len(delivered_first)
    assert len(set(delivered_second)) == len(delivered_second)
    assert set(delivered_first) | set(delivered_second) == everything
    assert len(everything) >= 12


async def test_exporter_follow_stops_on_sigterm_with_exit_0_and_resumes_exactly(
    settings: Settings, feed_store: Store, tmp_path: Path
) -> None:
    """SIGTERM from outside while changes keep coming and the exporter keeps up."""
    first, second = tmp_path / "run-1", tmp_path / "run-2"
    await _create_benches(feed_store, "pre", 4)
    stop_writing = asyncio.Event()

    async def writer() -> int:
        made = 0
        while not stop_writing.is_set():
            await _create_benches(feed_store, f"w{made}", 1)
            made += 1
        return made

    writing = asyncio.create_task(writer())
    exporter = _spawn_follower(settings, first, tmp_path)
    try:

        async def exported_some() -> bool:
            return len(_delivered(first)) >= 6

        await until(exported_some, 60, "the exporter delivered a few batches")
        exporter.terminate()
        code = await asyncio.to_thread(exporter.wait, DEADLINE_S)
    finally:
        if exporter.poll() is None:
            exporter.kill()
            exporter.wait()
        stop_writing.set()
        made = await writing
    assert code == 0, (tmp_path / "export.err").read_text()
    summary = _summary((tmp_path / "export.out").read_text())
    delivered_first = _delivered(first)
    assert len(delivered_first) == summary["events"]

    rest = await _drain(settings, second)
    delivered_second = _delivered(second)
    assert len(delivered_second) == rest["events"]
    everything = await _feed_ids(settings)
    assert made >= 1
    assert set(delivered_first).isdisjoint(delivered_second)
    assert len(set(delivered_first)) == len(delivered_first)
    assert len(set(delivered_second)) == len(delivered_second)
    assert set(delivered_first) | set(delivered_second) == everything
