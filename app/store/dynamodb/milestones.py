"""A reservation's time-driven milestones on DynamoDB: which are due, and announcing one.

Only a booked reservation with a milestone left carries ``announce_pk``, sorted on that
milestone's time (``announce_at``: its start while nothing is announced, its end once it
started), so the housekeeper's sweep reads the sparse announce index and re-reads its
candidates consistently: the index lags the table by a moment. Announcing is one
transaction: the reservation's count, conditioned on the version and count read, and the
events it raises. So two replicas that read the same reservation raise them once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.events.domain import DomainEvent
from app.reservations.domain import AtRisk, Reservation, ReservationState
from app.store.base import ItemNotFound, StoreError, StoreUnavailable, VersionMismatch
from app.store.dynamodb.calls import (
    BATCH_GET_MAX,
    Call,
    back_off,
    batch_get,
    cancelled,
    failed,
    old_item,
    only_conflicts,
    query_until,
    transact,
)
from app.store.dynamodb.codec import Action, Item, n, s
from app.store.dynamodb.events import EventTable
from app.store.dynamodb.reservation_codec import (
    RISK_NAMES,
    announce_at,
    announce_attributes,
    announced_is,
    at_risk_is,
    decode_reservation,
    reservation_key,
)
from app.store.dynamodb.tables import (
    ANNOUNCE_AT,
    ANNOUNCE_INDEX,
    ANNOUNCE_PK,
    ANNOUNCE_PK_ATTRIBUTE,
    AT_RISK_PK,
    AT_RISK_PK_ATTRIBUTE,
)
from app.timeutil import to_iso

# A racing transaction on the same reservation cancels ours with TransactionConflict:
# nothing was written, so it is sent again; if the other one announced, ours fails its
# condition the next time and says so.
_CONFLICT_ATTEMPTS = 3


async def find_unannounced(
    call: Call, table: str, before: datetime, limit: int
) -> list[Reservation]:
    """Booked reservations with a milestone due by ``before``, soonest first."""
    params: dict[str, Any] = {
        "TableName": table,
        "IndexName": ANNOUNCE_INDEX,
        "KeyConditionExpression": "#pk = :due AND #at <= :before",
        "ExpressionAttributeNames": {"#pk": ANNOUNCE_PK_ATTRIBUTE, "#at": ANNOUNCE_AT},
        "ExpressionAttributeValues": {":due": s(ANNOUNCE_PK), ":before": s(to_iso(before))},
        "ScanIndexForward": True,
    }

    async def keep(items: list[Item]) -> list[Reservation]:
        keys = [reservation_key(item["reservation_id"]["S"]) for item in items]
        if not keys:
            return []
        stored = (await batch_get(call, {table: keys}))[table]
        current = [decode_reservation(item) for item in stored]
        # The index lags the table: keep what is still booked and still due.
        return [r for r in current if (due := _due(r)) is not None and due <= before]

    # Each page of candidates is read back in one BatchGetItem, so no page is larger.
    found = await query_until(call, params, limit, keep, most=BATCH_GET_MAX)
    found.sort(key=lambda r: (_due(r) or before, r.reservation_id))
    return found


async def announce(
    call: Call,
    table: str,
    events_table: EventTable,
    current: Reservation,
    announced: int,
    events: Sequence[DomainEvent],
) -> None:
    names = {
        "#version": "version",
        "#announced": "announced",
        "#due_pk": ANNOUNCE_PK_ATTRIBUTE,
        "#due_at": ANNOUNCE_AT,
    }
    values: Item = {":seen": n(current.version), ":next": n(announced)}
    expression = "SET #announced = :next"
    # The next milestone's index entry, or none once both are announced.
    due = announce_attributes(current, announced)
    if due:
        expression += ", #due_pk = :due_pk, #due_at = :due_at"
        values[":due_pk"] = due[ANNOUNCE_PK_ATTRIBUTE]
        values[":due_at"] = due[ANNOUNCE_AT]
    else:
        expression += " REMOVE #due_pk, #due_at"
    condition, seen = announced_is(current.announced)
    values.update(seen)
    update: Action = {
        "Update": {
            "TableName": table,
            "Key": reservation_key(current.reservation_id),
            "UpdateExpression": expression,
            # A missing item fails ``version = :seen`` too: no Item back means 404.
            "ConditionExpression": f"#version = :seen AND {condition}",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }
    await _write_with_events(call, update, events_table, events, current.reservation_id)


async def _write_with_events(
    call: Call,
    update: Action,
    events_table: EventTable,
    events: Sequence[DomainEvent],
    reservation_id: str,
) -> None:
    """The reservation's conditional update and its events, all or nothing."""
    actions: list[Action] = [update, *(events_table.put(event) for event in events)]
    for attempt in range(_CONFLICT_ATTEMPTS):
        if attempt:
            await back_off(attempt)
        reasons = await transact(call, actions)
        if reasons is None:
            return
        if failed(reasons, 0):
            stored = old_item(reasons, 0)
            if stored is None:
                raise ItemNotFound(reservation_id)
            raise VersionMismatch(decode_reservation(stored))
        if any(failed(reasons, index) for index in range(1, len(actions))):
            raise StoreError("an event of this change is logged already")
        if not only_conflicts(reasons):
            raise cancelled(reasons)
    raise StoreUnavailable(
        f"changing {reservation_id!r}: transaction conflicts {_CONFLICT_ATTEMPTS} times in a row"
    )


async def flag(
    call: Call,
    table: str,
    events_table: EventTable,
    current: Reservation,
    at_risk: AtRisk | None,
    events: Sequence[DomainEvent],
) -> None:
    """The at-risk mark, as announcing is done: one transaction, conditioned on what was
    read, with the events it raises; the sparse at-risk index follows the mark."""
    names = {"#version": "version", "#announced": "announced", "#pk": AT_RISK_PK_ATTRIBUTE}
    names |= RISK_NAMES
    values: Item = {":seen": n(current.version)}
    if at_risk is None:
        expression = "REMOVE #risk, #risk_since, #pk"
    else:
        expression = "SET #risk = :risk, #risk_since = :risk_since"
        values |= {":risk": s(at_risk.reason), ":risk_since": s(to_iso(at_risk.since))}
        if current.state is ReservationState.BOOKED:
            expression += ", #pk = :pk"
            values[":pk"] = s(AT_RISK_PK)
    announced, seen = announced_is(current.announced)
    risk, risk_seen = at_risk_is(current.at_risk)
    values |= seen | risk_seen
    update: Action = {
        "Update": {
            "TableName": table,
            "Key": reservation_key(current.reservation_id),
            "UpdateExpression": expression,
            "ConditionExpression": f"#version = :seen AND {announced} AND {risk}",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }
    await _write_with_events(call, update, events_table, events, current.reservation_id)


def _due(reservation: Reservation) -> datetime | None:
    return announce_at(reservation, reservation.announced)
