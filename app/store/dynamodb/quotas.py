"""Quotas of users and teams on DynamoDB: one item each (quota = "user#<name>" /
"team#<name>"), created once and replaced only at the version read, with its history
entry in the same transaction."""

from __future__ import annotations

from app.history.domain import HistoryEntry
from app.quotas.domain import Limits, Quota, QuotaKind
from app.store.base import AlreadyExists, VersionMismatch
from app.store.dynamodb.calls import Call, cancelled, failed, get_one, old_item, transact
from app.store.dynamodb.codec import Action, Item, n, s
from app.store.dynamodb.history import HistoryTable
from app.timeutil import from_iso, to_iso


def quota_key(kind: QuotaKind, name: str) -> Item:
    return {"quota": s(f"{kind.value}#{name}")}


def _number(value: float) -> dict[str, str]:
    return {"N": repr(float(value))}


def encode_quota(quota: Quota) -> Item:
    item: Item = {
        **quota_key(quota.kind, quota.name),
        "kind": s(quota.kind.value),
        "name": s(quota.name),
        "version": n(quota.version),
        "updated_at": s(to_iso(quota.updated_at)),
    }
    # No limit of a kind: no attribute.
    limits = quota.limits
    if limits.max_booked_hours_7d is not None:
        item["max_booked_hours_7d"] = _number(limits.max_booked_hours_7d)
    if limits.max_concurrent is not None:
        item["max_concurrent"] = n(limits.max_concurrent)
    if limits.max_window_hours is not None:
        item["max_window_hours"] = _number(limits.max_window_hours)
    return item


def decode_quota(item: Item) -> Quota:
    def hours(name: str) -> float | None:
        value = item.get(name)
        return None if value is None else float(value["N"])

    concurrent = item.get("max_concurrent")
    return Quota(
        kind=QuotaKind(item["kind"]["S"]),
        name=item["name"]["S"],
        limits=Limits(
            max_booked_hours_7d=hours("max_booked_hours_7d"),
            max_concurrent=None if concurrent is None else int(concurrent["N"]),
            max_window_hours=hours("max_window_hours"),
        ),
        version=int(item["version"]["N"]),
        updated_at=from_iso(item["updated_at"]["S"]),
    )


class DynamoQuotaRepository:
    def __init__(self, call: Call, table: str, history_table: HistoryTable) -> None:
        self._call = call
        self._table = table
        self._history = history_table

    async def get(self, kind: QuotaKind, name: str) -> Quota | None:
        return await get_one(self._call, self._table, quota_key(kind, name), decode_quota)

    async def put(self, current: Quota | None, quota: Quota, entry: HistoryEntry) -> None:
        put: dict[str, object] = {
            "TableName": self._table,
            "Item": encode_quota(quota),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if current is None:
            put["ConditionExpression"] = "attribute_not_exists(quota)"
        else:
            put["ConditionExpression"] = "#version = :seen"
            put["ExpressionAttributeNames"] = {"#version": "version"}
            put["ExpressionAttributeValues"] = {":seen": n(current.version)}
        actions: list[Action] = [{"Put": put}, *self._history.puts(entry)]
        reasons = await transact(self._call, actions)
        if reasons is None:
            return
        if failed(reasons, 0):
            stored = old_item(reasons, 0)
            name = f"{quota.kind.value}:{quota.name}"
            if current is None:
                raise AlreadyExists(name)
            if stored is None:
                # As the SQLite adapter says of a quota gone since it was read.
                raise AlreadyExists(f"{name} is gone")
            raise VersionMismatch(decode_quota(stored))
        raise cancelled(reasons)
