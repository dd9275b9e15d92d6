"""Which task a bench hands out next: the ordering rules of claims. Pure, no I/O.

Tasks of a run go strictly in order, a bench runs at most ``concurrency`` tasks at once,
and the runs of a reservation start in creation order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from app.benches.domain import MAX_CONCURRENCY
from app.executions.domain import Execution, ExecutionStatus, Task, TaskStatus


@dataclass(frozen=True, slots=True)
class OpenRun:
    """An execution on a bench with its tasks, as a claim reads them.

    ``claimable``: its reservation is active, so its tasks may be handed out now. The runs
    of a reservation that has ended are not, yet the leases they still hold keep the
    bench busy.
    """

    execution: Execution
    tasks: tuple[Task, ...]
    claimable: bool = True

    @property
    def finished(self) -> bool:
        # A verdict commits with the task change that decides it, and ending a run cancels
        # its tasks: a run whose tasks are all over is over, even while an index that lags
        # still lists it as open.
        return self.execution.status.is_terminal or all(
            task.status.is_terminal for task in self.tasks
        )

    @property
    def head(self) -> Task | None:
        """The first task that has not succeeded: the one task of the run that may run."""
        ordered = sorted(self.tasks, key=lambda task: task.seq)
        return next((task for task in ordered if task.status is not TaskStatus.SUCCEEDED), None)

    @property
    def leased(self) -> int:
        return sum(1 for task in self.tasks if task.status is TaskStatus.LEASED)


@dataclass(frozen=True, slots=True)
class NextTask:
    """The task a claim leases, and the tasks its decision relies on staying as read."""

    execution: Execution
    task: Task
    # Every other task that could be handed out now. A claim that leased one of them
    # meanwhile must send this one back to decide again, or the two together could pass
    # the bench's concurrency: the claim's writes are conditioned on their versions.
    pinned: tuple[Task, ...]


def held_back(runs: Sequence[OpenRun], quarantined_since: datetime | None) -> list[OpenRun]:
    """A quarantined bench finishes what it had but is handed nothing of runs created
    since its quarantine: they wait (their leases, if any, still count)."""
    if quarantined_since is None:
        return list(runs)
    return [
        replace(run, claimable=False) if run.execution.created_at >= quarantined_since else run
        for run in runs
    ]


def next_task(runs: Sequence[OpenRun], concurrency: int) -> NextTask | None:
    """The task a bench's agent gets next, or None when the bench has nothing to hand out.

    - A task is claimable only when every earlier task of its execution has succeeded:
      an execution has at most one task out at a time, its head.
    - The bench runs at most ``concurrency`` tasks at once: every leased task of a run on
      it counts (whether or not its lease has run out yet), whatever its reservation.
    - The executions of a reservation start in creation order: an execution's first task
      is not claimable while ``concurrency`` earlier executions of its reservation are
      unfinished. With the default concurrency of 1 they run one after another.
    - Of the claimable tasks, the one of the earliest execution goes first.

    An expired lease or a retryable failure puts a task back to pending: it is still its
    execution's head, so it is the one handed out again.
    """
    if sum(run.leased for run in runs) >= concurrency:
        return None
    started: dict[str, int] = {}  # reservation id -> its unfinished runs seen so far
    claimable: list[tuple[Execution, Task]] = []
    for run in sorted(runs, key=lambda run: execution_order(run.execution)):
        if run.finished or not run.claimable:
            continue
        reservation_id = run.execution.reservation_id
        ahead = started.get(reservation_id, 0)
        started[reservation_id] = ahead + 1
        if ahead >= concurrency:
            continue
        head = run.head
        if head is not None and head.status is TaskStatus.PENDING:
            claimable.append((run.execution, head))
    if not claimable:
        return None
    (execution, task), *others = claimable
    return NextTask(execution, task, tuple(other for _, other in others))


# Every run that holds a lease is among the first MAX_CONCURRENCY unfinished runs of its
# reservation: it started within the first ``concurrency`` of them (never more than
# MAX_CONCURRENCY), and a run only moves up as earlier ones finish. A claim reads that
# many open runs, not every queued one: its cost does not grow with the queue.
OPEN_RUNS_READ = MAX_CONCURRENCY


def runs_to_read(
    executions: Sequence[Execution], concurrency: int, *, claimable: bool
) -> list[Execution]:
    """Of a reservation's open executions in creation order, those whose tasks a claim
    must read: every running one (its leases count), and while the reservation hands
    out work, the first ``concurrency`` unfinished ones (only they may start). The
    queued runs behind those can neither start nor hold a lease."""
    wanted: list[Execution] = []
    unfinished = 0
    for execution in sorted(executions, key=execution_order):
        if execution.status.is_terminal:
            continue
        may_start = claimable and unfinished < concurrency
        unfinished += 1
        if may_start or execution.status is ExecutionStatus.RUNNING:
            wanted.append(execution)
    return wanted


def execution_order(execution: Execution) -> tuple[datetime, str]:
    """Creation order, as the store lists executions."""
    return execution.created_at, execution.execution_id
