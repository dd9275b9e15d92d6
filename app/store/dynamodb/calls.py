"""Requests every repository makes the same way: transactions, their cancellation reasons,
and batched consistent reads."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from botocore.exceptions import ClientError

from app.idempotency import IdempotencyKeyTaken
from app.store.base import StoreError, StoreUnavailable
from app.store.dynamodb.codec import Action, Item, decode_record

CONDITION_FAILED = "ConditionalCheckFailed"
# Another transaction held one of our items; nothing is wrong with the request itself.
TRANSACTION_CONFLICT = "TransactionConflict"
# Cancellation reasons of a transaction that a retry may get past.
UNAVAILABLE_REASONS = frozenset(
    {TRANSACTION_CONFLICT, "ThrottlingError", "ProvisionedThroughputExceeded"}
)
# TransactWriteItems refuses more than this many actions.
MAX_TRANSACTION_ACTIONS = 100
# BatchGetItem reads at most this many keys per request.
BATCH_GET_MAX = 100
# BatchGetItem may leave keys unprocessed under throttling; AWS asks for backoff between
# attempts (load shedding, not waiting out a race); keys still unread after that mean the
# store cannot serve now.
UNPROCESSED_ATTEMPTS = 5
UNPROCESSED_BACKOFF_S = 0.05


T = TypeVar("T")


class Call(Protocol):
    async def __call__(self, operation: str, /, **params: Any) -> dict[str, Any]: ...


Reasons = list[dict[str, Any]]


async def transact(call: Call, actions: list[Action]) -> Reasons | None:
    """Run one TransactWriteItems; the cancellation reasons if it was cancelled, else None."""
    if len(actions) > MAX_TRANSACTION_ACTIONS:
        raise StoreError(f"a transaction of {len(actions)} actions is over DynamoDB's limit")
    try:
        # The token makes an SDK retry of this very request a no-op instead of a rerun.
        await call(
            "TransactWriteItems", TransactItems=actions, ClientRequestToken=str(uuid.uuid4())
        )
    except ClientError as error:
        if error_code(error) == "TransactionCanceledException":
            reasons: Reasons = error.response.get("CancellationReasons", [])
            return reasons
        raise
    return None


def cancelled(reasons: Reasons) -> StoreError:
    codes = [str(reason.get("Code")) for reason in reasons]
    if UNAVAILABLE_REASONS.intersection(codes):
        return StoreUnavailable(f"DynamoDB transaction cancelled: {codes}")
    return StoreError(f"DynamoDB transaction cancelled: {codes}")


def reason_code(reasons: Reasons, index: int) -> str | None:
    if index >= len(reasons):
        return None
    code = reasons[index].get("Code")
    return None if code is None else str(code)


def failed(reasons: Reasons, index: int) -> bool:
    """Whether the condition of action ``index`` was false."""
    return reason_code(reasons, index) == CONDITION_FAILED


def old_item(reasons: Reasons, index: int) -> Item | None:
    """The item as stored when action ``index`` failed its condition (ALL_OLD), if any."""
    if index >= len(reasons):
        return None
    item: Item | None = reasons[index].get("Item") or None
    return item


def key_taken(reasons: Reasons, index: int) -> IdempotencyKeyTaken | None:
    """The error to raise when action ``index``, an idempotency key item, was in use.

    Callers check it before any other failed condition, as the SQLite adapter claims the
    key first: a retried create with the same key must replay, not report a conflict.
    """
    stored = old_item(reasons, index)
    if failed(reasons, index) and stored is not None:
        return IdempotencyKeyTaken(decode_record(stored))
    return None


async def get_one(call: Call, table: str, key: Item, decode: Callable[[Item], T]) -> T | None:
    """One item by key, strongly consistent; None when there is none."""
    response = await call("GetItem", TableName=table, Key=key, ConsistentRead=True)
    item = response.get("Item")
    return None if item is None else decode(item)


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


async def batch_get(call: Call, keys: dict[str, list[Item]]) -> dict[str, list[Item]]:
    """Consistent reads of ``keys`` (table name -> keys) in one request when it can be.

    Returns the items found per table; missing items are simply absent.
    """
    found: dict[str, list[Item]] = {table: [] for table in keys}
    pending = [(table, key) for table, table_keys in keys.items() for key in table_keys]
    while pending:
        chunk, pending = pending[:BATCH_GET_MAX], pending[BATCH_GET_MAX:]
        request: dict[str, Any] = {}
        for table, key in chunk:
            request.setdefault(table, {"Keys": [], "ConsistentRead": True})["Keys"].append(key)
        for attempt in range(UNPROCESSED_ATTEMPTS):
            if attempt:
                await asyncio.sleep(UNPROCESSED_BACKOFF_S * 2**attempt)
            response = await call("BatchGetItem", RequestItems=request)
            for table, items in response.get("Responses", {}).items():
                found.setdefault(table, []).extend(items)
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
        else:
            raise StoreUnavailable("DynamoDB BatchGetItem: keys left unprocessed")
    return found
