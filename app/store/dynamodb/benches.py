"""Benches on DynamoDB.

A bench item and one guard item per capability tag share the benches table; the
capability index over the guard items finds the benches of a tag without a Scan.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from app.benches.domain import AdminState, Bench, HealthStatus, Heartbeat, Liveness
from app.history.domain import HistoryEntry
from app.store.base import (
    AlreadyExists,
    BenchQuery,
    BenchRetired,
    IdempotencyRecord,
    ItemNotFound,
    Page,
    VersionMismatch,
)
from app.store.dynamodb.calls import (
    BATCH_GET_MAX,
    Call,
    batch_get,
    cancelled,
    error_code,
    failed,
    get_one,
    key_taken,
    old_item,
    one_more_than,
    page_of,
    query_until,
    transact,
)
from app.store.dynamodb.codec import (
    Action,
    Item,
    bench_key,
    capability_key,
    decode_bench,
    encode_bench,
    encode_bench_health_config,
    encode_labels,
    n,
    put_record,
    s,
)
from app.store.dynamodb.history import HistoryTable
from app.store.dynamodb.tables import BENCH_LIST_INDEX, BENCH_LIST_PK, CAPABILITY_INDEX
from app.timeutil import to_iso


class DynamoBenchRepository:
    def __init__(
        self, call: Call, table: str, history_table: HistoryTable, idempotency_table: str
    ) -> None:
        self._call = call
        self._table = table
        self._history_table = history_table
        self._idempotency_table = idempotency_table

    async def create(
        self, bench: Bench, entry: HistoryEntry, idempotency: IdempotencyRecord | None = None
    ) -> None:
        actions: list[Action] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": encode_bench(bench),
                    "ConditionExpression": "attribute_not_exists(bench_id)",
                }
            }
        ]
        actions += [self._put_capability(bench.bench_id, tag) for tag in sorted(bench.capabilities)]
        actions += self._history_table.puts(entry)
        if idempotency is not None:
            actions.append(put_record(self._idempotency_table, idempotency))
        reasons = await transact(self._call, actions)
        if reasons is None:
            return
        if idempotency is not None and (taken := key_taken(reasons, len(actions) - 1)):
            raise taken
        if failed(reasons, 0):
            raise AlreadyExists(bench.bench_id)
        raise cancelled(reasons)

    async def get(self, bench_id: str) -> Bench | None:
        return await get_one(self._call, self._table, bench_key(bench_id), decode_bench)

    async def update(self, current: Bench, bench: Bench, entry: HistoryEntry) -> None:
        # The guard items to add and delete follow from the capabilities of the version
        # the caller read; the transaction is conditioned on that same version. Liveness
        # attributes are not in the SET: only record_liveness moves them.
        expected_version = current.version
        names = {
            "#name": "name",
            "#type": "type",
            "#labels": "labels",
            "#interval": "heartbeat_interval_s",
            "#state": "admin_state",
            "#concurrency": "concurrency",
            "#version": "version",
            "#updated": "updated_at",
            "#caps": "capabilities",
            "#maintenance": "maintenance",
            "#quarantine": "quarantine",
        }
        values: Item = {
            ":name": s(bench.name),
            ":type": s(bench.type),
            ":labels": encode_labels(bench.labels),
            ":interval": n(bench.heartbeat_interval_s),
            ":state": s(bench.admin_state.value),
            ":concurrency": n(bench.concurrency),
            ":version": n(bench.version),
            ":updated": s(to_iso(bench.updated_at)),
            ":seen": n(expected_version),
        }
        health_config = encode_bench_health_config(bench)
        values[":maintenance"] = health_config["maintenance"]
        expression = (
            "SET #name = :name, #type = :type, #labels = :labels, #interval = :interval,"
            " #state = :state, #concurrency = :concurrency,"
            " #version = :version, #updated = :updated, #maintenance = :maintenance"
        )
        removed: list[str] = []
        if "quarantine" in health_config:
            expression += ", #quarantine = :quarantine"
            values[":quarantine"] = health_config["quarantine"]
        else:
            removed.append("#quarantine")
        # A string set cannot be empty: no capabilities means no attribute.
        if bench.capabilities:
            expression += ", #caps = :caps"
            values[":caps"] = {"SS": sorted(bench.capabilities)}
        else:
            removed.append("#caps")
        if removed:
            expression += " REMOVE " + ", ".join(removed)
        actions: list[Action] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": bench_key(bench.bench_id),
                    "UpdateExpression": expression,
                    "ConditionExpression": "#version = :seen",
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            }
        ]
        for tag in sorted(bench.capabilities - current.capabilities):
            actions.append(self._put_capability(bench.bench_id, tag))
        for tag in sorted(current.capabilities - bench.capabilities):
            actions.append(
                {"Delete": {"TableName": self._table, "Key": capability_key(bench.bench_id, tag)}}
            )
        actions += self._history_table.puts(entry)
        reasons = await transact(self._call, actions)
        if reasons is None:
            return
        if failed(reasons, 0):
            stored = old_item(reasons, 0)
            if stored is None:
                raise ItemNotFound(bench.bench_id)
            raise VersionMismatch(decode_bench(stored))
        raise cancelled(reasons)

    async def record_liveness(
        self, current: Bench, liveness: Liveness, entry: HistoryEntry
    ) -> None:
        # Conditioned on the transition count the caller read, not on the version: an
        # admin's change and a recorded transition never undo each other. Items written
        # before transitions were counted have no count, which reads as 0.
        seen = current.liveness_changes
        unchanged = "#changes = :seen"
        if seen == 0:
            unchanged = f"({unchanged} OR attribute_not_exists(#changes))"
        actions: list[Action] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": bench_key(current.bench_id),
                    "UpdateExpression": "SET #liveness = :liveness, #changes = :next",
                    "ConditionExpression": f"attribute_exists(bench_id) AND {unchanged}",
                    "ExpressionAttributeNames": {
                        "#liveness": "recorded_liveness",
                        "#changes": "liveness_changes",
                    },
                    "ExpressionAttributeValues": {
                        ":liveness": s(liveness.value),
                        ":next": n(seen + 1),
                        ":seen": n(seen),
                    },
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
            *self._history_table.puts(entry),
        ]
        reasons = await transact(self._call, actions)
        if reasons is None:
            return
        if failed(reasons, 0):
            stored = old_item(reasons, 0)
            if stored is None:
                raise ItemNotFound(current.bench_id)
            raise VersionMismatch(decode_bench(stored))
        raise cancelled(reasons)

    async def record_heartbeat(self, bench_id: str, heartbeat: Heartbeat) -> Bench:
        expression = (
            "SET last_heartbeat_at = :at, agent_version = :agent, heartbeat_details = :details"
        )
        values: Item = {
            ":at": s(to_iso(heartbeat.at)),
            ":agent": s(heartbeat.agent_version),
            ":details": s(json.dumps(heartbeat.details)),
            ":retired": s(AdminState.RETIRED.value),
        }
        if heartbeat.health is not None:
            # The run of equal reports grows by one, or a new run starts (after_report).
            grows, restarts = (
                ("health_failures", "health_passes")
                if heartbeat.health.status is HealthStatus.FAILING
                else ("health_passes", "health_failures")
            )
            expression += (
                ", health_status = :health, health_message = :message, health_at = :at,"
                f" {grows} = if_not_exists({grows}, :zero) + :one, {restarts} = :zero"
            )
            values |= {
                ":health": s(heartbeat.health.status.value),
                ":message": s(heartbeat.health.message),
                ":zero": n(0),
                ":one": n(1),
            }
        try:
            response = await self._call(
                "UpdateItem",
                TableName=self._table,
                Key=bench_key(bench_id),
                UpdateExpression=expression,
                # attribute_exists: else UpdateItem would create a bench out of a heartbeat;
                # the admin state: a retired bench is left as it is.
                ConditionExpression="attribute_exists(bench_id) AND #state <> :retired",
                ExpressionAttributeNames={"#state": "admin_state"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                # The failed check returns the stored item: missing, or retired.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                stored = error.response.get("Item")
                if not stored:
                    raise ItemNotFound(bench_id) from None
                raise BenchRetired(decode_bench(stored)) from None
            raise
        return decode_bench(response["Attributes"])

    async def record_run_outcome(self, bench_id: str, infrastructure_failure: bool) -> Bench:
        expression = (
            "SET infra_failures = if_not_exists(infra_failures, :zero) + :one"
            if infrastructure_failure
            else "SET infra_failures = :zero"
        )
        values = {":zero": n(0)} | ({":one": n(1)} if infrastructure_failure else {})
        try:
            response = await self._call(
                "UpdateItem",
                TableName=self._table,
                Key=bench_key(bench_id),
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(bench_id)",
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                raise ItemNotFound(bench_id) from None
            raise
        return decode_bench(response["Attributes"])

    async def restart_failure_runs(self, bench_id: str) -> None:
        try:
            await self._call(
                "UpdateItem",
                TableName=self._table,
                Key=bench_key(bench_id),
                UpdateExpression="SET health_failures = :zero, infra_failures = :zero",
                ConditionExpression="attribute_exists(bench_id)",
                ExpressionAttributeValues={":zero": n(0)},
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise

    async def request_health_check(self, bench_id: str, due: datetime) -> None:
        try:
            await self._call(
                "UpdateItem",
                TableName=self._table,
                Key=bench_key(bench_id),
                UpdateExpression="SET health_check_due = :due",
                # Unchanged asks write nothing; a missing bench is not made.
                ConditionExpression="attribute_exists(bench_id) AND"
                " (attribute_not_exists(health_check_due) OR health_check_due <> :due)",
                ExpressionAttributeValues={":due": s(to_iso(due))},
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise

    async def find(self, query: BenchQuery, limit: int, after: str | None) -> Page[Bench]:
        want = one_more_than(limit)
        if query.capabilities:
            found = await self._list_by_capability(query, want, after)
        else:
            found = await self._list_all(query, want, after)
        return page_of(found, limit, lambda bench: bench.bench_id)

    async def _list_all(self, query: BenchQuery, want: int, after: str | None) -> list[Bench]:
        names: dict[str, str] = {}
        values: Item = {":list_pk": s(BENCH_LIST_PK)}
        conditions = []
        if query.type is not None:
            names["#type"] = "type"
            values[":type"] = s(query.type)
            conditions.append("#type = :type")
        if query.admin_state is not None:
            names["#state"] = "admin_state"
            values[":state"] = s(query.admin_state)
            conditions.append("#state = :state")
        params: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": BENCH_LIST_INDEX,
            "KeyConditionExpression": "list_pk = :list_pk",
            "ExpressionAttributeValues": values,
        }
        if conditions:
            params["FilterExpression"] = " AND ".join(conditions)
            params["ExpressionAttributeNames"] = names
        start: Item | None = None
        if after is not None:
            start = {**bench_key(after), "list_pk": s(BENCH_LIST_PK)}
        return await query_until(
            self._call,
            params,
            want,
            lambda items: [decode_bench(item) for item in items],
            filtered=bool(conditions),
            start=start,
        )

    async def _list_by_capability(
        self, query: BenchQuery, want: int, after: str | None
    ) -> list[Bench]:
        # Any one tag narrows the candidates; the bench items decide the rest. The index
        # lags the table slightly, so a candidate is only kept if its item still matches.
        tag = min(query.capabilities)
        narrows_further = (
            len(query.capabilities) > 1 or query.type is not None or query.admin_state is not None
        )
        params: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": CAPABILITY_INDEX,
            "KeyConditionExpression": "capability = :tag",
            "ExpressionAttributeValues": {":tag": s(tag)},
        }
        start: Item | None = None
        if after is not None:
            start = {**capability_key(after, tag), "capability": s(tag)}

        async def keep(items: list[Item]) -> list[Bench]:
            ids = [item["bench_id"]["S"] for item in items]
            benches = await self._batch_get(ids)
            return [
                bench
                for bench_id in ids
                if (bench := benches.get(bench_id)) is not None and _matches(bench, query)
            ]

        # Each page of candidates is read back in one BatchGetItem, so no page is larger;
        # when the bench items may drop candidates, pages are that large.
        return await query_until(
            self._call,
            params,
            want,
            keep,
            filtered=narrows_further,
            most=BATCH_GET_MAX,
            start=start,
        )

    async def _batch_get(self, bench_ids: Iterable[str]) -> dict[str, Bench]:
        keys = [bench_key(bench_id) for bench_id in bench_ids]
        if not keys:
            return {}
        found = await batch_get(self._call, {self._table: keys})
        benches = [decode_bench(item) for item in found[self._table]]
        return {bench.bench_id: bench for bench in benches}

    def _put_capability(self, bench_id: str, tag: str) -> Action:
        item = {**capability_key(bench_id, tag), "capability": s(tag)}
        return {"Put": {"TableName": self._table, "Item": item}}


def _matches(bench: Bench, query: BenchQuery) -> bool:
    return (
        query.capabilities <= bench.capabilities
        and (query.type is None or bench.type == query.type)
        and (query.admin_state is None or bench.admin_state.value == query.admin_state)
    )
