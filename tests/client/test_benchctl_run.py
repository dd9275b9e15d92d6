"""``benchctl run``: an execution followed to its verdict, the exit status being the
verdict (0 passed, 1 failed, 2 errored or timed out, 3 cancelled), and the one-step form
that books, runs and releases, also when stopped by SIGTERM. The agent's side is played
by the test with rig-1's agent token."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bench_client import Client
from bench_client.models import ExecutionOut, ReservationOut, TaskOut

from tests.client.conftest import LiveApi, start_api
from tests.client.test_benchctl_support import Benchctl, finish, poll, register


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    service = start_api(
        tmp_path_factory.mktemp("benchctl-run"), task_lease_s="3", housekeeping_interval_s="1"
    )
    try:
        register(service, "rig-1")
        yield service
    finally:
        service.kill()


@pytest.fixture
def benchctl(api: LiveApi, tmp_path: Path) -> Benchctl:
    return Benchctl(api, tmp_path)


@pytest.fixture
def agent(benchctl: Benchctl) -> Iterator[Client]:
    with benchctl.client("AGENT_TOKEN") as client:
        yield client


@pytest.fixture
def ci(benchctl: Benchctl) -> Iterator[Client]:
    with benchctl.client("CI_TOKEN") as client:
        yield client


@pytest.fixture
def reservation(benchctl: Benchctl) -> Iterator[ReservationOut]:
    """Alice's reservation of rig-1, active now; released after the test."""
    with benchctl.client("USER_TOKEN") as alice:
        now = datetime.now(UTC)
        held = alice.create_reservation(
            bench_id="rig-1", start=now, end=now + timedelta(minutes=30), purpose="CI"
        )
        try:
            yield held
        finally:
            if alice.get_reservation(held.reservation_id).status == "active":
                alice.release_reservation(held.reservation_id)


def claim(agent: Client) -> TaskOut:
    return poll("a task to claim on rig-1", lambda: agent.claim_task("rig-1"))


def execution_of(ci: Client, reservation_id: str) -> ExecutionOut:
    return poll(
        "the execution benchctl creates",
        lambda: next(iter(ci.list_executions(reservation_id=reservation_id)), None),
    )


def run_on(reservation: ReservationOut, *extra: str) -> tuple[str, ...]:
    return ("run", "--reservation", reservation.reservation_id, "--commit", "9fceb02", *extra)


def test_a_run_that_passes_exits_0(
    benchctl: Benchctl, agent: Client, reservation: ReservationOut
) -> None:
    process = benchctl.start(
        *run_on(reservation, "--task", "flash", "--task", "test:suite=smoke,board=b2"),
        "--task-timeout",
        "600",
        "--wait",
        "--timeout",
        "1m",
        token="CI_TOKEN",
    )
    flash = claim(agent)
    assert (flash.type, flash.params, flash.timeout_s) == ("flash", {}, 600)
    agent.complete_task(flash.task_id, {"flashed": True})
    test = claim(agent)
    assert (test.type, test.params) == ("test", {"suite": "smoke", "board": "b2"})
    agent.complete_task(test.task_id, {"passed": 112})
    code, out, err = finish(process)
    assert code == 0, out + err
    assert "task 1/2 flash: succeeded" in out
    assert "task 2/2 test: succeeded" in out
    assert out.rstrip().splitlines()[-1].startswith(f"execution {flash.execution_id} passed")


def test_a_failed_task_exits_1(
    benchctl: Benchctl, agent: Client, reservation: ReservationOut
) -> None:
    process = benchctl.start(
        "-o",
        "json",
        *run_on(reservation, "-t", "flash", "-t", "test"),
        "--wait",
        token="CI_TOKEN",
    )
    flash = claim(agent)
    agent.fail_task(flash.task_id, "checksum mismatch", retryable=False)
    code, out, err = finish(process)
    assert code == 1, out + err
    assert "task 1/2 flash: failed (checksum mismatch)" in err  # -o json: progress on stderr
    final = json.loads(out)  # stdout: the execution as the API gives it
    assert final["status"] == "failed"
    assert [t["status"] for t in final["tasks"]] == ["failed", "cancelled"]


def test_a_task_out_of_attempts_errors_and_exits_2(
    benchctl: Benchctl, agent: Client, reservation: ReservationOut
) -> None:
    process = benchctl.start(
        *run_on(reservation, "-t", "flash", "--max-attempts", "1"), "--wait", token="CI_TOKEN"
    )
    flash = claim(agent)
    assert flash.max_attempts == 1
    agent.fail_task(flash.task_id, "board did not answer", retryable=True)
    code, out, err = finish(process)
    assert code == 2, out + err
    assert "task 1/1 flash: dead (board did not answer)" in out
    assert f"execution {flash.execution_id} errored" in out


def test_a_run_cancelled_while_it_waits_exits_3(
    benchctl: Benchctl, ci: Client, reservation: ReservationOut
) -> None:
    process = benchctl.start(*run_on(reservation, "-t", "flash"), "--wait", token="CI_TOKEN")
    execution = execution_of(ci, reservation.reservation_id)
    ci.cancel_execution(execution.execution_id)
    code, out, err = finish(process)
    assert code == 3, out + err
    assert f"execution {execution.execution_id}: cancelled" in out


def test_giving_up_at_our_own_timeout_exits_2_and_cancels_the_run(
    benchctl: Benchctl, ci: Client, reservation: ReservationOut
) -> None:
    done = benchctl(
        *run_on(reservation, "-t", "flash"), "--wait", "--timeout", "2s", token="CI_TOKEN"
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--timeout" in done.stderr
    execution = execution_of(ci, reservation.reservation_id)
    assert execution.status == "cancelled"


def test_without_wait_it_prints_the_execution_and_a_bad_task_is_a_usage_error(
    benchctl: Benchctl, ci: Client, reservation: ReservationOut
) -> None:
    created = benchctl.json(*run_on(reservation, "-t", "flash:x=1"), token="CI_TOKEN")
    assert created["status"] == "queued"
    assert created["tasks"][0]["params"] == {"x": "1"}
    ci.cancel_execution(created["execution_id"])
    bad = benchctl(*run_on(reservation, "-t", "flash:novalue"), token="CI_TOKEN")
    assert bad.returncode == 4
    assert "novalue" in bad.stderr and "Traceback" not in bad.stderr
    unknown = benchctl("run", "-r", "nope", "--commit", "9fceb02", "-t", "flash", token="CI_TOKEN")
    assert unknown.returncode == 4
    assert "Not Found" in unknown.stderr


def _ci_reservations(ci: Client) -> list[ReservationOut]:
    return list(ci.list_reservations(bench_id="rig-1", user_id="me"))


def test_one_step_books_runs_and_releases(benchctl: Benchctl, agent: Client, ci: Client) -> None:
    process = benchctl.start(
        "run",
        "--capability",
        "can-bus",
        "--for",
        "10m",
        "--max-wait",
        "1m",
        "--commit",
        "abc1234",
        "--task",
        "flash",
        "--wait",
        token="CI_TOKEN",
    )
    flash = claim(agent)
    agent.complete_task(flash.task_id, {})
    code, out, err = finish(process)
    assert code == 0, out + err
    assert "booked rig-1" in out
    held = [r for r in _ci_reservations(ci) if r.start <= datetime.now(UTC)]
    assert [r.status for r in held] == ["released"]
    assert f"reservation {held[0].reservation_id}: released" in out


def test_one_step_waits_for_the_window_within_max_wait(
    benchctl: Benchctl, agent: Client, ci: Client
) -> None:
    with benchctl.client("USER_TOKEN") as alice:
        now = datetime.now(UTC)
        hour = alice.create_reservation(bench_id="rig-1", start=now, end=now + timedelta(hours=1))
        args = ("run", "-c", "can-bus", "--for", "10m", "--commit", "abc1234", "-t", "flash")
        too_far = benchctl(*args, "--max-wait", "10m", "--wait", token="CI_TOKEN")
        assert too_far.returncode == 2, too_far.stdout + too_far.stderr
        assert "later than" in too_far.stderr
        alice.release_reservation(hour.reservation_id)

        now = datetime.now(UTC)
        short = alice.create_reservation(
            bench_id="rig-1", start=now, end=now + timedelta(seconds=6)
        )
        before = {r.reservation_id for r in _ci_reservations(ci)}
        process = benchctl.start(*args, "--max-wait", "5m", "--wait", token="CI_TOKEN")
        flash = claim(agent)
        agent.complete_task(flash.task_id, {})
        code, out, err = finish(process)
    assert code == 0, out + err
    (booked,) = [r for r in _ci_reservations(ci) if r.reservation_id not in before]
    assert booked.start == short.end  # the window after alice's, waited for
    assert flash.execution_id in out
    assert f"reservation {booked.reservation_id}: released" in out


def test_sigterm_cancels_the_run_and_releases_the_bench(benchctl: Benchctl, ci: Client) -> None:
    before = {r.reservation_id for r in _ci_reservations(ci)}
    process = benchctl.start(
        "run",
        "-c",
        "can-bus",
        "--for",
        "10m",
        "--commit",
        "abc1234",
        "-t",
        "flash",
        "--wait",
        token="CI_TOKEN",
    )
    booked = poll(
        "benchctl's reservation",
        lambda: next((r for r in _ci_reservations(ci) if r.reservation_id not in before), None),
    )
    execution = execution_of(ci, booked.reservation_id)
    process.send_signal(signal.SIGTERM)
    code, out, err = finish(process)
    assert code == 143, out + err
    assert "interrupted (SIGTERM)" in err
    assert ci.get_execution(execution.execution_id).status == "cancelled"
    assert ci.get_reservation(booked.reservation_id).status == "released"
