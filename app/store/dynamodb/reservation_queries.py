"""The reservations' reads that serve listings, housekeeping and the scheduler, on DynamoDB.

Listings read the bench and user indexes; the sweeps (ended, started, advancing
reservations) read sparse keys-only indexes, which name candidates only: they re-read
them with a consistent BatchGetItem and keep those the table says still qualify, since an
index lags the table by a moment.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from app.reservations.domain import LONGEST_WINDOW, Reservation, ReservationState
from app.store.base import (
    Page,
    ReservationQuery,
    parse_reservation_page_key,
    reservation_page_key,
)
from app.store.dynamodb.calls import (
    BATCH_GET_MAX,
    Call,
    batch_get,
    one_more_than,
    page_of,
    query_until,
)
from app.store.dynamodb.codec import Item, s
from app.store.dynamodb.reservation_codec import decode_reservation, reservation_key
from app.store.dynamodb.tables import (
    ADVANCE_PK,
    ADVANCE_PK_ATTRIBUTE,
    ADVANCING_INDEX,
    AT_RISK_INDEX,
    AT_RISK_PK,
    AT_RISK_PK_ATTRIBUTE,
    BENCH_RESERVATIONS_INDEX,
    BOOKED_STARTS_INDEX,
    OPEN_RESERVATION_PK,
    OPEN_RESERVATIONS_INDEX,
    TEAM_RESERVATIONS_INDEX,
    USER_RESERVATIONS_INDEX,
)
from app.timeutil import to_iso


async def find_reservations(
    call: Call, table: str, query: ReservationQuery, limit: int, after: str | None
) -> Page[Reservation]:
    """A calendar, a user's or a team's reservations: one index Query, bounded by the
    window asked (the first of bench, user and team named is the index, the others filters)."""
    want = one_more_than(limit)
    if query.bench_id is not None:
        index, partition, value = BENCH_RESERVATIONS_INDEX, "bench_id", query.bench_id
    elif query.user_id is not None:
        index, partition, value = USER_RESERVATIONS_INDEX, "user_id", query.user_id
    elif query.team is not None:
        index, partition, value = TEAM_RESERVATIONS_INDEX, "team", query.team
    else:
        raise ValueError("a reservation query needs bench_id, user_id or team")

    # Bounds on start, both inclusive. A reservation lasts at most LONGEST_WINDOW, so
    # one ending after ``ends_after`` started at most that long before it.
    lowest = None if query.ends_after is None else to_iso(query.ends_after - LONGEST_WINDOW)
    # Instants are stored to the microsecond: "start < X" is "start <= X - 1 µs".
    highest = (
        None
        if query.starts_before is None
        else to_iso(query.starts_before - timedelta(microseconds=1))
    )
    start_key: Item | None = None
    if after is not None:
        after_start, after_id = parse_reservation_page_key(after)
        if after_start and (lowest is None or after_start >= lowest):
            # Narrow the key condition to the cursor too: DynamoDB refuses a start key
            # outside the condition's range, and an id-less cursor needs no start key.
            lowest = after_start
            if after_id:
                start_key = {
                    **reservation_key(after_id),
                    partition: s(value),
                    "start": s(after_start),
                }
    if lowest is not None and highest is not None and lowest > highest:
        return Page(items=[], next_after=None)

    # DynamoDB refuses names and values an expression does not use: add them as used.
    names = {"#pk": partition}
    values: Item = {":pk": s(value)}
    condition = "#pk = :pk"
    if lowest is not None or highest is not None:
        names["#start"] = "start"
    if lowest is not None and highest is not None:
        condition += " AND #start BETWEEN :lowest AND :highest"
    elif lowest is not None:
        condition += " AND #start >= :lowest"
    elif highest is not None:
        condition += " AND #start <= :highest"
    if lowest is not None:
        values[":lowest"] = s(lowest)
    if highest is not None:
        values[":highest"] = s(highest)
    filters = []
    if partition != "user_id" and query.user_id is not None:
        names["#user"] = "user_id"
        values[":user"] = s(query.user_id)
        filters.append("#user = :user")
    if partition != "team" and query.team is not None:
        names["#team"] = "team"
        values[":team"] = s(query.team)
        filters.append("#team = :team")
    if query.ends_after is not None:
        names["#end"] = "end"
        values[":ends_after"] = s(to_iso(query.ends_after))
        filters.append("#end > :ends_after")
    if query.holding_only:
        names["#state"] = "state"
        values[":booked"] = s(ReservationState.BOOKED.value)
        values[":completed"] = s(ReservationState.COMPLETED.value)
        filters.append("#state IN (:booked, :completed)")
    params: dict[str, Any] = {
        "TableName": table,
        "IndexName": index,
        "KeyConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }
    if filters:
        params["FilterExpression"] = " AND ".join(filters)

    found = await query_until(
        call,
        params,
        want,
        lambda items: [decode_reservation(item) for item in items],
        filtered=bool(filters),
        start=start_key,
    )
    return page_of(found, limit, reservation_page_key)


async def find_ended(call: Call, table: str, before: datetime, limit: int) -> list[Reservation]:
    """Ended booked reservations: the sparse index names them, consistent reads decide."""
    response = await call(
        "Query",
        TableName=table,
        IndexName=OPEN_RESERVATIONS_INDEX,
        KeyConditionExpression="#open = :open AND #end <= :before",
        ExpressionAttributeNames={"#open": "open_pk", "#end": "end"},
        ExpressionAttributeValues={
            ":open": s(OPEN_RESERVATION_PK),
            ":before": s(to_iso(before)),
        },
        Limit=limit,
    )
    keys = [reservation_key(item["reservation_id"]["S"]) for item in response["Items"]]
    if not keys:
        return []
    stored = (await batch_get(call, {table: keys}))[table]
    current = [decode_reservation(item) for item in stored]
    # The index lags the table: keep only what is still booked and over.
    ended = [r for r in current if r.state is ReservationState.BOOKED and r.end <= before]
    return sorted(ended, key=lambda r: (r.end, r.reservation_id))


async def find_started(
    call: Call, table: str, since: datetime, until: datetime, limit: int
) -> list[Reservation]:
    """Booked reservations with since <= start <= until, earliest first."""
    if since > until:
        return []

    def qualifies(reservation: Reservation) -> bool:
        return reservation.state is ReservationState.BOOKED and since <= reservation.start <= until

    return await _candidates(
        call,
        table,
        {
            "IndexName": BOOKED_STARTS_INDEX,
            "KeyConditionExpression": "#pk = :pk AND #start BETWEEN :since AND :until",
            "ExpressionAttributeNames": {"#pk": "open_pk", "#start": "start"},
            "ExpressionAttributeValues": {
                ":pk": s(OPEN_RESERVATION_PK),
                ":since": s(to_iso(since)),
                ":until": s(to_iso(until)),
            },
        },
        qualifies,
        limit,
    )


async def find_advancing(call: Call, table: str, after: datetime, limit: int) -> list[Reservation]:
    """Booked reservations with ``advance`` that start after ``after``, soonest first."""

    def qualifies(reservation: Reservation) -> bool:
        return (
            reservation.state is ReservationState.BOOKED
            and reservation.advance
            and reservation.start > after
        )

    return await _candidates(
        call,
        table,
        {
            "IndexName": ADVANCING_INDEX,
            "KeyConditionExpression": "#pk = :pk AND #start > :after",
            "ExpressionAttributeNames": {"#pk": ADVANCE_PK_ATTRIBUTE, "#start": "start"},
            "ExpressionAttributeValues": {":pk": s(ADVANCE_PK), ":after": s(to_iso(after))},
        },
        qualifies,
        limit,
    )


async def find_at_risk(call: Call, table: str, limit: int) -> list[Reservation]:
    """Booked reservations marked at risk, soonest first."""

    def qualifies(reservation: Reservation) -> bool:
        return reservation.state is ReservationState.BOOKED and reservation.at_risk is not None

    return await _candidates(
        call,
        table,
        {
            "IndexName": AT_RISK_INDEX,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": AT_RISK_PK_ATTRIBUTE},
            "ExpressionAttributeValues": {":pk": s(AT_RISK_PK)},
        },
        qualifies,
        limit,
    )


async def _candidates(
    call: Call,
    table: str,
    query: dict[str, Any],
    qualifies: Callable[[Reservation], bool],
    limit: int,
) -> list[Reservation]:
    """A sparse index's candidates in start order, each page re-read consistently: those
    the table says still qualify, by (start, reservation_id)."""
    if limit < 1:
        return []

    async def keep(items: list[Item]) -> list[Reservation]:
        keys = [reservation_key(item["reservation_id"]["S"]) for item in items]
        if not keys:
            return []
        stored = (await batch_get(call, {table: keys}))[table]
        return [r for r in map(decode_reservation, stored) if qualifies(r)]

    params = {"TableName": table, "ScanIndexForward": True, **query}
    # Each page of candidates is read back in one BatchGetItem, so no page is larger.
    found = await query_until(call, params, limit, keep, most=BATCH_GET_MAX)
    return sorted(found, key=lambda r: (r.start, r.reservation_id))
