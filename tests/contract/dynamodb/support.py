"""Proxies around a DynamoDB client that record or race its requests, and DynamoDB's
pricing rules for the capacity moto does not report.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any


class RecordingClient:
    """Forwards to a client and records (operation, parameters) of every call made."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._client, name)
        if not callable(target) or name.startswith("_") or name == "get_waiter":
            return target

        async def record(**params: Any) -> Any:
            self.requests.append((name, params))
            return await target(**params)

        return record


class RaceBeforeTransaction:
    """Runs ``race`` once, right before the first transaction goes out."""

    def __init__(self, client: Any, race: Callable[[], Awaitable[None]]) -> None:
        self._client = client
        self._race: Callable[[], Awaitable[None]] | None = race

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def transact_write_items(self, **params: Any) -> Any:
        race, self._race = self._race, None
        if race is not None:
            await race()
        return await self._client.transact_write_items(**params)


class RaceBeforeEveryTransaction:
    """Runs ``race(n)`` before the n-th transaction (from 0), every time."""

    def __init__(self, client: Any, race: Callable[[int], Awaitable[None]]) -> None:
        self._client = client
        self._race = race
        self._count = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def transact_write_items(self, **params: Any) -> Any:
        self._count += 1
        await self._race(self._count - 1)
        return await self._client.transact_write_items(**params)


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values, with its per-type rules."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: dict[str, Any]) -> int:
    ((kind, data),) = value.items()
    if kind == "S":
        return len(data.encode())
    if kind == "N":
        digits = data.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(member.encode()) for member in data)
    if kind == "L":
        return 3 + sum(1 + _value_size(member) for member in data)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(v) for k, v in data.items())
    raise AssertionError(f"no size rule for {kind}")


async def transaction_write_units(raw_client: Any, actions: list[dict[str, Any]]) -> int:
    """What DynamoDB bills for a committed TransactWriteItems, which moto does not report:
    2 write units per item per started KB, ConditionCheck included (billed as a write).
    Items are sized as stored after the commit (the bench a ConditionCheck looked at)."""
    units = 0
    for action in actions:
        ((kind, request),) = action.items()
        if kind == "Put":
            size = item_size(request["Item"])
        else:
            stored = await raw_client.get_item(
                TableName=request["TableName"], Key=request["Key"], ConsistentRead=True
            )
            size = item_size(stored["Item"])
        units += 2 * math.ceil(max(size, 1) / 1024)
    return units


def transactions(recorder: RecordingClient) -> list[list[dict[str, Any]]]:
    return [p["TransactItems"] for n, p in recorder.requests if n == "transact_write_items"]
