"""Webhook delivery as the service runs it, in real processes on a file store and on
DynamoDB: two replicas delivering at once (each event once, in order per entity), and a
replica SIGKILLed with a delivery in flight and others pending (all delivered after it
restarts, the interrupted one retried)."""

from __future__ import annotations

import asyncio
import statistics
import threading
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from app.settings import Settings
from tests.conftest import ADMIN, AGENT1, CI, store_settings
from tests.support.api_server import running_api, settings_env, start_api
from tests.support.receiver import Receiver, receiving

pytestmark = [pytest.mark.system]

EVENTS = ["bench.*", "reservation.*", "execution.*", "task.*"]


@pytest.fixture(params=["sqlite-file", "dynamodb"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, tokens_file: Path) -> Settings:
    kind: str = request.param
    moto = request.getfixturevalue("moto_endpoint") if kind == "dynamodb" else None
    return store_settings(kind, tmp_path, moto, tokens_file).model_copy(
        update={
            "webhook_delivery": True,
            "webhook_allow_networks": "127.0.0.0/8",
            "event_poll_ms": 50,
            "event_settle_ms": 200,
            # An interrupted attempt is taken over after 3 s, not 15.
            "webhook_timeout_s": 1.0,
        }
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as running:
        yield running


def subscribe(url: str, receiver: Receiver) -> dict[str, Any]:
    answer = httpx.post(
        f"{url}/v1/webhooks", json={"url": receiver.url, "events": EVENTS}, headers=ADMIN
    )
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def ok(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code < 300, answer.text
    body: dict[str, Any] = answer.json() if answer.content else {}
    return body


def scripted_run(urls: list[str]) -> int:
    """A booking and a three-task run, its requests spread over the replicas; returns how
    many events it raises."""
    http = [httpx.Client(base_url=url, timeout=30) for url in urls]
    now = datetime.now(UTC).replace(microsecond=0)
    ok(
        http[0].post(
            "/v1/benches", json={"bench_id": "rig-1", "name": "r", "type": "hil"}, headers=ADMIN
        )
    )
    booked = ok(
        http[1 % len(http)].post(
            "/v1/reservations",
            json={
                "bench_id": "rig-1",
                "start": now.isoformat(),
                "end": (now + timedelta(hours=2)).isoformat(),
            },
            headers=CI,
        )
    )
    ok(
        http[0].post(
            "/v1/executions",
            json={
                "reservation_id": booked["reservation_id"],
                "commit_sha": "9fceb02",
                "tasks": [{"type": "flash"}, {"type": "test"}, {"type": "report"}],
            },
            headers=CI,
        )
    )
    for n in range(3):
        client = http[n % len(http)]
        task = ok(client.post("/v1/benches/rig-1/tasks/claim", headers=AGENT1))
        ok(
            client.post(
                f"/v1/tasks/{task['task_id']}/complete", json={"result": {}}, headers=AGENT1
            )
        )
    for client in http:
        client.close()
    # registered, created, queued, 3 claimed, started, finished
    return 8


def by_entity(messages: list[dict[str, Any]]) -> dict[str, list[int]]:
    versions: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        entity = message["data"]["entity"]
        versions[f"{entity['type']}:{entity['id']}"].append(entity["version"])
    return versions


async def test_two_replicas_deliver_every_event_once_in_order_per_entity(
    settings: Settings, tmp_path: Path, receiver: Receiver
) -> None:
    env = settings_env(settings)
    async with running_api(env, tmp_path / "a.log") as first:
        second = await start_api({**env, "ORCH_CREATE_TABLES": "false"}, tmp_path / "b.log")
        try:
            hook = await asyncio.to_thread(subscribe, first.url, receiver)
            expected = await asyncio.to_thread(scripted_run, [first.url, second.url])
            arrived = await asyncio.to_thread(receiver.wait_for, lambda got: len(got) >= expected)
            verifier = Verifier(hook["secret"])
            messages = []
            for message in arrived:
                verifier.verify(message.body, message.headers)
                messages.append(message.json)
            ids = [m["data"]["event_id"] for m in messages]
            assert len(ids) == len(set(ids)) == expected  # once each, no retry was needed
            for versions in by_entity(messages).values():
                assert versions == sorted(versions)
            task_events = [m["type"] for m in messages if m["type"].startswith("task.")]
            assert task_events == ["task.claimed"] * 3
            # In order per entity only: the run's own events end with its verdict, while
            # the last task's claim (another entity) may arrive after it.
            run_events = [m["type"] for m in messages if m["type"].startswith("execution.")]
            assert run_events[-1] == "execution.finished"
            latencies = [
                message.at - datetime.fromisoformat(message.json["data"]["at"]).timestamp()
                for message in arrived
            ]
            print(
                f"\ndelivery latency, commit to receipt ({settings.store}): p50"
                f" {statistics.median(latencies) * 1000:.0f} ms, max"
                f" {max(latencies) * 1000:.0f} ms over {len(latencies)} events"
            )
            attempts = ok(
                await asyncio.to_thread(
                    httpx.get,
                    f"{first.url}/v1/webhooks/{hook['webhook_id']}/deliveries",
                    headers=ADMIN,
                )
            )["items"]
            # One attempt each, from whichever replica claimed it, and nothing more arrived.
            assert sorted(len(d["attempts"]) for d in attempts) == [1] * expected
            assert len(receiver.messages()) == expected
        finally:
            second.kill()
            await second.exit_code()


async def test_a_killed_replica_loses_no_delivery(
    settings: Settings, tmp_path: Path, receiver: Receiver
) -> None:
    env = settings_env(settings)
    held = threading.Event()
    receiver.hold = held
    api = await start_api(env, tmp_path / "a.log")
    try:
        hook = await asyncio.to_thread(subscribe, api.url, receiver)
        for bench_id in ("rig-1", "rig-2", "rig-3"):
            ok(
                await asyncio.to_thread(
                    httpx.post,
                    f"{api.url}/v1/benches",
                    json={"bench_id": bench_id, "name": bench_id, "type": "hil"},
                    headers=ADMIN,
                )
            )
        await asyncio.to_thread(
            receiver.wait_for, lambda got: len(got) >= 1
        )  # the first is in flight, unanswered
        api.kill()
        assert await api.exit_code() != 0
    finally:
        api.kill()
        await api.exit_code()
    receiver.hold = None
    held.set()
    async with running_api({**env, "ORCH_CREATE_TABLES": "false"}, tmp_path / "b.log") as again:
        # The two never sent go at once; the interrupted one once its 3 s claim runs out.
        arrived = await asyncio.to_thread(
            receiver.wait_for,
            lambda got: (
                {m.json["data"]["entity"]["id"] for m in got[1:]} >= {"rig-1", "rig-2", "rig-3"}
            ),
            40,
        )
        listed = ok(
            await asyncio.to_thread(
                httpx.get, f"{again.url}/v1/webhooks/{hook['webhook_id']}/deliveries", headers=ADMIN
            )
        )["items"]
    assert [d["status"] for d in listed] == ["delivered"] * 3
    interrupted = arrived[0].headers["webhook-id"]
    assert [m.headers["webhook-id"] for m in arrived].count(interrupted) >= 2
    print(
        f"\nkilled with 1 delivery in flight and 2 pending ({settings.store}):"
        f" all 3 delivered; {len(arrived)} receipts in all"
    )
