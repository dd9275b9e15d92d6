"""Executions and tasks on DynamoDB.

A change set (``apply``) is one TransactWriteItems: every create, replace and version
check, every history entry and the idempotency key. Each condition names its own item,
and ALL_OLD hands back the stored item of a lost condition, so a VersionMismatch carries
the current item without a second read.

Listings read the execution indexes, which lag the table by a moment. The lease sweep
reads the sparse lease index and then re-reads its candidates consistently: a task that
was completed or extended a moment ago, still listed with its old lease, is left out (a
lease the index has not caught up with yet waits for the next sweep).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from app.executions.domain import Execution, Task, TaskStatus
from app.executions.ordering import OPEN_RUNS_READ
from app.history.domain import HistoryEntry
from app.store.base import (
    AlreadyExists,
    ExecutionQuery,
    IdempotencyRecord,
    ItemNotFound,
    Page,
    StoreError,
    StoreUnavailable,
    VersionMismatch,
    Write,
    execution_page_key,
)
from app.store.dynamodb.calls import (
    CONDITION_FAILED,
    MAX_TRANSACTION_ACTIONS,
    TRANSACTION_CONFLICT,
    Call,
    Reasons,
    batch_get,
    cancelled,
    failed,
    get_one,
    key_taken,
    old_item,
    one_more_than,
    page_of,
    query_until,
    reason_code,
    transact,
)
from app.store.dynamodb.codec import (
    Action,
    Item,
    decode_execution,
    decode_task,
    encode_execution,
    encode_task,
    execution_key,
    n,
    put_record,
    s,
    task_key,
)
from app.store.dynamodb.history import HistoryTable
from app.store.dynamodb.tables import (
    BENCH_EXECUTIONS_INDEX,
    CREATED_KEY,
    EXECUTION_STATUS_INDEX,
    LEASE_INDEX,
    LEASED_PK,
    OPEN_EXECUTIONS_INDEX,
    OPEN_RESERVATION_ID,
    RESERVATION_EXECUTIONS_INDEX,
)
from app.timeutil import to_iso


class _Versioned(Protocol):
    @property
    def version(self) -> int: ...


V = TypeVar("V", bound=_Versioned)

# A TransactionConflict means another transaction held one of our items at that moment.
# Nothing was written, so sending the same change set again is safe: if the other one
# changed our item, the resend fails its condition and reports VersionMismatch.
_CONFLICT_ATTEMPTS = 3
_BACKOFF_BASE_S = 0.01
_BACKOFF_CAP_S = 0.1


class DynamoExecutionRepository:
    def __init__(
        self,
        call: Call,
        *,
        executions_table: str,
        tasks_table: str,
        history_table: HistoryTable,
        idempotency_table: str,
    ) -> None:
        self._call = call
        self._executions = executions_table
        self._tasks = tasks_table
        self._history = history_table
        self._idempotency = idempotency_table
        self._execution_kind: _Kind[Execution] = _Kind(
            executions_table,
            "execution_id",
            lambda execution: execution.execution_id,
            encode_execution,
            decode_execution,
        )
        self._task_kind: _Kind[Task] = _Kind(
            tasks_table, "task_id", lambda task: task.task_id, encode_task, decode_task
        )

    # --- change sets ---------------------------------------------------------------------

    async def apply(
        self,
        executions: Sequence[Write[Execution]],
        tasks: Sequence[Write[Task]],
        entries: Sequence[HistoryEntry],
        idempotency: IdempotencyRecord | None = None,
    ) -> None:
        events = sum(entry.event is not None for entry in entries)
        count = len(executions) + len(tasks) + len(entries) + events + (idempotency is not None)
        if count > MAX_TRANSACTION_ACTIONS:
            raise ValueError(
                f"a change set of {count} writes is over DynamoDB's"
                f" {MAX_TRANSACTION_ACTIONS} per transaction"
            )
        actions: list[Action] = []
        # Per action, how its failed condition is reported (None: a history entry or the
        # event it raises).
        failures: list[Callable[[Item | None], StoreError] | None] = []
        for execution_write in executions:
            actions.append(self._execution_kind.action(execution_write))
            failures.append(partial(self._execution_kind.failure, execution_write))
        for task_write in tasks:
            actions.append(self._task_kind.action(task_write))
            failures.append(partial(self._task_kind.failure, task_write))
        for entry in entries:
            for action in self._history.puts(entry):
                actions.append(action)
                failures.append(None)
        if idempotency is not None:
            actions.append(put_record(self._idempotency, idempotency))
        if not actions:
            return

        for attempt in range(_CONFLICT_ATTEMPTS):
            if attempt:
                await asyncio.sleep(
                    random.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt))
                )
            reasons = await transact(self._call, actions)
            if reasons is None:
                return
            if idempotency is not None and (taken := key_taken(reasons, len(actions) - 1)):
                raise taken
            for index, failure in enumerate(failures):
                if failed(reasons, index):
                    if failure is None:
                        # Its item passed its version check, yet an entry for the new
                        # version (or an event of that id) exists: the caller numbered
                        # the entry wrongly, or raised one event twice.
                        raise StoreError(
                            "a history entry or event of this change set already exists"
                        )
                    raise failure(old_item(reasons, index))
            if not _only_conflicts(reasons):
                raise cancelled(reasons)
        raise StoreUnavailable(
            f"DynamoDB change set: transaction conflicts {_CONFLICT_ATTEMPTS} times in a row"
        )

    # --- reads ---------------------------------------------------------------------------

    async def get(self, execution_id: str) -> Execution | None:
        return await get_one(
            self._call, self._executions, execution_key(execution_id), decode_execution
        )

    async def get_task(self, task_id: str) -> Task | None:
        return await get_one(self._call, self._tasks, task_key(task_id), decode_task)

    async def get_tasks(self, task_ids: Sequence[str]) -> list[Task]:
        found = await self._read_tasks(task_ids)
        return [found[task_id] for task_id in task_ids if task_id in found]

    async def find(self, query: ExecutionQuery, limit: int, after: str | None) -> Page[Execution]:
        want = one_more_than(limit)
        status = None if query.status is None else query.status.value
        # The most selective index holds the partition; the other filters ride along.
        filters: dict[str, str] = {}
        if query.reservation_id is not None:
            index, partition, value = (
                (OPEN_EXECUTIONS_INDEX, OPEN_RESERVATION_ID, query.reservation_id)
                if query.open_only
                else (RESERVATION_EXECUTIONS_INDEX, "reservation_id", query.reservation_id)
            )
            if query.bench_id is not None:
                filters["bench_id"] = query.bench_id
            if status is not None:
                filters["status"] = status
        elif query.bench_id is not None:
            index, partition, value = BENCH_EXECUTIONS_INDEX, "bench_id", query.bench_id
            if status is not None:
                filters["status"] = status
        elif status is not None:
            index, partition, value = EXECUTION_STATUS_INDEX, "status", status
        else:
            raise ValueError("an execution query needs reservation_id, bench_id or status")

        # STATUS is a reserved word; every name goes through a placeholder alike.
        names = {"#pk": partition}
        values: Item = {":pk": s(value)}
        conditions = []
        for number, (name, wanted) in enumerate(sorted(filters.items())):
            names[f"#f{number}"] = name
            values[f":f{number}"] = s(wanted)
            conditions.append(f"#f{number} = :f{number}")
        if query.open_only and index != OPEN_EXECUTIONS_INDEX:
            names["#open"] = OPEN_RESERVATION_ID
            conditions.append("attribute_exists(#open)")
        params: dict[str, Any] = {
            "TableName": self._executions,
            "IndexName": index,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        if conditions:
            params["FilterExpression"] = " AND ".join(conditions)

        start: Item | None = None
        if after is not None:
            created_at, _, execution_id = after.partition("|")
            if not created_at or not execution_id:
                raise ValueError(f"not an execution page key: {after!r}")
            # The created_key is unique per item, so the page resumes right after it
            # whether or not that execution is still in this partition.
            start = {
                **execution_key(execution_id),
                partition: s(value),
                CREATED_KEY: s(after),
            }

        found = await query_until(
            self._call,
            params,
            want,
            lambda items: [decode_execution(item) for item in items],
            filtered=bool(conditions),
            start=start,
        )
        return page_of(found, limit, execution_page_key)

    async def find_claim_candidates(self, reservation_id: str, first: int) -> list[Execution]:
        # One Query of the sparse open-runs index: every run holding a lease is among the
        # first OPEN_RUNS_READ open ones (see ordering), so one page has them all.
        query = ExecutionQuery(reservation_id=reservation_id, open_only=True)
        page = await self.find(query, max(first, OPEN_RUNS_READ), None)
        return page.items

    async def find_expired_leases(self, now: datetime, limit: int) -> list[Task]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        params: dict[str, Any] = {
            "TableName": self._tasks,
            "IndexName": LEASE_INDEX,
            "KeyConditionExpression": "lease_pk = :leased AND lease_expires_at <= :now",
            "ExpressionAttributeValues": {":leased": s(LEASED_PK), ":now": s(to_iso(now))},
            "ScanIndexForward": True,
        }

        async def keep(items: list[Item]) -> list[Task]:
            candidates = [item["task_id"]["S"] for item in items]
            # The index lags: a task completed or extended a moment ago may still be listed
            # with its old lease. The table, read consistently, decides.
            current = await self._read_tasks(candidates)
            return [
                task
                for task_id in candidates
                if (task := current.get(task_id)) is not None and _lease_ended(task, now)
            ]

        expired = await query_until(self._call, params, limit, keep)
        expired.sort(key=lambda task: (task.lease_expires_at, task.task_id))
        return expired

    async def _read_tasks(self, task_ids: Sequence[str]) -> dict[str, Task]:
        # BatchGetItem refuses a key named twice in one request.
        unique = list(dict.fromkeys(task_ids))
        if not unique:
            return {}
        found = await batch_get(self._call, {self._tasks: [task_key(i) for i in unique]})
        tasks = [decode_task(item) for item in found[self._tasks]]
        return {task.task_id: task for task in tasks}


def _lease_ended(task: Task, now: datetime) -> bool:
    return (
        task.status is TaskStatus.LEASED
        and task.lease_expires_at is not None
        and task.lease_expires_at <= now
    )


def _only_conflicts(reasons: Reasons) -> bool:
    """Cancelled only because another transaction held an item: nothing was decided."""
    codes = {reason_code(reasons, index) for index in range(len(reasons))}
    return TRANSACTION_CONFLICT in codes and CONDITION_FAILED not in codes


@dataclass(frozen=True, slots=True)
class _Kind(Generic[V]):
    """How one kind of versioned item maps to its table, for change sets."""

    table: str
    key_name: str
    key_of: Callable[[V], str]
    encode: Callable[[V], Item]
    decode: Callable[[Item], V]

    def key(self, item: V) -> Item:
        return {self.key_name: s(self.key_of(item))}

    def action(self, write: Write[V]) -> Action:
        """The transaction action for one Write: a create, a whole-item replace, a check."""
        if write.before is None:
            if write.after is None:
                raise ValueError("a write needs an item before or after")
            return {
                "Put": {
                    "TableName": self.table,
                    "Item": self.encode(write.after),
                    "ConditionExpression": "attribute_not_exists(#pk)",
                    "ExpressionAttributeNames": {"#pk": self.key_name},
                }
            }
        versioned: dict[str, Any] = {
            "TableName": self.table,
            # A missing item fails ``version = :seen`` too: no Item back means it is gone.
            "ConditionExpression": "#version = :seen",
            "ExpressionAttributeNames": {"#version": "version"},
            "ExpressionAttributeValues": {":seen": n(write.before.version)},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if write.after is None:
            return {"ConditionCheck": {**versioned, "Key": self.key(write.before)}}
        if self.key_of(write.after) != self.key_of(write.before):
            raise ValueError(f"a replace keeps its key: {self.key_of(write.before)!r}")
        # The whole new item, not an Update: attributes the new state lacks (a finished
        # task's lease_pk, say) disappear with it, exactly as the domain object says.
        return {"Put": {**versioned, "Item": self.encode(write.after)}}

    def failure(self, write: Write[V], stored: Item | None) -> StoreError:
        """What a failed condition on ``write`` means, given the ALL_OLD item if any."""
        item = write.before if write.before is not None else write.after
        assert item is not None
        if write.before is None:
            return AlreadyExists(self.key_of(item))
        if stored is None:
            return ItemNotFound(self.key_of(item))
        return VersionMismatch(self.decode(stored))
