"""Every method of bench_client.Client, once, against a real service on each store: the
embedded SQLite one and DynamoDB (moto's server, tables of the test's own)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bench_client import Client
from bench_client.models import (
    AdminState,
    BenchOut,
    ExecutionStatus,
    Liveness,
    ReservationStatus,
    TaskIn,
    TaskStatus,
)

from tests.client.conftest import start_api


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(params=["sqlite", "dynamodb"])
def clients(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Client]]:
    store: dict[str, str] = {}
    if request.param == "dynamodb":
        store = {
            "store": "dynamodb",
            "dynamodb_endpoint_url": request.getfixturevalue("moto_endpoint"),
            "create_tables": "true",
            "table_prefix": f"client-{uuid.uuid4().hex[:8]}-",
        }
    # Housekeeping often, so that the liveness log shows a transition soon.
    live_api = start_api(tmp_path / "service", housekeeping_interval_s="0.2", **store)
    made = {
        name: Client(live_api.url, live_api.tokens[f"{name.upper()}_TOKEN"], max_retries=2)
        for name in ("admin", "user", "user2", "ci", "agent")
    }
    try:
        yield made
    finally:
        for client in made.values():
            client.close()
        live_api.kill()


def test_bench_methods(clients: dict[str, Client]) -> None:
    admin, user, agent = clients["admin"], clients["user"], clients["agent"]
    bench = admin.create_bench(
        "rig-1",
        "HIL rig 1",
        "hil",
        capabilities=["can-bus", "arm64"],
        labels={"room": "b2"},
        heartbeat_interval_s=30,
        concurrency=1,
    )
    assert isinstance(bench, BenchOut)
    assert (bench.bench_id, bench.version, bench.admin_state) == ("rig-1", 1, AdminState.active)
    assert bench.created_at.tzinfo is not None
    assert user.get_bench("rig-1") == bench

    assert [b.bench_id for b in user.list_benches(capabilities=["can-bus", "arm64"])] == ["rig-1"]
    assert list(user.list_benches(capabilities=["no-such"])) == []
    assert [b.bench_id for b in user.list_benches(type="hil", admin_state="active")] == ["rig-1"]

    beat = agent.post_heartbeat("rig-1", "1.0.0", {"temp_c": 41})
    assert beat.status is Liveness.online
    assert beat.next_heartbeat_due_at > beat.last_heartbeat_at
    assert beat.next_heartbeat_due_at.tzinfo is not None
    assert [b.bench_id for b in user.list_benches(status="online")] == ["rig-1"]
    deadline = time.monotonic() + 10
    while not (log := list(user.bench_liveness("rig-1"))):
        assert time.monotonic() < deadline, "no liveness transition logged"
        time.sleep(0.1)
    assert log[-1].changes

    changed = admin.update_bench(bench, labels={"room": "b3"}, admin_state=AdminState.maintenance)
    assert (changed.version, changed.labels, changed.admin_state) == (
        2,
        {"room": "b3"},
        AdminState.maintenance,
    )
    history = list(user.bench_history("rig-1"))
    assert [entry.version for entry in history] == [1, 2]

    spare = admin.create_bench("rig-old", "Old rig", "hil")
    retired = admin.retire_bench(spare)
    assert retired.admin_state is AdminState.retired
    assert [b.bench_id for b in user.list_benches(admin_state="retired")] == ["rig-old"]


def test_reservation_methods(clients: dict[str, Client]) -> None:
    admin, user = clients["admin"], clients["user"]
    admin.create_bench("rig-1", "HIL rig 1", "hil", capabilities=["can-bus"])
    tomorrow = now().replace(hour=9, minute=0, second=0) + timedelta(days=1)

    windows = user.find_availability(timedelta(hours=2), capabilities=["can-bus"])
    assert windows and windows[0].bench_id == "rig-1"
    assert windows[0].end - windows[0].start >= timedelta(hours=2)
    assert (
        len(
            user.find_availability(timedelta(minutes=90), bench_id="rig-1", start=tomorrow, limit=1)
        )
        == 1
    )

    booked = user.create_reservation(
        start=tomorrow, end=tomorrow + timedelta(hours=2), bench_id="rig-1", purpose="CAN"
    )
    assert booked.status is ReservationStatus.confirmed
    assert booked.start == tomorrow and booked.start.tzinfo is not None
    assert user.get_reservation(booked.reservation_id) == booked
    picked = user.create_reservation(
        start=tomorrow + timedelta(hours=3),
        end=tomorrow + timedelta(hours=4),
        capabilities=["can-bus"],
    )
    assert picked.bench_id == "rig-1"

    mine = list(user.list_reservations(user_id="me", bench_id="rig-1"))
    assert [r.reservation_id for r in mine] == [booked.reservation_id, picked.reservation_id]
    assert [
        r.reservation_id for r in user.list_reservations(start=tomorrow + timedelta(hours=3))
    ] == [picked.reservation_id]

    moved = user.update_reservation(booked, end=tomorrow + timedelta(hours=1), purpose="short")
    assert (moved.version, moved.end, moved.purpose) == (2, tomorrow + timedelta(hours=1), "short")
    calendar = list(user.bench_calendar("rig-1", start=tomorrow, end=tomorrow + timedelta(days=1)))
    assert [r.reservation_id for r in calendar] == [booked.reservation_id, picked.reservation_id]
    assert [e.version for e in user.reservation_history(booked.reservation_id)] == [1, 2]

    cancelled = user.cancel_reservation(picked.reservation_id)
    assert cancelled.status is ReservationStatus.cancelled
    # repeating an action whose effect holds is a no-op (200, same version)
    assert user.cancel_reservation(picked.reservation_id).version == cancelled.version
    assert [r.reservation_id for r in user.list_reservations(status="cancelled")] == [
        picked.reservation_id
    ]

    active = user.create_reservation(
        start=now(), end=now() + timedelta(minutes=30), bench_id="rig-1"
    )
    assert active.status is ReservationStatus.active
    released = user.release_reservation(active.reservation_id)
    assert released.status is ReservationStatus.released


def test_execution_and_task_methods(clients: dict[str, Client]) -> None:
    admin, user, ci, agent = clients["admin"], clients["user"], clients["ci"], clients["agent"]
    admin.create_bench("rig-1", "HIL rig 1", "hil")
    booking = user.create_reservation(
        start=now(), end=now() + timedelta(minutes=60), bench_id="rig-1", purpose="CI"
    )
    run = ci.create_execution(
        booking.reservation_id,
        "9fceb02",
        [{"type": "flash", "params": {"image": "a.bin"}, "timeout_s": 600, "max_attempts": 3},
         TaskIn(type="test")],
        pipeline_url="https://ci.example/p/1",
        metadata={"branch": "main"},
    )  # fmt: skip
    assert run.status is ExecutionStatus.queued
    assert run.tasks is not None and [t.type for t in run.tasks] == ["flash", "test"]
    assert ci.get_execution(run.execution_id).execution_id == run.execution_id
    assert [e.execution_id for e in ci.list_executions(reservation_id=booking.reservation_id)] == [
        run.execution_id
    ]
    assert [e.execution_id for e in ci.list_executions(bench_id="rig-1", status="queued")] == [
        run.execution_id
    ]
    assert [e.execution_id for e in ci.reservation_executions(booking.reservation_id)] == [
        run.execution_id
    ]

    first = agent.claim_task("rig-1")
    assert first is not None and first.type == "flash" and first.status is TaskStatus.leased
    assert first.params == {"image": "a.bin"}
    extended = agent.heartbeat_task(first.task_id)
    assert extended.lease_expires_at is not None
    done = agent.complete_task(first.task_id, {"flashed": True})
    assert done.status is TaskStatus.succeeded and done.result == {"flashed": True}
    assert agent.get_task(first.task_id).status is TaskStatus.succeeded
    actions = [entry.action for entry in agent.task_history(first.task_id)]
    assert "claimed" in actions and len(actions) >= 2, actions

    second = agent.claim_task("rig-1")
    assert second is not None and second.type == "test"
    failed = agent.fail_task(second.task_id, "timeout on CAN", retryable=False)
    assert failed.status in (TaskStatus.failed, TaskStatus.dead)
    assert agent.claim_task("rig-1") is None  # 204: nothing left to run

    finished = ci.get_execution(run.execution_id)
    assert finished.status is ExecutionStatus.failed
    annotated = ci.update_execution(
        finished, artifacts_uri="s3://lab/artifacts/1", summary="CAN timeout"
    )
    assert (annotated.artifacts_uri, annotated.summary) == ("s3://lab/artifacts/1", "CAN timeout")
    assert [e.version for e in ci.execution_history(run.execution_id)][-1] == annotated.version

    other = ci.create_execution(booking.reservation_id, "abcdef1", [{"type": "flash"}])
    assert ci.cancel_execution(other.execution_id).status is ExecutionStatus.cancelled
