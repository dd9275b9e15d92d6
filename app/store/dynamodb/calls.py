"""Requests every repository makes the same way: transactions, their cancellation reasons,
batched consistent reads, and paged Query listings."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from botocore.exceptions import ClientError

from app.store.base import IdempotencyKeyTaken, Page, StoreError, StoreUnavailable
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
# With a filter, DynamoDB's Limit counts items read, not items kept: read wider pages.
FILTERED_PAGE = 100


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


def only_conflicts(reasons: Reasons) -> bool:
    """Cancelled only because another transaction held an item: nothing was decided, and
    sending the same transaction again is safe."""
    codes = {reason_code(reasons, index) for index in range(len(reasons))}
    return TRANSACTION_CONFLICT in codes and CONDITION_FAILED not in codes


async def back_off(attempt: int, base_s: float = 0.01, cap_s: float = 0.1) -> None:
    """Full-jitter backoff before attempt ``attempt`` (from 1): racers spread apart."""
    await asyncio.sleep(random.uniform(0, min(cap_s, base_s * 2**attempt)))


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


# Decodes one Query page's items and keeps those that belong in the listing; it may be a
# coroutine when deciding takes another read (a consistent batch get of the candidates).
Keep = Callable[[list[Item]], list[T] | Awaitable[list[T]]]


async def query_until(
    call: Call,
    params: Mapping[str, Any],
    want: int,
    keep: Keep[T],
    *,
    filtered: bool = False,
    most: int | None = None,
    start: Item | None = None,
) -> list[T]:
    """Query from ``start`` until ``want`` items are kept or the results end; at most ``want``.

    Each page asks for as many items as are still wanted, at least FILTERED_PAGE when
    ``filtered``, and at most ``most`` when given; ``params`` holds the rest of the request.
    """
    found: list[T] = []
    while len(found) < want:
        needed = want - len(found)
        size = max(needed, FILTERED_PAGE) if filtered else needed
        page = {**params, "Limit": size if most is None else min(size, most)}
        if start is not None:
            page["ExclusiveStartKey"] = start
        response = await call("Query", **page)
        kept = keep(response["Items"])
        found += await kept if isinstance(kept, Awaitable) else kept
        start = response.get("LastEvaluatedKey")
        if start is None:
            break
    return found[:want]


def one_more_than(limit: int) -> int:
    """How many items a page of ``limit`` reads: one more, whose presence decides next_after,
    so the last page says so instead of pointing at an empty one."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    return limit + 1


def page_of(found: list[T], limit: int, page_key: Callable[[T], str]) -> Page[T]:
    """A page of ``limit`` out of up to ``one_more_than(limit)`` items found."""
    if len(found) > limit:
        items = found[:limit]
        return Page(items=items, next_after=page_key(items[-1]))
    return Page(items=found, next_after=None)
