"""Which task a bench hands out next (``next_task``), and the repeat rules of task reports."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from app.errors import Conflict
from app.executions.domain import (
    ExecutionStatus,
    Task,
    TaskSpec,
    TaskStatus,
    cancel_task,
    claim,
    complete,
    expire,
    extend,
    fail,
    new_execution,
    transition,
)
from app.executions.ordering import OPEN_RUNS_READ, OpenRun, next_task, runs_to_read

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


def make(n: int, reservation_id: str = "r1", tasks: int = 3) -> OpenRun:
    """Run ``n`` of a reservation: created ``n`` seconds after NOW, all tasks pending."""
    execution, built = new_execution(
        execution_id=f"e{n}",
        reservation_id=reservation_id,
        bench_id="rig-1",
        created_by="ci",
        commit_sha="abcdef1",
        pipeline_url=None,
        metadata={},
        tasks=[TaskSpec("step", {}, 300, 2) for _ in range(tasks)],
        now=NOW + timedelta(seconds=n),
    )
    return OpenRun(execution, tuple(built))


def leased(run: OpenRun, seq: int) -> OpenRun:
    """The run with task ``seq`` leased and every earlier one succeeded."""
    tasks = list(run.tasks)
    for earlier in range(seq):
        tasks[earlier] = replace(tasks[earlier], status=TaskStatus.SUCCEEDED)
    tasks[seq] = claim(tasks[seq], "agent", NOW, LEASE)
    started = run.execution
    if started.status is ExecutionStatus.QUEUED:
        started = transition(started, ExecutionStatus.RUNNING, NOW)
    return replace(run, execution=started, tasks=tuple(tasks))


def succeeded(run: OpenRun, *seqs: int) -> OpenRun:
    tasks = list(run.tasks)
    for seq in seqs:
        tasks[seq] = replace(tasks[seq], status=TaskStatus.SUCCEEDED)
    return replace(run, tasks=tuple(tasks))


def picked(runs: list[OpenRun], concurrency: int = 1) -> tuple[str, list[str]] | None:
    decision = next_task(runs, concurrency)
    if decision is None:
        return None
    return decision.task.task_id, [task.task_id for task in decision.pinned]


def test_the_first_task_of_the_earliest_run_goes_first() -> None:
    # Given in any order: creation order decides.
    assert picked([make(2), make(1)]) == ("e1.00", [])
    assert picked([]) is None


def test_a_task_waits_for_every_earlier_task_of_its_run() -> None:
    run = leased(make(1), 0)
    assert picked([run]) is None  # task 0 is out: task 1 waits, however free the bench
    assert picked([run], concurrency=5) is None
    assert picked([succeeded(run, 0)]) == ("e1.01", [])
    # A later task never jumps a pending earlier one.
    assert picked([succeeded(make(1), 1)]) == ("e1.00", [])


def test_a_retried_task_is_handed_out_again_before_the_rest() -> None:
    run = leased(make(1), 1)
    retried = fail(run.tasks[1], "agent", NOW, "flaky", retryable=True)
    assert retried.status is TaskStatus.PENDING
    assert picked([replace(run, tasks=(run.tasks[0], retried, run.tasks[2]))]) == ("e1.01", [])
    expired = expire(run.tasks[1], NOW + LEASE)
    assert expired.status is TaskStatus.PENDING
    assert picked([replace(run, tasks=(run.tasks[0], expired, run.tasks[2]))]) == ("e1.01", [])


def test_the_runs_of_a_reservation_start_in_creation_order() -> None:
    first, second = leased(make(1), 0), make(2)
    assert picked([first, second]) is None  # one at a time: the bench is busy
    assert picked([succeeded(first, 0), second]) == ("e1.01", [])  # the earlier run goes on
    passed = transition(first.execution, ExecutionStatus.PASSED, NOW)
    done = replace(succeeded(first, 0, 1, 2), execution=passed)
    assert picked([done, second]) == ("e2.00", [])
    cancelled = replace(
        first,
        execution=transition(first.execution, ExecutionStatus.CANCELLED, NOW),
        tasks=tuple(cancel_task(task, NOW) for task in first.tasks),
    )
    assert picked([cancelled, second]) == ("e2.00", [])


def test_a_run_whose_tasks_are_all_over_is_finished_whatever_a_lagging_index_says() -> None:
    over = succeeded(make(1), 0, 1, 2)
    assert over.execution.status is ExecutionStatus.QUEUED and over.finished
    assert picked([over, make(2)]) == ("e2.00", [])


def test_concurrency_lets_that_many_runs_of_a_reservation_go_side_by_side() -> None:
    runs = [make(1), make(2), make(3), make(4)]
    # Every claimable task but the one leased is pinned: a racing claim that leases one
    # of them sends this claim back to decide again.
    assert picked(runs, concurrency=3) == ("e1.00", ["e2.00", "e3.00"])
    runs[0] = leased(runs[0], 0)
    assert picked(runs, concurrency=3) == ("e2.00", ["e3.00"])
    runs[1] = leased(runs[1], 0)
    runs[2] = leased(runs[2], 0)
    assert picked(runs, concurrency=3) is None  # three leased: the bench is full
    runs[0] = succeeded(runs[0], 0)  # run 1 may go on; run 4 still waits for a lane
    assert picked(runs, concurrency=3) == ("e1.01", [])


def test_leases_of_runs_that_cannot_hand_out_tasks_still_count() -> None:
    ended = replace(leased(make(0, reservation_id="r0"), 0), claimable=False)
    pending = replace(make(1, reservation_id="r0"), claimable=False)
    assert picked([ended, pending, make(2)]) is None
    assert picked([ended, pending, make(2)], concurrency=2) == ("e2.00", [])


def test_runs_of_other_reservations_have_lanes_of_their_own() -> None:
    runs = [make(1, "r1"), make(2, "r1"), make(3, "r2")]
    assert picked(runs, concurrency=2) == ("e1.00", ["e2.00", "e3.00"])


# --- repeated reports ----------------------------------------------------------------------


def one_task() -> Task:
    return leased(make(1, tasks=1), 0).tasks[0]


def test_a_completion_repeated_by_its_agent_with_the_same_result_changes_nothing() -> None:
    task = one_task()
    done = complete(task, "agent", NOW, {"ok": True})
    assert complete(done, "agent", NOW, {"ok": True}, reported_by="agent") is done
    with pytest.raises(Conflict) as different:
        complete(done, "agent", NOW, {"ok": False}, reported_by="agent")
    assert different.value.extensions["allowed_transitions"] == []
    with pytest.raises(Conflict):
        complete(done, "other", NOW, {"ok": True}, reported_by="agent")
    with pytest.raises(Conflict):  # who completed it is unknown: not a repeat
        complete(done, "agent", NOW, {"ok": True})


def test_a_failure_repeated_by_its_agent_changes_nothing() -> None:
    task = one_task()
    failed = fail(task, "agent", NOW, "assert", retryable=False)
    assert fail(failed, "agent", NOW, "assert", False, reported_by="agent") is failed
    for error, retryable in [("other", False), ("assert", True)]:
        with pytest.raises(Conflict):
            fail(failed, "agent", NOW, error, retryable, reported_by="agent")
    retried = fail(task, "agent", NOW, "flaky", retryable=True)
    assert fail(retried, "agent", NOW, "flaky", True, reported_by="agent") is retried
    with pytest.raises(Conflict) as conflict:
        fail(retried, "agent", NOW, "flaky", False, reported_by="agent")
    assert conflict.value.extensions["allowed_transitions"] == ["cancelled", "leased"]


def test_a_heartbeat_after_completion_names_the_allowed_transitions() -> None:
    task = one_task()
    done = complete(task, "agent", NOW, {})
    with pytest.raises(Conflict) as conflict:
        extend(done, "agent", NOW, LEASE)
    assert conflict.value.extensions == {"current_status": "succeeded", "allowed_transitions": []}


def test_a_claim_reads_the_running_runs_and_the_first_concurrency_queued_ones() -> None:
    runs = [make(n) for n in range(6)]
    executions = [run.execution for run in runs]
    # Run 4 started while the bench ran more at once (concurrency lowered since).
    executions[4] = transition(executions[4], ExecutionStatus.RUNNING, NOW)
    executions[0] = transition(executions[0], ExecutionStatus.RUNNING, NOW)
    executions[1] = transition(executions[1], ExecutionStatus.CANCELLED, NOW)
    shuffled = [executions[n] for n in (5, 3, 1, 4, 0, 2)]
    read = runs_to_read(shuffled, 2, claimable=True)
    # e1 is over; e0 and e2 are the first two unfinished; e4 holds a lease; e3, e5 wait.
    assert [e.execution_id for e in read] == ["e0", "e2", "e4"]
    # A reservation that has ended hands out nothing: only the leases count.
    assert [e.execution_id for e in runs_to_read(shuffled, 2, claimable=False)] == ["e0", "e4"]


def test_what_a_claim_reads_does_not_grow_with_the_queue() -> None:
    queue = [make(n, tasks=1).execution for n in range(OPEN_RUNS_READ + 50)]
    assert [e.execution_id for e in runs_to_read(queue, 1, claimable=True)] == ["e0"]
