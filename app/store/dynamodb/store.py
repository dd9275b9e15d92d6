"""The DynamoDB adapter of the store port: one aioboto3 client per process, no Scan.

Item layout lives in codec.py, requests shared by repositories in calls.py, the
reservation and idempotency repositories in reservations.py, and the execution and task
repository in executions.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from botocore import xform_name
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from app.aws import local_credentials
from app.benches.domain import Bench, Heartbeat
from app.history.domain import HistoryEntry
from app.idempotency import IdempotencyRecord
from app.settings import Settings
from app.store.base import (
    AlreadyExists,
    BenchQuery,
    ItemNotFound,
    Page,
    StoreUnavailable,
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
    transact,
)
from app.store.dynamodb.codec import (
    Action,
    HistoryTable,
    Item,
    bench_key,
    capability_key,
    decode_bench,
    decode_history,
    encode_bench,
    encode_labels,
    entity,
    n,
    put_record,
    s,
)
from app.store.dynamodb.executions import DynamoExecutionRepository
from app.store.dynamodb.reservations import (
    DynamoIdempotencyRepository,
    DynamoReservationRepository,
)
from app.store.dynamodb.tables import (
    BENCH_CALENDAR,
    BENCH_LIST_INDEX,
    BENCH_LIST_PK,
    BENCHES,
    CAPABILITY_INDEX,
    EXECUTIONS,
    HISTORY,
    IDEMPOTENCY,
    RESERVATIONS,
    TASKS,
    DynamoClient,
    create_tables,
)
from app.timeutil import to_iso

_CLIENT_CONFIG = AioConfig(
    connect_timeout=2,
    read_timeout=5,
    # Standard mode retries throttling and transient errors with jittered backoff and a
    # retry quota; what still fails after that surfaces as StoreUnavailable.
    retries={"mode": "standard", "max_attempts": 3},
    max_pool_connections=50,
)

# Operations that accept ReturnConsumedCapacity (control-plane calls do not).
_METERED = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactGetItems",
        "TransactWriteItems",
    }
)
# Error codes that mean "the store cannot serve now, try later", not "the request is wrong".
_UNAVAILABLE_ERRORS = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "TransactionInProgressException",
        "InternalServerError",
        "ServiceUnavailable",
        "ResourceNotFoundException",
    }
)
# With a filter, DynamoDB's Limit counts items read, not items kept: read wider pages.
_FILTERED_PAGE = 100


class DynamoStore:
    """The store port on DynamoDB.

    ``capacity`` sums consumed capacity units per (table, operation) and ``calls`` counts
    requests per operation, for the metrics endpoint and for tests counting round trips.
    Note: moto returns no consumed capacity for TransactWriteItems; DynamoDB does.
    """

    def __init__(
        self,
        client: DynamoClient,
        table_prefix: str,
        *,
        exit_stack: AsyncExitStack | None = None,
        history_retention: timedelta | None = None,
    ) -> None:
        self.client = client
        self.table_prefix = table_prefix
        self.capacity: dict[tuple[str, str], float] = {}
        self.calls: dict[str, int] = {}
        self._exit_stack = exit_stack
        self._benches_table = BENCHES.table_name(table_prefix)
        history_table = HistoryTable(HISTORY.table_name(table_prefix), history_retention)
        idempotency_table = IDEMPOTENCY.table_name(table_prefix)
        self.benches = DynamoBenchRepository(
            self._call, self._benches_table, history_table, idempotency_table
        )
        self.history = DynamoHistoryRepository(self._call, history_table.name)
        self.reservations = DynamoReservationRepository(
            self._call,
            reservations_table=RESERVATIONS.table_name(table_prefix),
            calendar_table=BENCH_CALENDAR.table_name(table_prefix),
            benches_table=self._benches_table,
            history_table=history_table,
            idempotency_table=idempotency_table,
        )
        self.idempotency = DynamoIdempotencyRepository(self._call, idempotency_table)
        self.executions = DynamoExecutionRepository(
            self._call,
            executions_table=EXECUTIONS.table_name(table_prefix),
            tasks_table=TASKS.table_name(table_prefix),
            history_table=history_table,
            idempotency_table=idempotency_table,
        )

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        wrap_client: Callable[[DynamoClient], DynamoClient] | None = None,
    ) -> DynamoStore:
        """One session and one client for the process; ``wrap_client`` lets tests proxy it."""
        stack = AsyncExitStack()
        try:
            session = aioboto3.Session(
                region_name=settings.aws_region, **local_credentials(settings.dynamodb_endpoint_url)
            )
            client = await stack.enter_async_context(
                session.client(
                    "dynamodb",
                    endpoint_url=settings.dynamodb_endpoint_url,
                    region_name=settings.aws_region,
                    config=_CLIENT_CONFIG,
                )
            )
            if wrap_client is not None:
                client = wrap_client(client)
            if settings.create_tables:
                await create_tables(client, settings.table_prefix)
        except BaseException:
            await stack.aclose()
            raise
        return cls(
            client,
            settings.table_prefix,
            exit_stack=stack,
            history_retention=settings.history_retention,
        )

    async def ping(self) -> None:
        try:
            await self._call("DescribeTable", TableName=self._benches_table)
        except ClientError as error:
            raise StoreUnavailable(f"DynamoDB: {error_code(error)}") from error

    async def purge_expired(self, now: datetime) -> int:
        # TTL on expires_at deletes expired history (reads skip it until then); stream
        # records expire after 24 hours on their own.
        return 0

    async def close(self) -> None:
        if self._exit_stack is not None:
            stack, self._exit_stack = self._exit_stack, None
            await stack.aclose()

    async def _call(self, operation: str, /, **params: Any) -> dict[str, Any]:
        """Every DynamoDB request goes through here: meter it, map outages to one error."""
        self.calls[operation] = self.calls.get(operation, 0) + 1
        if operation in _METERED:
            params["ReturnConsumedCapacity"] = "TOTAL"
        method = getattr(self.client, xform_name(operation))
        try:
            response: dict[str, Any] = await method(**params)
        except ClientError as error:
            if error_code(error) in _UNAVAILABLE_ERRORS:
                raise StoreUnavailable(f"DynamoDB {operation}: {error_code(error)}") from error
            raise
        except (BotoConnectionError, HTTPClientError) as error:
            raise StoreUnavailable(f"DynamoDB {operation}: {error}") from error
        self._meter(operation, response.get("ConsumedCapacity"))
        return response

    def _meter(self, operation: str, consumed: Any) -> None:
        # Single-table operations return one object; batches and transactions a list.
        entries = consumed if isinstance(consumed, list) else [consumed]
        for entry in entries:
            if not entry:
                continue
            key = (str(entry["TableName"]), operation)
            self.capacity[key] = self.capacity.get(key, 0.0) + float(
                entry.get("CapacityUnits", 0.0)
            )


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
        actions.append(self._history_table.put(entry))
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
        # the caller read; the transaction is conditioned on that same version.
        expected_version = current.version
        names = {
            "#name": "name",
            "#type": "type",
            "#labels": "labels",
            "#interval": "heartbeat_interval_s",
            "#state": "admin_state",
            "#liveness": "recorded_liveness",
            "#version": "version",
            "#updated": "updated_at",
            "#caps": "capabilities",
        }
        values: Item = {
            ":name": s(bench.name),
            ":type": s(bench.type),
            ":labels": encode_labels(bench.labels),
            ":interval": n(bench.heartbeat_interval_s),
            ":state": s(bench.admin_state.value),
            ":liveness": s(bench.recorded_liveness.value),
            ":version": n(bench.version),
            ":updated": s(to_iso(bench.updated_at)),
            ":seen": n(expected_version),
        }
        expression = (
            "SET #name = :name, #type = :type, #labels = :labels, #interval = :interval,"
            " #state = :state, #liveness = :liveness, #version = :version,"
            " #updated = :updated"
        )
        # A string set cannot be empty: no capabilities means no attribute.
        if bench.capabilities:
            expression += ", #caps = :caps"
            values[":caps"] = {"SS": sorted(bench.capabilities)}
        else:
            expression += " REMOVE #caps"
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
        actions.append(self._history_table.put(entry))
        reasons = await transact(self._call, actions)
        if reasons is None:
            return
        if failed(reasons, 0):
            stored = old_item(reasons, 0)
            if stored is None:
                raise ItemNotFound(bench.bench_id)
            raise VersionMismatch(decode_bench(stored))
        raise cancelled(reasons)

    async def record_heartbeat(self, bench_id: str, heartbeat: Heartbeat) -> Bench:
        try:
            response = await self._call(
                "UpdateItem",
                TableName=self._table,
                Key=bench_key(bench_id),
                UpdateExpression=(
                    "SET last_heartbeat_at = :at, agent_version = :agent,"
                    " heartbeat_details = :details"
                ),
                # Without it UpdateItem would create a bench out of a heartbeat.
                ConditionExpression="attribute_exists(bench_id)",
                ExpressionAttributeValues={
                    ":at": s(to_iso(heartbeat.at)),
                    ":agent": s(heartbeat.agent_version),
                    ":details": s(json.dumps(heartbeat.details)),
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                raise ItemNotFound(bench_id) from None
            raise
        return decode_bench(response["Attributes"])

    async def find(self, query: BenchQuery, limit: int, after: str | None) -> Page[Bench]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        # One more than a page: whether it exists decides next_after, so the last page
        # says so instead of pointing at an empty one.
        want = limit + 1
        if query.capabilities:
            found = await self._list_by_capability(query, want, after)
        else:
            found = await self._list_all(query, want, after)
        if len(found) > limit:
            items = found[:limit]
            return Page(items=items, next_after=items[-1].bench_id)
        return Page(items=found, next_after=None)

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
        found: list[Bench] = []
        while len(found) < want:
            needed = want - len(found)
            page = {**params, "Limit": max(needed, _FILTERED_PAGE) if conditions else needed}
            if start is not None:
                page["ExclusiveStartKey"] = start
            response = await self._call("Query", **page)
            found += [decode_bench(item) for item in response["Items"]]
            start = response.get("LastEvaluatedKey")
            if start is None:
                break
        return found[:want]

    async def _list_by_capability(
        self, query: BenchQuery, want: int, after: str | None
    ) -> list[Bench]:
        # Any one tag narrows the candidates; the bench items decide the rest. The index
        # lags the table slightly, so a candidate is only kept if its item still matches.
        tag = min(query.capabilities)
        narrows_further = (
            len(query.capabilities) > 1 or query.type is not None or query.admin_state is not None
        )
        start: Item | None = None
        if after is not None:
            start = {**capability_key(after, tag), "capability": s(tag)}
        found: list[Bench] = []
        while len(found) < want:
            needed = want - len(found)
            page: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": CAPABILITY_INDEX,
                "KeyConditionExpression": "capability = :tag",
                "ExpressionAttributeValues": {":tag": s(tag)},
                "Limit": BATCH_GET_MAX if narrows_further else min(needed, BATCH_GET_MAX),
            }
            if start is not None:
                page["ExclusiveStartKey"] = start
            response = await self._call("Query", **page)
            ids = [item["bench_id"]["S"] for item in response["Items"]]
            benches = await self._batch_get(ids)
            for bench_id in ids:
                bench = benches.get(bench_id)
                if bench is not None and _matches(bench, query):
                    found.append(bench)
            start = response.get("LastEvaluatedKey")
            if start is None:
                break
        return found[:want]

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


class DynamoHistoryRepository:
    def __init__(self, call: Call, table: str) -> None:
        self._call = call
        self._table = table

    async def find(
        self, entity_type: str, entity_id: str, limit: int, after: int | None
    ) -> Page[HistoryEntry]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        condition = "entity = :entity"
        values: Item = {":entity": s(entity(entity_type, entity_id))}
        if after is not None:
            condition += " AND #version > :after"
            values[":after"] = n(after)
        # TTL deletes expired entries some time after they expire (moto never does): reads
        # skip them from the moment they expire.
        values[":now"] = n(int(datetime.now(UTC).timestamp()))
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": condition,
            "FilterExpression": "attribute_not_exists(#expires) OR #expires > :now",
            "ExpressionAttributeValues": values,
            "ExpressionAttributeNames": {"#expires": "expires_at"},
            "ConsistentRead": True,
            "ScanIndexForward": True,
        }
        if after is not None:
            params["ExpressionAttributeNames"]["#version"] = "version"
        want = limit + 1
        entries: list[HistoryEntry] = []
        start: Item | None = None
        while len(entries) < want:
            page = {**params, "Limit": want - len(entries)}
            if start is not None:
                page["ExclusiveStartKey"] = start
            response = await self._call("Query", **page)
            entries += [decode_history(item) for item in response["Items"]]
            start = response.get("LastEvaluatedKey")
            if start is None:
                break
        if len(entries) > limit:
            items = entries[:limit]
            return Page(items=items, next_after=str(items[-1].version))
        return Page(items=entries, next_after=None)


def _matches(bench: Bench, query: BenchQuery) -> bool:
    return (
        query.capabilities <= bench.capabilities
        and (query.type is None or bench.type == query.type)
        and (query.admin_state is None or bench.admin_state.value == query.admin_state)
    )
