from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.errors import Conflict
from app.executions.domain import (
    EXECUTION_TRANSITIONS,
    Execution,
    ExecutionStatus,
    Task,
    TaskSpec,
    TaskStatus,
    claim,
    complete,
    expire,
    extend,
    fail,
    new_execution,
    report,
    timed_out,
    transition,
    verdict,
)
from app.ids import sortable_uuid

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


def run(timeout_s: int = 300, attempts: int = 3) -> tuple[Execution, list[Task]]:
    return new_execution(
        execution_id="e1",
        reservation_id="r1",
        bench_id="rig-1",
        created_by="ci",
        commit_sha="ABCDEF1",
        pipeline_url=None,
        metadata={},
        tasks=[TaskSpec("flash", {}, timeout_s, attempts), TaskSpec("test", {}, timeout_s, 1)],
        now=NOW,
    )


def test_new_execution_is_queued_with_ordered_pending_tasks() -> None:
    execution, tasks = run()
    assert execution.status is ExecutionStatus.QUEUED
    assert execution.commit_sha == "abcdef1"
    assert execution.task_ids == ("e1.00", "e1.01")
    assert execution.time_budget_s == 300 * 3 + 300 * 1
    assert [t.status for t in tasks] == [TaskStatus.PENDING] * 2


@pytest.mark.parametrize("start", list(ExecutionStatus))
@pytest.mark.parametrize("target", list(ExecutionStatus))
def test_state_machine(start: ExecutionStatus, target: ExecutionStatus) -> None:
    execution, _ = run()
    from dataclasses import replace

    execution = replace(execution, status=start)
    if target is start:  # reporting the current status again changes nothing
        assert transition(execution, target, NOW) is execution
    elif target in EXECUTION_TRANSITIONS[start]:
        moved = transition(execution, target, NOW)
        assert (moved.status, moved.version) == (target, 2)
        assert (moved.finished_at is not None) == target.is_terminal
    else:
        with pytest.raises(Conflict) as caught:
            transition(execution, target, NOW)
        assert caught.value.extensions["allowed_transitions"] == sorted(
            s.value for s in EXECUTION_TRANSITIONS[start]
        )


def test_terminal_states_are_final() -> None:
    assert {s for s in ExecutionStatus if s.is_terminal} == {
        ExecutionStatus.PASSED,
        ExecutionStatus.FAILED,
        ExecutionStatus.ERRORED,
        ExecutionStatus.CANCELLED,
        ExecutionStatus.TIMED_OUT,
    }


def test_report_is_one_version_and_sets_times() -> None:
    execution, _ = run()
    running = transition(execution, ExecutionStatus.RUNNING, NOW)
    later = NOW + timedelta(minutes=3)
    done = report(
        running, status=ExecutionStatus.PASSED, artifacts_uri="s3://x", summary="ok", now=later
    )
    assert (done.version, done.started_at, done.finished_at) == (3, NOW, later)
    assert done.duration_s == 180.0
    same = report(done, status=None, artifacts_uri="s3://x", summary=None, now=later)
    assert same is done


def leased(task: Task, at: datetime = NOW) -> Task:
    return claim(task, "agent", at, LEASE)


def test_lease_is_capped_by_the_attempts_timeout() -> None:
    _, tasks = run(timeout_s=90)
    task = leased(tasks[0])
    assert task.lease_expires_at == NOW + LEASE
    extended = extend(task, "agent", NOW + timedelta(seconds=50), LEASE)
    assert extended.lease_expires_at == NOW + timedelta(seconds=90)
    with pytest.raises(Conflict):
        extend(extended, "other", NOW + timedelta(seconds=60), LEASE)
    with pytest.raises(Conflict):
        extend(extended, "agent", NOW + timedelta(seconds=90), LEASE)


def test_retries_until_dead() -> None:
    _, tasks = run(attempts=2)
    once = fail(leased(tasks[0]), "agent", NOW, "flaky", retryable=True)
    assert (once.status, once.attempts) == (TaskStatus.PENDING, 1)
    twice = expire(leased(once, NOW), NOW + LEASE)
    assert (twice.status, twice.attempts, twice.error) == (TaskStatus.DEAD, 2, "lease expired")
    live = leased(tasks[0])
    assert expire(live, NOW + timedelta(seconds=59)) is live
    final = fail(leased(tasks[1]), "agent", NOW, "assert", retryable=False)
    assert final.status is TaskStatus.FAILED


def test_verdicts() -> None:
    _, (a, b) = run()
    ok_a = complete(leased(a), "agent", NOW, {})
    ok_b = complete(leased(b), "agent", NOW, {})
    assert verdict([ok_a, b]) is None
    assert verdict([ok_a, ok_b]) is ExecutionStatus.PASSED
    dead = fail(leased(b), "agent", NOW, "x", retryable=True)  # b has one attempt
    assert dead.status is TaskStatus.DEAD
    assert verdict([a, dead]) is ExecutionStatus.ERRORED
    failed = fail(leased(a), "agent", NOW, "x", retryable=False)
    assert verdict([failed, dead]) is ExecutionStatus.FAILED


def test_time_budget() -> None:
    execution, _ = run(timeout_s=60, attempts=1)
    running = transition(execution, ExecutionStatus.RUNNING, NOW)
    assert not timed_out(running, NOW + timedelta(seconds=119))
    assert timed_out(running, NOW + timedelta(seconds=120))
    assert not timed_out(execution, NOW + timedelta(days=1))  # queued runs wait


def test_sortable_ids_keep_creation_order_within_a_millisecond() -> None:
    ids = [sortable_uuid(NOW) for _ in range(50)] + [sortable_uuid(NOW - timedelta(hours=1))]
    assert ids == sorted(ids)
    assert len(set(ids)) == 51
