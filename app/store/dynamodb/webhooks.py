"""Webhook subscriptions and their deliveries on DynamoDB.

A subscription's changes are transactions with their history entry, conditioned on its
version; its failure run (``failing_since``) is one UpdateItem of its own, as it is not
configuration. A delivery per subscription and event (keyed by the event's id), put only
if absent, so fan-out that runs twice creates each once. The sender's sweep reads the
sparse due index and re-reads its candidates consistently; the relay's position in the
event log is an item of the FeedCheckpoints table, moved only by a conditional put.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from app.history.domain import HistoryEntry
from app.store.base import AlreadyExists, ItemNotFound, Page, VersionMismatch
from app.store.dynamodb.calls import (
    BATCH_GET_MAX,
    Call,
    batch_get,
    cancelled,
    error_code,
    failed,
    get_one,
    old_item,
    one_more_than,
    page_of,
    query_until,
    transact,
)
from app.store.dynamodb.codec import Action, Item, n, s
from app.store.dynamodb.history import HistoryTable
from app.store.dynamodb.tables import (
    DUE_INDEX,
    DUE_PK,
    OPEN_ENTITY_INDEX,
    WEBHOOK_LIST_INDEX,
    WEBHOOK_LIST_PK,
)
from app.store.dynamodb.webhook_codec import (
    OPTIONAL_SETTINGS,
    decode_delivery,
    decode_webhook,
    delivery_key,
    encode_delivery,
    encode_webhook,
    open_entity,
    webhook_key,
    webhook_settings,
)
from app.timeutil import to_iso
from app.webhooks.domain import Delivery, Webhook

# The relay's checkpoint in FeedCheckpoints (the exporters' names are theirs to choose:
# this one is the service's).
RELAY_CHECKPOINT = "webhook-relay"
_CONDITION_FAILED = "ConditionalCheckFailedException"


class DynamoWebhookRepository:
    def __init__(self, call: Call, table: str, history_table: HistoryTable) -> None:
        self._call = call
        self._table = table
        self._history = history_table

    async def create(self, webhook: Webhook, entry: HistoryEntry) -> None:
        put: Action = {
            "Put": {
                "TableName": self._table,
                "Item": encode_webhook(webhook),
                "ConditionExpression": "attribute_not_exists(webhook_id)",
            }
        }
        reasons = await transact(self._call, [put, *self._history.puts(entry)])
        if reasons is None:
            return
        if failed(reasons, 0):
            raise AlreadyExists(webhook.webhook_id)
        raise cancelled(reasons)

    async def get(self, webhook_id: str) -> Webhook | None:
        return await get_one(self._call, self._table, webhook_key(webhook_id), decode_webhook)

    async def update(self, current: Webhook, updated: Webhook, entry: HistoryEntry) -> None:
        settings = webhook_settings(updated)
        names = {f"#{name}": name for name in settings}
        values: Item = {f":{name}": value for name, value in settings.items()}
        expression = "SET " + ", ".join(f"#{name} = :{name}" for name in settings)
        removed = [name for name in OPTIONAL_SETTINGS if name not in settings]
        if removed:
            names.update({f"#{name}": name for name in removed})
            expression += " REMOVE " + ", ".join(f"#{name}" for name in removed)
        values[":seen"] = n(current.version)
        update: Action = {
            "Update": {
                "TableName": self._table,
                "Key": webhook_key(current.webhook_id),
                "UpdateExpression": expression,
                # A missing item fails ``version = :seen`` too: no Item back means 404.
                "ConditionExpression": "#version = :seen",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }
        await self._versioned(current.webhook_id, [update, *self._history.puts(entry)])

    async def delete(self, current: Webhook, entry: HistoryEntry) -> None:
        delete: Action = {
            "Delete": {
                "TableName": self._table,
                "Key": webhook_key(current.webhook_id),
                "ConditionExpression": "#version = :seen",
                "ExpressionAttributeNames": {"#version": "version"},
                "ExpressionAttributeValues": {":seen": n(current.version)},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }
        await self._versioned(current.webhook_id, [delete, *self._history.puts(entry)])

    async def record_failing(self, webhook_id: str, failing_since: datetime | None) -> None:
        params: dict[str, Any] = {
            "TableName": self._table,
            "Key": webhook_key(webhook_id),
            # Else UpdateItem would make a subscription out of a failure; a deleted one
            # is left deleted.
            "ConditionExpression": "attribute_exists(webhook_id)",
            "ExpressionAttributeNames": {"#failing": "failing_since"},
        }
        if failing_since is None:
            params["UpdateExpression"] = "REMOVE #failing"
        else:
            params["UpdateExpression"] = "SET #failing = :failing"
            params["ExpressionAttributeValues"] = {":failing": s(to_iso(failing_since))}
        try:
            await self._call("UpdateItem", **params)
        except ClientError as error:
            if error_code(error) != _CONDITION_FAILED:
                raise

    async def find(self, owner: str | None, limit: int, after: str | None) -> Page[Webhook]:
        params: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": WEBHOOK_LIST_INDEX,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": "list_pk"},
            "ExpressionAttributeValues": {":pk": s(WEBHOOK_LIST_PK)},
        }
        if owner is not None:
            params["FilterExpression"] = "#owner = :owner"
            params["ExpressionAttributeNames"]["#owner"] = "owner"
            params["ExpressionAttributeValues"][":owner"] = s(owner)
        start = None if after is None else {**webhook_key(after), "list_pk": s(WEBHOOK_LIST_PK)}
        found = await query_until(
            self._call,
            params,
            one_more_than(limit),
            lambda items: [decode_webhook(item) for item in items],
            filtered=owner is not None,
            start=start,
        )
        return page_of(found, limit, lambda webhook: webhook.webhook_id)

    async def _versioned(self, webhook_id: str, actions: list[Action]) -> None:
        """Run a change conditioned on the subscription's version (action 0)."""
        reasons = await transact(self._call, actions)
        if reasons is None:
            return
        if failed(reasons, 0):
            stored = old_item(reasons, 0)
            if stored is None:
                raise ItemNotFound(webhook_id)
            raise VersionMismatch(decode_webhook(stored))
        raise cancelled(reasons)


class DynamoDeliveryRepository:
    def __init__(self, call: Call, table: str, checkpoints_table: str) -> None:
        self._call = call
        self._table = table
        self._checkpoints = checkpoints_table

    async def add(self, deliveries: Sequence[Delivery]) -> int:
        added = await asyncio.gather(*(self._add(delivery) for delivery in deliveries))
        return sum(added)

    async def _add(self, delivery: Delivery) -> bool:
        try:
            await self._call(
                "PutItem",
                TableName=self._table,
                Item=encode_delivery(delivery),
                ConditionExpression="attribute_not_exists(delivery_id)",
            )
        except ClientError as error:
            if error_code(error) == _CONDITION_FAILED:
                return False  # fan-out ran before: the stored one stays as it is
            raise
        return True

    async def get(self, webhook_id: str, delivery_id: str) -> Delivery | None:
        return await get_one(
            self._call, self._table, delivery_key(webhook_id, delivery_id), decode_delivery
        )

    async def update(self, current: Delivery, updated: Delivery) -> None:
        if (updated.webhook_id, updated.delivery_id) != (current.webhook_id, current.delivery_id):
            raise ValueError(f"a delivery update keeps its key: {current.delivery_id!r}")
        try:
            # The whole item: index attributes the new status lacks go with it.
            await self._call(
                "PutItem",
                TableName=self._table,
                Item=encode_delivery(updated),
                ConditionExpression="#version = :seen",
                ExpressionAttributeNames={"#version": "version"},
                ExpressionAttributeValues={":seen": n(current.version)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error_code(error) != _CONDITION_FAILED:
                raise
            stored = error.response.get("Item")
            if not stored:
                raise ItemNotFound(current.delivery_id) from None
            raise VersionMismatch(decode_delivery(stored)) from None

    async def find(self, webhook_id: str, limit: int, after: str | None) -> Page[Delivery]:
        condition = "#pk = :pk"
        values: Item = {":pk": s(webhook_id)}
        names = {"#pk": "webhook_id"}
        if after is not None:
            condition += " AND #sk > :after"
            names["#sk"] = "delivery_id"
            values[":after"] = s(after)
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ConsistentRead": True,
        }
        found = await query_until(
            self._call,
            params,
            one_more_than(limit),
            lambda items: [decode_delivery(item) for item in items],
        )
        return page_of(found, limit, lambda delivery: delivery.delivery_id)

    async def find_due(self, now: datetime, limit: int) -> list[Delivery]:
        params: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": DUE_INDEX,
            "KeyConditionExpression": "#pk = :due AND #at <= :now",
            "ExpressionAttributeNames": {"#pk": "due_pk", "#at": "due_at"},
            "ExpressionAttributeValues": {":due": s(DUE_PK), ":now": s(to_iso(now))},
            "ScanIndexForward": True,
        }

        async def keep(items: list[Item]) -> list[Delivery]:
            keys = [
                delivery_key(item["webhook_id"]["S"], item["delivery_id"]["S"]) for item in items
            ]
            if not keys:
                return []
            stored = (await batch_get(self._call, {self._table: keys}))[self._table]
            # The index lags the table: a delivery sent or claimed a moment ago may still
            # be listed as it was. The table, read consistently, decides.
            current = [decode_delivery(item) for item in stored]
            return [d for d in current if _due(d, now)]

        # Each page of candidates is read back in one BatchGetItem, so no page is larger.
        due = await query_until(self._call, params, limit, keep, most=BATCH_GET_MAX)
        due.sort(key=lambda d: (d.due_at or now, d.webhook_id, d.delivery_id))
        return due

    async def first_open(self, webhook_id: str, entity_key: str) -> str | None:
        # An index read (eventually consistent): a delivery finished a moment ago may still
        # come first, and the caller, finding it not open, waits for the next pass.
        response = await self._call(
            "Query",
            TableName=self._table,
            IndexName=OPEN_ENTITY_INDEX,
            KeyConditionExpression="#pk = :entity",
            ExpressionAttributeNames={"#pk": "open_entity"},
            ExpressionAttributeValues={":entity": s(open_entity(webhook_id, entity_key))},
            ScanIndexForward=True,
            Limit=1,
        )
        items = response["Items"]
        return str(items[0]["delivery_id"]["S"]) if items else None

    async def relay_position(self) -> tuple[int, str | None]:
        response = await self._call(
            "GetItem",
            TableName=self._checkpoints,
            Key={"name": s(RELAY_CHECKPOINT)},
            ConsistentRead=True,
        )
        item = response.get("Item")
        if item is None:
            return 0, None
        return int(item["version"]["N"]), str(item["position"]["S"])

    async def advance_relay(self, version: int, position: str) -> bool:
        condition: dict[str, Any]
        if version == 0:
            condition = {
                "ConditionExpression": "attribute_not_exists(#name)",
                "ExpressionAttributeNames": {"#name": "name"},
            }
        else:
            condition = {
                "ConditionExpression": "#version = :seen",
                "ExpressionAttributeNames": {"#version": "version"},
                "ExpressionAttributeValues": {":seen": n(version)},
            }
        try:
            await self._call(
                "PutItem",
                TableName=self._checkpoints,
                Item={
                    "name": s(RELAY_CHECKPOINT),
                    "version": n(version + 1),
                    "position": s(position),
                    "updated_at": s(to_iso(datetime.now(UTC))),
                },
                **condition,
            )
        except ClientError as error:
            if error_code(error) == _CONDITION_FAILED:
                return False
            raise
        return True


def _due(delivery: Delivery, now: datetime) -> bool:
    return delivery.status.is_open and delivery.due_at is not None and delivery.due_at <= now
