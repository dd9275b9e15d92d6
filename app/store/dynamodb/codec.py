"""Items in DynamoDB's low-level attribute-value format, encoded and decoded by hand.

Numbers arrive as strings and become ints; instants are fixed-width ISO text (text order
is time order, so they sort and compare in key conditions); free-form JSON (heartbeat
details, history changes) is stored as a JSON string so every value comes back exactly as
it went in.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from app.benches.domain import (
    DEFAULT_CONCURRENCY,
    AdminState,
    Bench,
    BenchHealth,
    HealthStatus,
    Heartbeat,
    Liveness,
    MaintenanceWindow,
    Quarantine,
)
from app.executions.domain import Execution, ExecutionStatus, Task, TaskStatus
from app.history.domain import HistoryEntry
from app.store.base import IdempotencyRecord, execution_page_key
from app.store.dynamodb.tables import (
    BENCH_LIST_PK,
    BENCH_SK,
    CAPABILITY_SK_PREFIX,
    CREATED_KEY,
    LEASED_PK,
    OPEN_RESERVATION_ID,
)
from app.timeutil import from_iso, to_iso

# A low-level DynamoDB item: attribute name -> {"S": ...} / {"N": ...} / ...
Item = dict[str, Any]
# One action of TransactWriteItems: {"Put": {...}} / {"Update": {...}} / ...
Action = dict[str, Any]


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: int) -> dict[str, str]:
    return {"N": str(value)}


# --- benches -----------------------------------------------------------------------------


def bench_key(bench_id: str) -> Item:
    return {"bench_id": s(bench_id), "sk": s(BENCH_SK)}


def capability_key(bench_id: str, tag: str) -> Item:
    return {"bench_id": s(bench_id), "sk": s(f"{CAPABILITY_SK_PREFIX}{tag}")}


def encode_labels(labels: dict[str, str]) -> Item:
    return {"M": {key: s(value) for key, value in labels.items()}}


def encode_bench(bench: Bench) -> Item:
    item: Item = {
        **bench_key(bench.bench_id),
        "list_pk": s(BENCH_LIST_PK),
        "name": s(bench.name),
        "type": s(bench.type),
        "labels": encode_labels(bench.labels),
        "heartbeat_interval_s": n(bench.heartbeat_interval_s),
        "admin_state": s(bench.admin_state.value),
        "recorded_liveness": s(bench.recorded_liveness.value),
        "liveness_changes": n(bench.liveness_changes),
        "concurrency": n(bench.concurrency),
        "version": n(bench.version),
        "created_at": s(to_iso(bench.created_at)),
        "updated_at": s(to_iso(bench.updated_at)),
    }
    if bench.capabilities:
        item["capabilities"] = {"SS": sorted(bench.capabilities)}
    if bench.last_heartbeat is not None:
        item["last_heartbeat_at"] = s(to_iso(bench.last_heartbeat.at))
        item["agent_version"] = s(bench.last_heartbeat.agent_version)
        item["heartbeat_details"] = s(json.dumps(bench.last_heartbeat.details))
    if bench.health is not None:
        item["health_status"] = s(bench.health.status.value)
        item["health_message"] = s(bench.health.message)
        item["health_at"] = s(to_iso(bench.health.at))
        item["health_failures"] = n(bench.health.failures)
        item["health_passes"] = n(bench.health.passes)
    if bench.infra_failures:
        item["infra_failures"] = n(bench.infra_failures)
    if bench.health_check_due is not None:
        item["health_check_due"] = s(to_iso(bench.health_check_due))
    item.update(encode_bench_health_config(bench))
    return item


def encode_bench_health_config(bench: Bench) -> Item:
    """The quarantine and maintenance windows: configuration, kept as JSON strings."""
    config = bench.config()
    item: Item = {"maintenance": s(json.dumps(config["maintenance"]))}
    if config["quarantine"] is not None:
        item["quarantine"] = s(json.dumps(config["quarantine"]))
    return item


def _decode_health(item: Item) -> BenchHealth | None:
    if "health_status" not in item:
        return None
    return BenchHealth(
        status=HealthStatus(item["health_status"]["S"]),
        message=item.get("health_message", {}).get("S", ""),
        at=from_iso(item["health_at"]["S"]),
        failures=int(item.get("health_failures", {}).get("N", 0)),
        passes=int(item.get("health_passes", {}).get("N", 0)),
    )


def _decode_quarantine(item: Item) -> Quarantine | None:
    if "quarantine" not in item:
        return None
    value = json.loads(item["quarantine"]["S"])
    return Quarantine(
        value["reason"], value["by"], datetime.fromisoformat(value["since"]), value["evidence"]
    )


def decode_bench(item: Item) -> Bench:
    heartbeat = None
    if "last_heartbeat_at" in item:
        heartbeat = Heartbeat(
            at=from_iso(item["last_heartbeat_at"]["S"]),
            agent_version=item["agent_version"]["S"],
            details=json.loads(item["heartbeat_details"]["S"]),
        )
    return Bench(
        bench_id=item["bench_id"]["S"],
        name=item["name"]["S"],
        type=item["type"]["S"],
        capabilities=frozenset(item.get("capabilities", {}).get("SS", ())),
        labels={key: value["S"] for key, value in item["labels"]["M"].items()},
        heartbeat_interval_s=int(item["heartbeat_interval_s"]["N"]),
        admin_state=AdminState(item["admin_state"]["S"]),
        version=int(item["version"]["N"]),
        created_at=from_iso(item["created_at"]["S"]),
        updated_at=from_iso(item["updated_at"]["S"]),
        last_heartbeat=heartbeat,
        # Items written before liveness was recorded read as never seen online.
        recorded_liveness=Liveness(item.get("recorded_liveness", {}).get("S", "offline")),
        # Items written before benches had a concurrency run one task at a time.
        concurrency=int(item.get("concurrency", {}).get("N", DEFAULT_CONCURRENCY)),
        # Items written before transitions were counted have none in the liveness log.
        liveness_changes=int(item.get("liveness_changes", {}).get("N", 0)),
        health=_decode_health(item),
        infra_failures=int(item.get("infra_failures", {}).get("N", 0)),
        health_check_due=None
        if "health_check_due" not in item
        else from_iso(item["health_check_due"]["S"]),
        quarantine=_decode_quarantine(item),
        maintenance=tuple(
            MaintenanceWindow.from_json(value)
            for value in json.loads(item.get("maintenance", {}).get("S", "[]"))
        ),
    )


# --- history -----------------------------------------------------------------------------


def entity(entity_type: str, entity_id: str) -> str:
    return f"{entity_type}#{entity_id}"


def put_history(table: str, entry: HistoryEntry, expires_at: datetime | None = None) -> Action:
    item: Item = {
        "entity": s(entity(entry.entity_type, entry.entity_id)),
        "version": n(entry.version),
        "entity_type": s(entry.entity_type),
        "entity_id": s(entry.entity_id),
        "at": s(to_iso(entry.at)),
        "actor": s(entry.actor),
        "request_id": s(entry.request_id),
        "action": s(entry.action),
        "changes": s(json.dumps(entry.changes)),
    }
    if expires_at is not None:
        # Epoch seconds, the TTL attribute's format; DynamoDB deletes it some time after.
        item["expires_at"] = n(math.ceil(expires_at.timestamp()))
    # History is append-only: a second entry for one version is a bug, not an overwrite.
    return {
        "Put": {
            "TableName": table,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(entity)",
        }
    }


def decode_history(item: Item) -> HistoryEntry:
    return HistoryEntry(
        entity_type=item["entity_type"]["S"],
        entity_id=item["entity_id"]["S"],
        version=int(item["version"]["N"]),
        at=from_iso(item["at"]["S"]),
        actor=item["actor"]["S"],
        request_id=item["request_id"]["S"],
        action=item["action"]["S"],
        changes=json.loads(item["changes"]["S"]),
    )


# --- idempotency keys --------------------------------------------------------------------


def idempotency_key(key: str) -> Item:
    return {"key": s(key)}


def encode_record(record: IdempotencyRecord) -> Item:
    return {
        **idempotency_key(record.key),
        "fingerprint": s(record.fingerprint),
        "resource_id": s(record.resource_id),
        "created_at": s(to_iso(record.created_at)),
        # TTL wants whole epoch seconds; rounding up never deletes a record early. The
        # exact instant, which decides whether the key is free, is kept as text beside it.
        "expires_at": n(math.ceil(record.expires_at.timestamp())),
        "expires_at_iso": s(to_iso(record.expires_at)),
    }


def decode_record(item: Item) -> IdempotencyRecord:
    return IdempotencyRecord(
        key=item["key"]["S"],
        fingerprint=item["fingerprint"]["S"],
        resource_id=item["resource_id"]["S"],
        created_at=from_iso(item["created_at"]["S"]),
        expires_at=from_iso(item["expires_at_iso"]["S"]),
    )


def put_record(table: str, record: IdempotencyRecord) -> Action:
    """Claim the key in the creating transaction: free when absent or expired by now.

    "Now" is the record's ``created_at``, the instant the service decided at, so every
    adapter agrees on the boundary (a record expiring exactly then is free).
    """
    return {
        "Put": {
            "TableName": table,
            "Item": encode_record(record),
            "ConditionExpression": "attribute_not_exists(#key) OR #expires <= :now",
            # KEY is a reserved word in expressions.
            "ExpressionAttributeNames": {"#key": "key", "#expires": "expires_at_iso"},
            "ExpressionAttributeValues": {":now": s(to_iso(record.created_at))},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }


# --- executions and tasks ----------------------------------------------------------------


def _put_optional(item: Item, name: str, value: str | None) -> None:
    # Absent rather than NULL: the item stays small and a sparse index stays sparse.
    if value is not None:
        item[name] = s(value)


def _optional(item: Item, name: str) -> str | None:
    value = item.get(name)
    return None if value is None else str(value["S"])


def _optional_time(item: Item, name: str) -> datetime | None:
    text = _optional(item, name)
    return None if text is None else from_iso(text)


def execution_key(execution_id: str) -> Item:
    return {"execution_id": s(execution_id)}


def encode_execution(execution: Execution) -> Item:
    item: Item = {
        **execution_key(execution.execution_id),
        "reservation_id": s(execution.reservation_id),
        "bench_id": s(execution.bench_id),
        "created_by": s(execution.created_by),
        "commit_sha": s(execution.commit_sha),
        "metadata": s(json.dumps(execution.metadata)),
        "task_ids": {"L": [s(task_id) for task_id in execution.task_ids]},
        "time_budget_s": n(execution.time_budget_s),
        "status": s(execution.status.value),
        "version": n(execution.version),
        "created_at": s(to_iso(execution.created_at)),
        "updated_at": s(to_iso(execution.updated_at)),
        # The sort key of every execution index: the port's page order in one string.
        CREATED_KEY: s(execution_page_key(execution)),
    }
    _put_optional(item, "pipeline_url", execution.pipeline_url)
    _put_optional(item, "artifacts_uri", execution.artifacts_uri)
    _put_optional(item, "summary", execution.summary)
    if execution.started_at is not None:
        item["started_at"] = s(to_iso(execution.started_at))
    if execution.finished_at is not None:
        item["finished_at"] = s(to_iso(execution.finished_at))
    if not execution.status.is_terminal:
        item[OPEN_RESERVATION_ID] = s(execution.reservation_id)
    return item


def decode_execution(item: Item) -> Execution:
    return Execution(
        execution_id=item["execution_id"]["S"],
        reservation_id=item["reservation_id"]["S"],
        bench_id=item["bench_id"]["S"],
        created_by=item["created_by"]["S"],
        commit_sha=item["commit_sha"]["S"],
        pipeline_url=_optional(item, "pipeline_url"),
        metadata=json.loads(item["metadata"]["S"]),
        task_ids=tuple(value["S"] for value in item["task_ids"]["L"]),
        time_budget_s=int(item["time_budget_s"]["N"]),
        status=ExecutionStatus(item["status"]["S"]),
        version=int(item["version"]["N"]),
        created_at=from_iso(item["created_at"]["S"]),
        updated_at=from_iso(item["updated_at"]["S"]),
        artifacts_uri=_optional(item, "artifacts_uri"),
        summary=_optional(item, "summary"),
        started_at=_optional_time(item, "started_at"),
        finished_at=_optional_time(item, "finished_at"),
    )


def task_key(task_id: str) -> Item:
    return {"task_id": s(task_id)}


def encode_task(task: Task) -> Item:
    item: Item = {
        **task_key(task.task_id),
        "execution_id": s(task.execution_id),
        "bench_id": s(task.bench_id),
        "seq": n(task.seq),
        "type": s(task.type),
        "params": s(json.dumps(task.params)),
        "timeout_s": n(task.timeout_s),
        "max_attempts": n(task.max_attempts),
        "status": s(task.status.value),
        "attempts": n(task.attempts),
        "version": n(task.version),
        "created_at": s(to_iso(task.created_at)),
        "updated_at": s(to_iso(task.updated_at)),
    }
    _put_optional(item, "lease_holder", task.lease_holder)
    if task.lease_expires_at is not None:
        item["lease_expires_at"] = s(to_iso(task.lease_expires_at))
        # Only a leased task enters the sparse lease index; a whole-item Put of any other
        # state drops the attribute, and with it the index entry.
        if task.status is TaskStatus.LEASED:
            item["lease_pk"] = s(LEASED_PK)
    if task.attempt_started_at is not None:
        item["attempt_started_at"] = s(to_iso(task.attempt_started_at))
    if task.result is not None:
        item["result"] = s(json.dumps(task.result))
    _put_optional(item, "error", task.error)
    return item


def decode_task(item: Item) -> Task:
    result = _optional(item, "result")
    return Task(
        task_id=item["task_id"]["S"],
        execution_id=item["execution_id"]["S"],
        bench_id=item["bench_id"]["S"],
        seq=int(item["seq"]["N"]),
        type=item["type"]["S"],
        params=json.loads(item["params"]["S"]),
        timeout_s=int(item["timeout_s"]["N"]),
        max_attempts=int(item["max_attempts"]["N"]),
        status=TaskStatus(item["status"]["S"]),
        attempts=int(item["attempts"]["N"]),
        version=int(item["version"]["N"]),
        created_at=from_iso(item["created_at"]["S"]),
        updated_at=from_iso(item["updated_at"]["S"]),
        lease_holder=_optional(item, "lease_holder"),
        lease_expires_at=_optional_time(item, "lease_expires_at"),
        attempt_started_at=_optional_time(item, "attempt_started_at"),
        result=None if result is None else json.loads(result),
        error=_optional(item, "error"),
    )
