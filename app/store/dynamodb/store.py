"""The DynamoDB adapter of the store port: one aioboto3 client per process, no Scan.

``DynamoStore`` owns the client and sends every request (metered, outages mapped to
StoreUnavailable); the repositories live beside it, one module per aggregate: benches.py,
reservations.py (with its guard items in calendar.py and ledgers.py, reservation_queries.py
and milestones.py), quotas.py, executions.py, history.py, idempotency.py, events.py (the
event log) and webhooks.py (subscriptions and deliveries). Item layout lives in codec.py
(and reservation_codec.py, webhook_codec.py), table definitions in tables.py, and requests
shared by repositories in calls.py.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from botocore import xform_name
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from app.aws import local_credentials
from app.settings import Settings
from app.store.base import StoreUnavailable
from app.store.dynamodb.benches import DynamoBenchRepository
from app.store.dynamodb.calls import error_code
from app.store.dynamodb.events import (
    DEFAULT_EVENT_RETENTION,
    DEFAULT_EVENT_SETTLE,
    DynamoEventLog,
    EventTable,
)
from app.store.dynamodb.executions import DynamoExecutionRepository
from app.store.dynamodb.history import DynamoHistoryRepository, HistoryTable
from app.store.dynamodb.idempotency import DynamoIdempotencyRepository
from app.store.dynamodb.quotas import DynamoQuotaRepository
from app.store.dynamodb.reservations import DynamoReservationRepository
from app.store.dynamodb.tables import (
    BENCH_CALENDAR,
    BENCHES,
    DELIVERIES,
    EVENTS,
    EXECUTIONS,
    FEED_CHECKPOINTS,
    HISTORY,
    IDEMPOTENCY,
    LEDGERS,
    QUOTAS,
    RESERVATIONS,
    TASKS,
    WEBHOOKS,
    DynamoClient,
    create_tables,
)
from app.store.dynamodb.webhooks import DynamoDeliveryRepository, DynamoWebhookRepository

CLIENT_CONFIG = AioConfig(
    connect_timeout=2,
    read_timeout=5,
    # Standard mode retries throttling and transient errors with jittered backoff and a
    # retry quota; what still fails after that surfaces as StoreUnavailable.
    retries={"mode": "standard", "max_attempts": 3},
    max_pool_connections=50,
    # Every request is built by this adapter's code, never from a caller's input, and the
    # contract suite runs them all: botocore checking each against the service model
    # again costs ~15 % of a GetItem's CPU here. DynamoDB still refuses a bad one.
    parameter_validation=False,
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
        event_retention: timedelta = DEFAULT_EVENT_RETENTION,
        event_settle: timedelta = DEFAULT_EVENT_SETTLE,
    ) -> None:
        self.client = client
        self.table_prefix = table_prefix
        self.capacity: dict[tuple[str, str], float] = {}
        self.calls: dict[str, int] = {}
        self._exit_stack = exit_stack
        self._benches_table = BENCHES.table_name(table_prefix)
        events_table = EventTable(EVENTS.table_name(table_prefix), event_retention)
        history_table = HistoryTable(
            HISTORY.table_name(table_prefix), events_table, history_retention
        )
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
            ledgers_table=LEDGERS.table_name(table_prefix),
        )
        self.quotas = DynamoQuotaRepository(
            self._call, QUOTAS.table_name(table_prefix), history_table
        )
        self.idempotency = DynamoIdempotencyRepository(self._call, idempotency_table)
        self.executions = DynamoExecutionRepository(
            self._call,
            executions_table=EXECUTIONS.table_name(table_prefix),
            tasks_table=TASKS.table_name(table_prefix),
            history_table=history_table,
            idempotency_table=idempotency_table,
        )
        self.events = DynamoEventLog(self._call, events_table, event_settle)
        self.webhooks = DynamoWebhookRepository(
            self._call, WEBHOOKS.table_name(table_prefix), history_table
        )
        self.deliveries = DynamoDeliveryRepository(
            self._call,
            DELIVERIES.table_name(table_prefix),
            FEED_CHECKPOINTS.table_name(table_prefix),
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
                    config=CLIENT_CONFIG,
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
            event_retention=settings.event_retention,
            event_settle=timedelta(milliseconds=settings.event_settle_ms),
        )

    async def ping(self) -> None:
        try:
            await self._call("DescribeTable", TableName=self._benches_table)
        except ClientError as error:
            raise StoreUnavailable(f"DynamoDB: {error_code(error)}") from error

    async def purge_expired(self, now: datetime) -> int:
        # TTL on expires_at deletes expired history and events (reads skip them until
        # then); stream records expire after 24 hours on their own.
        return 0

    async def close(self) -> None:
        if self._exit_stack is not None:
            stack, self._exit_stack = self._exit_stack, None
            await stack.aclose()

    async def _call(self, operation: str, /, **params: Any) -> dict[str, Any]:
        """Every DynamoDB request goes through here: meter it, map outages to one error."""
        # Sent from this module: tests/ops/test_infra.py attributes requests to the service
        # policy by the module that makes them.
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
