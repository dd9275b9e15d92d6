"""The DynamoDB adapter of the store port: one aioboto3 client per process, no Scan.

Items use the low-level attribute-value format, encoded and decoded here by hand: numbers
arrive as strings and become ints, and free-form JSON (heartbeat details, history
changes) is stored as a JSON string so every value comes back exactly as it went in.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from typing import Any, Protocol

import aioboto3
from aiobotocore.config import AioConfig
from botocore import xform_name
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from app.benches.domain import AdminState, Bench, Heartbeat
from app.history.domain import HistoryEntry
from app.settings import Settings
from app.store.base import (
    AlreadyExists,
    BenchQuery,
    ItemNotFound,
    Page,
    StoreError,
    StoreUnavailable,
    VersionMismatch,
)
from app.store.dynamodb.tables import (
    BENCH_LIST_INDEX,
    BENCH_LIST_PK,
    BENCH_SK,
    BENCHES,
    CAPABILITY_INDEX,
    CAPABILITY_SK_PREFIX,
    HISTORY,
    DynamoClient,
    create_tables,
)
from app.timeutil import from_iso, to_iso

# A low-level DynamoDB item: attribute name -> {"S": ...} / {"N": ...} / ...
Item = dict[str, Any]

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
# Cancellation reasons of a transaction that a retry may get past.
_UNAVAILABLE_REASONS = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)
_CONDITION_FAILED = "ConditionalCheckFailed"

# A capability query reads index keys then the benches in batches of at most this many.
_BATCH_GET_MAX = 100
# With a filter, DynamoDB's Limit counts items read, not items kept: read wider pages.
_FILTERED_PAGE = 100
# BatchGetItem may leave keys unprocessed under throttling; AWS asks for backoff between
# tries. This is load shedding, not waiting for a race.
_UNPROCESSED_ATTEMPTS = 5
_UNPROCESSED_BACKOFF_S = 0.05


class _Call(Protocol):
    async def __call__(self, operation: str, /, **params: Any) -> dict[str, Any]: ...


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
    ) -> None:
        self.client = client
        self.table_prefix = table_prefix
        self.capacity: dict[tuple[str, str], float] = {}
        self.calls: dict[str, int] = {}
        self._exit_stack = exit_stack
        self._benches_table = BENCHES.table_name(table_prefix)
        history_table = HISTORY.table_name(table_prefix)
        self.benches = DynamoBenchRepository(self._call, self._benches_table, history_table)
        self.history = DynamoHistoryRepository(self._call, history_table)

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
            session = aioboto3.Session(region_name=settings.aws_region, **_credentials(settings))
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
        return cls(client, settings.table_prefix, exit_stack=stack)

    async def ping(self) -> None:
        try:
            await self._call("DescribeTable", TableName=self._benches_table)
        except ClientError as error:
            raise StoreUnavailable(f"DynamoDB: {_error_code(error)}") from error

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
            if _error_code(error) in _UNAVAILABLE_ERRORS:
                raise StoreUnavailable(f"DynamoDB {operation}: {_error_code(error)}") from error
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
    def __init__(self, call: _Call, table: str, history_table: str) -> None:
        self._call = call
        self._table = table
        self._history_table = history_table

    async def create(self, bench: Bench, entry: HistoryEntry) -> None:
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": _encode_bench(bench),
                    "ConditionExpression": "attribute_not_exists(bench_id)",
                }
            }
        ]
        actions += [self._put_capability(bench.bench_id, tag) for tag in sorted(bench.capabilities)]
        actions.append(_put_history(self._history_table, entry))
        reasons = await _transact(self._call, actions)
        if reasons is None:
            return
        if _reason_code(reasons, 0) == _CONDITION_FAILED:
            raise AlreadyExists(bench.bench_id)
        raise _cancelled(reasons)

    async def get(self, bench_id: str) -> Bench | None:
        response = await self._call(
            "GetItem", TableName=self._table, Key=_bench_key(bench_id), ConsistentRead=True
        )
        item = response.get("Item")
        return None if item is None else _decode_bench(item)

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
            "#version": "version",
            "#updated": "updated_at",
            "#caps": "capabilities",
        }
        values: Item = {
            ":name": _s(bench.name),
            ":type": _s(bench.type),
            ":labels": _encode_labels(bench.labels),
            ":interval": _n(bench.heartbeat_interval_s),
            ":state": _s(bench.admin_state.value),
            ":version": _n(bench.version),
            ":updated": _s(to_iso(bench.updated_at)),
            ":seen": _n(expected_version),
        }
        expression = (
            "SET #name = :name, #type = :type, #labels = :labels, #interval = :interval,"
            " #state = :state, #version = :version, #updated = :updated"
        )
        # A string set cannot be empty: no capabilities means no attribute.
        if bench.capabilities:
            expression += ", #caps = :caps"
            values[":caps"] = {"SS": sorted(bench.capabilities)}
        else:
            expression += " REMOVE #caps"
        actions: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _bench_key(bench.bench_id),
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
                {"Delete": {"TableName": self._table, "Key": _capability_key(bench.bench_id, tag)}}
            )
        actions.append(_put_history(self._history_table, entry))
        reasons = await _transact(self._call, actions)
        if reasons is None:
            return
        if _reason_code(reasons, 0) == _CONDITION_FAILED:
            stored = reasons[0].get("Item")
            if not stored:
                raise ItemNotFound(bench.bench_id)
            raise VersionMismatch(_decode_bench(stored))
        raise _cancelled(reasons)

    async def record_heartbeat(self, bench_id: str, heartbeat: Heartbeat) -> Bench:
        try:
            response = await self._call(
                "UpdateItem",
                TableName=self._table,
                Key=_bench_key(bench_id),
                UpdateExpression=(
                    "SET last_heartbeat_at = :at, agent_version = :agent,"
                    " heartbeat_details = :details"
                ),
                # Without it UpdateItem would create a bench out of a heartbeat.
                ConditionExpression="attribute_exists(bench_id)",
                ExpressionAttributeValues={
                    ":at": _s(to_iso(heartbeat.at)),
                    ":agent": _s(heartbeat.agent_version),
                    ":details": _s(json.dumps(heartbeat.details)),
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if _error_code(error) == "ConditionalCheckFailedException":
                raise ItemNotFound(bench_id) from None
            raise
        return _decode_bench(response["Attributes"])

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
        values: Item = {":list_pk": _s(BENCH_LIST_PK)}
        conditions = []
        if query.type is not None:
            names["#type"] = "type"
            values[":type"] = _s(query.type)
            conditions.append("#type = :type")
        if query.admin_state is not None:
            names["#state"] = "admin_state"
            values[":state"] = _s(query.admin_state)
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
            start = {**_bench_key(after), "list_pk": _s(BENCH_LIST_PK)}
        found: list[Bench] = []
        while len(found) < want:
            needed = want - len(found)
            page = {**params, "Limit": max(needed, _FILTERED_PAGE) if conditions else needed}
            if start is not None:
                page["ExclusiveStartKey"] = start
            response = await self._call("Query", **page)
            found += [_decode_bench(item) for item in response["Items"]]
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
            start = {**_capability_key(after, tag), "capability": _s(tag)}
        found: list[Bench] = []
        while len(found) < want:
            needed = want - len(found)
            page: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": CAPABILITY_INDEX,
                "KeyConditionExpression": "capability = :tag",
                "ExpressionAttributeValues": {":tag": _s(tag)},
                "Limit": _BATCH_GET_MAX if narrows_further else min(needed, _BATCH_GET_MAX),
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
        keys = [_bench_key(bench_id) for bench_id in bench_ids]
        benches: dict[str, Bench] = {}
        if not keys:
            return benches
        request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
        for attempt in range(_UNPROCESSED_ATTEMPTS):
            if attempt:
                await asyncio.sleep(_UNPROCESSED_BACKOFF_S * 2**attempt)
            response = await self._call("BatchGetItem", RequestItems=request)
            for item in response["Responses"].get(self._table, []):
                bench = _decode_bench(item)
                benches[bench.bench_id] = bench
            request = response.get("UnprocessedKeys") or {}
            if not request:
                return benches
        raise StoreUnavailable("DynamoDB BatchGetItem: keys left unprocessed")

    def _put_capability(self, bench_id: str, tag: str) -> dict[str, Any]:
        item = {**_capability_key(bench_id, tag), "capability": _s(tag)}
        return {"Put": {"TableName": self._table, "Item": item}}


class DynamoHistoryRepository:
    def __init__(self, call: _Call, table: str) -> None:
        self._call = call
        self._table = table

    async def find(
        self, entity_type: str, entity_id: str, limit: int, after: int | None
    ) -> Page[HistoryEntry]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        condition = "entity = :entity"
        values: Item = {":entity": _s(_entity(entity_type, entity_id))}
        if after is not None:
            condition += " AND #version > :after"
            values[":after"] = _n(after)
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ConsistentRead": True,
            "ScanIndexForward": True,
        }
        if after is not None:
            params["ExpressionAttributeNames"] = {"#version": "version"}
        want = limit + 1
        entries: list[HistoryEntry] = []
        start: Item | None = None
        while len(entries) < want:
            page = {**params, "Limit": want - len(entries)}
            if start is not None:
                page["ExclusiveStartKey"] = start
            response = await self._call("Query", **page)
            entries += [_decode_history(item) for item in response["Items"]]
            start = response.get("LastEvaluatedKey")
            if start is None:
                break
        if len(entries) > limit:
            items = entries[:limit]
            return Page(items=items, next_after=str(items[-1].version))
        return Page(items=entries, next_after=None)


async def _transact(call: _Call, actions: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Run one TransactWriteItems; the cancellation reasons if it was cancelled, else None."""
    try:
        # The token makes an SDK retry of this very request a no-op instead of a rerun.
        await call(
            "TransactWriteItems", TransactItems=actions, ClientRequestToken=str(uuid.uuid4())
        )
    except ClientError as error:
        if _error_code(error) == "TransactionCanceledException":
            reasons: list[dict[str, Any]] = error.response.get("CancellationReasons", [])
            return reasons
        raise
    return None


def _cancelled(reasons: list[dict[str, Any]]) -> StoreError:
    codes = [str(reason.get("Code")) for reason in reasons]
    if _UNAVAILABLE_REASONS.intersection(codes):
        return StoreUnavailable(f"DynamoDB transaction cancelled: {codes}")
    return StoreError(f"DynamoDB transaction cancelled: {codes}")


def _reason_code(reasons: list[dict[str, Any]], index: int) -> str | None:
    if index >= len(reasons):
        return None
    code = reasons[index].get("Code")
    return None if code is None else str(code)


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _credentials(settings: Settings) -> dict[str, str]:
    # A local endpoint (moto, DynamoDB Local) accepts any signature but botocore still
    # needs keys to sign with; real credentials in the environment win.
    has_credentials = "AWS_ACCESS_KEY_ID" in os.environ or "AWS_PROFILE" in os.environ
    if settings.dynamodb_endpoint_url and not has_credentials:
        return {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    return {}


def _matches(bench: Bench, query: BenchQuery) -> bool:
    return (
        query.capabilities <= bench.capabilities
        and (query.type is None or bench.type == query.type)
        and (query.admin_state is None or bench.admin_state.value == query.admin_state)
    )


# --- item encoding -----------------------------------------------------------------------


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _bench_key(bench_id: str) -> Item:
    return {"bench_id": _s(bench_id), "sk": _s(BENCH_SK)}


def _capability_key(bench_id: str, tag: str) -> Item:
    return {"bench_id": _s(bench_id), "sk": _s(f"{CAPABILITY_SK_PREFIX}{tag}")}


def _encode_labels(labels: dict[str, str]) -> Item:
    return {"M": {key: _s(value) for key, value in labels.items()}}


def _encode_bench(bench: Bench) -> Item:
    item: Item = {
        **_bench_key(bench.bench_id),
        "list_pk": _s(BENCH_LIST_PK),
        "name": _s(bench.name),
        "type": _s(bench.type),
        "labels": _encode_labels(bench.labels),
        "heartbeat_interval_s": _n(bench.heartbeat_interval_s),
        "admin_state": _s(bench.admin_state.value),
        "version": _n(bench.version),
        "created_at": _s(to_iso(bench.created_at)),
        "updated_at": _s(to_iso(bench.updated_at)),
    }
    if bench.capabilities:
        item["capabilities"] = {"SS": sorted(bench.capabilities)}
    if bench.last_heartbeat is not None:
        item["last_heartbeat_at"] = _s(to_iso(bench.last_heartbeat.at))
        item["agent_version"] = _s(bench.last_heartbeat.agent_version)
        item["heartbeat_details"] = _s(json.dumps(bench.last_heartbeat.details))
    return item


def _decode_bench(item: Item) -> Bench:
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
    )


def _entity(entity_type: str, entity_id: str) -> str:
    return f"{entity_type}#{entity_id}"


def _put_history(table: str, entry: HistoryEntry) -> dict[str, Any]:
    item: Item = {
        "entity": _s(_entity(entry.entity_type, entry.entity_id)),
        "version": _n(entry.version),
        "entity_type": _s(entry.entity_type),
        "entity_id": _s(entry.entity_id),
        "at": _s(to_iso(entry.at)),
        "actor": _s(entry.actor),
        "request_id": _s(entry.request_id),
        "action": _s(entry.action),
        "changes": _s(json.dumps(entry.changes)),
    }
    # History is append-only: a second entry for one version is a bug, not an overwrite.
    return {
        "Put": {
            "TableName": table,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(entity)",
        }
    }


def _decode_history(item: Item) -> HistoryEntry:
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
