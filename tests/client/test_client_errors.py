"""The typed errors, each with its members, from a real service's Problem Details; and
``Client.update``'s re-read on 412."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from bench_client import (
    ApiError,
    BadRequest,
    Client,
    Conflict,
    Forbidden,
    InvalidTransition,
    NotFound,
    PreconditionFailed,
    Unauthorized,
    ValidationFailed,
)
from bench_client.models import BenchOut, ExecutionStatus

from tests.client.conftest import LiveApi, start_api


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# One service for the module (starting one takes about two seconds); each test books a
# bench of its own, except the one that needs rig-1's agent.
@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    service = start_api(tmp_path_factory.mktemp("errors") / "service")
    try:
        yield service
    finally:
        service.kill()


@pytest.fixture(scope="module")
def clients(api: LiveApi) -> Iterator[dict[str, Client]]:
    made = {
        name: Client(api.url, api.tokens[f"{name.upper()}_TOKEN"], max_retries=1)
        for name in ("admin", "user", "user2", "ci", "agent")
    }
    made["admin"].create_bench("rig-1", "HIL rig 1", "hil", capabilities=["can-bus"])
    try:
        yield made
    finally:
        for client in made.values():
            client.close()


@pytest.fixture
def bench_id(clients: dict[str, Client]) -> str:
    made = clients["admin"].create_bench(f"rig-{uuid.uuid4().hex[:10]}", "spare", "hil")
    return made.bench_id


def test_double_booking_is_a_conflict_naming_the_reservation(
    clients: dict[str, Client], bench_id: str
) -> None:
    start = now().replace(hour=9, minute=0, second=0) + timedelta(days=1)
    held = clients["user"].create_reservation(
        start=start, end=start + timedelta(hours=2), bench_id=bench_id
    )
    with pytest.raises(Conflict) as caught:
        clients["user2"].create_reservation(
            start=start + timedelta(hours=1), end=start + timedelta(hours=3), bench_id=bench_id
        )
    error = caught.value
    assert type(error) is Conflict  # no allowed_transitions: not an InvalidTransition
    assert error.status == 409
    assert [c.reservation_id for c in error.conflicts] == [held.reservation_id]
    assert (error.conflicts[0].start, error.conflicts[0].end) == (held.start, held.end)
    assert error.allowed_transitions is None
    assert error.request_id
    assert error.problem["conflicts"][0]["reservation_id"] == held.reservation_id
    assert str(error) == f"409 {error.title}: {error.detail}" and "\n" not in str(error)


def test_cancelling_a_released_reservation_is_an_invalid_transition(
    clients: dict[str, Client], bench_id: str
) -> None:
    user = clients["user"]
    booking = user.create_reservation(
        start=now(), end=now() + timedelta(minutes=30), bench_id=bench_id
    )
    user.release_reservation(booking.reservation_id)
    with pytest.raises(InvalidTransition) as caught:
        user.cancel_reservation(booking.reservation_id)
    error = caught.value
    assert isinstance(error, Conflict) and error.status == 409
    assert error.allowed_transitions == []
    assert error.current_status == "released"
    assert error.conflicts == []


def test_cancelling_a_passed_run_is_an_invalid_transition(clients: dict[str, Client]) -> None:
    user, ci, agent = clients["user"], clients["ci"], clients["agent"]
    booking = user.create_reservation(
        start=now(), end=now() + timedelta(minutes=30), bench_id="rig-1"
    )
    run = ci.create_execution(booking.reservation_id, "9fceb02", [{"type": "flash"}])
    task = agent.claim_task("rig-1")
    assert task is not None
    agent.complete_task(task.task_id, {"ok": True})
    assert ci.get_execution(run.execution_id).status is ExecutionStatus.passed
    with pytest.raises(InvalidTransition) as caught:
        ci.cancel_execution(run.execution_id)
    assert caught.value.allowed_transitions == []
    assert caught.value.current_status == "passed"


def test_a_stale_update_is_precondition_failed_with_the_current_etag(
    clients: dict[str, Client], bench_id: str
) -> None:
    admin = clients["admin"]
    read = admin.get_bench(bench_id)
    admin.update_bench(read, name="renamed once")
    with pytest.raises(PreconditionFailed) as caught:
        admin.update_bench(read, name="late edit")
    assert caught.value.status == 412
    assert caught.value.current_etag == '"2"'
    assert admin.get_bench(bench_id).name == "renamed once"


def test_update_reapplies_the_change_after_a_concurrent_one(
    clients: dict[str, Client], bench_id: str
) -> None:
    admin = clients["admin"]
    other = clients["admin"]  # the same caller elsewhere: another script, another shell
    attempts: list[int] = []

    def change(bench: BenchOut) -> BenchOut:
        attempts.append(bench.version)
        if len(attempts) == 1:  # someone else changes it between our read and our write
            other.update_bench(other.get_bench(bench_id), labels={"room": "b9"})
        return admin.update_bench(bench, name="mine")

    result = admin.update(lambda: admin.get_bench(bench_id), change, retry_on_conflict=2)
    assert attempts == [1, 2]
    assert (result.version, result.name, result.labels) == (3, "mine", {"room": "b9"})


def test_update_gives_up_after_retry_on_conflict(clients: dict[str, Client], bench_id: str) -> None:
    admin = clients["admin"]
    stale = admin.get_bench(bench_id)
    admin.update_bench(stale, name="moved on")
    calls: list[int] = []

    def change(_: BenchOut) -> BenchOut:
        calls.append(1)
        return admin.update_bench(stale, name="never")  # always the stale version

    with pytest.raises(PreconditionFailed):
        admin.update(lambda: admin.get_bench(bench_id), change, retry_on_conflict=2)
    assert len(calls) == 3


def test_not_found_forbidden_unauthorized_validation_bad_request(
    api: LiveApi, clients: dict[str, Client], bench_id: str
) -> None:
    user = clients["user"]
    with pytest.raises(NotFound) as missing:
        user.get_bench("no-such-rig")
    assert missing.value.status == 404 and missing.value.problem["instance"].endswith(
        "/no-such-rig"
    )
    with pytest.raises(NotFound):
        list(user.bench_history("no-such-rig"))
    with pytest.raises(NotFound):
        user.get_reservation("00000000-0000-4000-8000-000000000000")

    with pytest.raises(Forbidden) as forbidden:
        user.create_bench("rig-2", "not mine to make", "hil")  # admins only
    assert forbidden.value.status == 403
    with pytest.raises(Forbidden):
        user.claim_task("rig-1")  # only the bench's agent claims its tasks

    with Client(api.url, "not-a-token") as stranger, pytest.raises(Unauthorized) as caught:
        stranger.get_bench(bench_id)
    assert caught.value.status == 401

    with pytest.raises(ValidationFailed) as invalid:
        user.create_reservation(start=now() + timedelta(hours=2), end=now() + timedelta(hours=1),
                                bench_id=bench_id)  # fmt: skip
    assert invalid.value.status == 422
    with pytest.raises(ValidationFailed) as schema:
        clients["admin"].create_bench("Not A Valid Id!", "x", "hil")
    assert any(error["location"][-1] == "bench_id" for error in schema.value.errors)

    with pytest.raises(ValidationFailed):
        list(user.list_benches(status="sleeping"))
    # A garbled cursor is a 400 (the client only ever sends the cursors it was given).
    forged = user._ops.list_benches().call("not-a-cursor")
    with pytest.raises(BadRequest) as bad:
        user._run(forged)
    assert isinstance(bad.value, ApiError) and bad.value.status == 400
