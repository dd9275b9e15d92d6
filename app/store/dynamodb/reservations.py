"""Reservations on DynamoDB.

A condition only sees the item it names, and the reservation indexes lag the table, so
neither can tell whether a window is free. The BenchCalendar guard items can: one item
per bench and UTC day lists the booked windows touching that day. A booking reads its
days with ConsistentRead, decides with the domain's ``conflicts``, and commits in one
TransactWriteItems that rewrites those days conditioned on the versions it read. When
another booking wrote one of them in between, the transaction is cancelled and the
booking reads and decides again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from app.benches.domain import AdminState
from app.history.domain import HistoryEntry
from app.reservations.domain import (
    LONGEST_WINDOW,
    Reservation,
    ReservationState,
    conflicts,
)
from app.store.base import (
    AlreadyExists,
    BenchNotBookable,
    IdempotencyKeyTaken,
    IdempotencyRecord,
    ItemNotFound,
    Page,
    ReservationQuery,
    StoreUnavailable,
    VersionMismatch,
    WindowTaken,
    parse_reservation_page_key,
    reservation_page_key,
)
from app.store.dynamodb.calendar import Day, Snapshot, decode_day, lost_race, ordered, write_day
from app.store.dynamodb.calls import (
    Call,
    batch_get,
    cancelled,
    failed,
    get_one,
    key_taken,
    old_item,
    one_more_than,
    page_of,
    query_until,
    transact,
)
from app.store.dynamodb.codec import (
    Action,
    HistoryTable,
    Item,
    bench_key,
    calendar_key,
    decode_bench,
    decode_record,
    decode_reservation,
    encode_reservation,
    idempotency_key,
    n,
    put_record,
    reservation_key,
    s,
)
from app.store.dynamodb.tables import (
    BENCH_RESERVATIONS_INDEX,
    OPEN_RESERVATION_PK,
    OPEN_RESERVATIONS_INDEX,
    USER_RESERVATIONS_INDEX,
)
from app.timeutil import to_iso

# Lost calendar races before giving up with StoreUnavailable. Each lost race means another
# booking of the same bench and day committed, so a few rounds settle any realistic burst.
_ATTEMPTS = 10
# Full-jitter backoff between rounds: spreads racers apart instead of re-colliding.
_BACKOFF_BASE_S = 0.005
_BACKOFF_CAP_S = 0.2


async def _back_off(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt)))


class DynamoReservationRepository:
    def __init__(
        self,
        call: Call,
        *,
        reservations_table: str,
        calendar_table: str,
        benches_table: str,
        history_table: HistoryTable,
        idempotency_table: str,
    ) -> None:
        self._call = call
        self._table = reservations_table
        self._calendar = calendar_table
        self._benches = benches_table
        self._history = history_table
        self._idempotency = idempotency_table

    async def create(
        self,
        reservation: Reservation,
        entry: HistoryEntry,
        idempotency: IdempotencyRecord | None = None,
    ) -> None:
        days = reservation.window.days()
        for attempt in range(_ATTEMPTS):
            if attempt:
                await _back_off(attempt)
            # The bench and the key ride along in the same read, so the outcomes are
            # decided in the SQLite adapter's order: key, bench, window. A concurrent
            # retry with one key must find the key (and replay), not the window it took.
            seen = await self._read(
                reservation.bench_id,
                days,
                bench=True,
                key=None if idempotency is None else idempotency.key,
            )
            if (
                idempotency is not None
                and seen.record is not None
                and seen.record.expires_at > idempotency.created_at
            ):
                raise IdempotencyKeyTaken(seen.record)
            if seen.bench is None or seen.bench.admin_state is not AdminState.ACTIVE:
                raise BenchNotBookable(seen.bench)
            taken = conflicts(
                reservation.window, seen.slots(days), ignore=reservation.reservation_id
            )
            if taken:
                raise WindowTaken(ordered(taken))

            # What was read is only advice: every fact it showed is a condition here.
            actions: list[Action] = [
                self._check_bookable(reservation.bench_id),
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": encode_reservation(reservation),
                        "ConditionExpression": "attribute_not_exists(reservation_id)",
                    }
                },
            ]
            first_day = len(actions)
            for day in days:
                bucket = seen.days[day]
                actions.append(
                    write_day(
                        self._calendar,
                        reservation.bench_id,
                        bucket,
                        [*bucket.slots, reservation.slot],
                    )
                )
            calendar = range(first_day, len(actions))
            actions.append(self._history.put(entry))
            if idempotency is not None:
                actions.append(put_record(self._idempotency, idempotency))

            reasons = await transact(self._call, actions)
            if reasons is None:
                return
            if idempotency is not None and (in_use := key_taken(reasons, len(actions) - 1)):
                raise in_use
            if failed(reasons, 0):
                stored = old_item(reasons, 0)
                raise BenchNotBookable(None if stored is None else decode_bench(stored))
            if failed(reasons, 1):
                raise AlreadyExists(reservation.reservation_id)
            if not lost_race(reasons, calendar):
                raise cancelled(reasons)
        raise StoreUnavailable(
            f"booking {reservation.bench_id!r}: lost the calendar race {_ATTEMPTS} times"
        )

    async def get(self, reservation_id: str) -> Reservation | None:
        return await get_one(
            self._call, self._table, reservation_key(reservation_id), decode_reservation
        )

    async def update(self, current: Reservation, updated: Reservation, entry: HistoryEntry) -> None:
        reservation_id = current.reservation_id
        # The bench is the stored one: an update changes the window, purpose and state only.
        bench_id = current.bench_id
        freed = set(current.window.days()) if current.holds_bench else set()
        held = set(updated.window.days()) if updated.holds_bench else set()
        calendar_changes = current.holds_bench != updated.holds_bench or (
            updated.holds_bench and current.window != updated.window
        )
        days = sorted(freed | held) if calendar_changes else []
        for attempt in range(_ATTEMPTS):
            if attempt:
                await _back_off(attempt)
            day_actions: list[Action] = []
            if days:
                # Taking a window also reads the reservation, so a stale caller hears
                # VersionMismatch before WindowTaken, as from the SQLite adapter.
                seen = await self._read(
                    bench_id, days, reservation_id=reservation_id if held else None
                )
                if held:
                    if seen.reservation is None:
                        raise ItemNotFound(reservation_id)
                    if seen.reservation.version != current.version:
                        raise VersionMismatch(seen.reservation)
                    taken = conflicts(updated.window, seen.slots(held), ignore=reservation_id)
                    if taken:
                        raise WindowTaken(ordered(taken))
                for day in days:
                    bucket = seen.days[day]
                    slots = [slot for slot in bucket.slots if slot.reservation_id != reservation_id]
                    if day in held:
                        slots.append(updated.slot)
                    if ordered(slots) != ordered(bucket.slots):
                        day_actions.append(write_day(self._calendar, bench_id, bucket, slots))

            actions: list[Action] = [self._update_reservation(current, updated), *day_actions]
            calendar = range(1, len(actions))
            actions.append(self._history.put(entry))
            reasons = await transact(self._call, actions)
            if reasons is None:
                return
            if failed(reasons, 0):
                stored = old_item(reasons, 0)
                if stored is None:
                    raise ItemNotFound(reservation_id)
                raise VersionMismatch(decode_reservation(stored))
            if not lost_race(reasons, calendar):
                raise cancelled(reasons)
        raise StoreUnavailable(
            f"changing {reservation_id!r}: lost the calendar race {_ATTEMPTS} times"
        )

    async def find_ended(self, before: datetime, limit: int) -> list[Reservation]:
        return await _find_ended(self._call, self._table, before, limit)

    async def find(
        self, query: ReservationQuery, limit: int, after: str | None
    ) -> Page[Reservation]:
        want = one_more_than(limit)
        if query.bench_id is not None:
            index, partition, value = BENCH_RESERVATIONS_INDEX, "bench_id", query.bench_id
        elif query.user_id is not None:
            index, partition, value = USER_RESERVATIONS_INDEX, "user_id", query.user_id
        else:
            raise ValueError("a reservation query needs bench_id or user_id")

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
        if query.bench_id is not None and query.user_id is not None:
            names["#user"] = "user_id"
            values[":user"] = s(query.user_id)
            filters.append("#user = :user")
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
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        if filters:
            params["FilterExpression"] = " AND ".join(filters)

        found = await query_until(
            self._call,
            params,
            want,
            lambda items: [decode_reservation(item) for item in items],
            filtered=bool(filters),
            start=start_key,
        )
        return page_of(found, limit, reservation_page_key)

    async def _read(
        self,
        bench_id: str,
        days: Iterable[date],
        *,
        bench: bool = False,
        key: str | None = None,
        reservation_id: str | None = None,
    ) -> Snapshot:
        """One consistent BatchGetItem: the calendar days, and what else the caller names."""
        snapshot = Snapshot(days={day: Day(day) for day in days})
        keys = {self._calendar: [calendar_key(bench_id, day) for day in snapshot.days]}
        if bench:
            keys[self._benches] = [bench_key(bench_id)]
        if key is not None:
            keys[self._idempotency] = [idempotency_key(key)]
        if reservation_id is not None:
            keys[self._table] = [reservation_key(reservation_id)]
        found = await batch_get(self._call, keys)
        for item in found.get(self._calendar, []):
            bucket = decode_day(item)
            snapshot.days[bucket.day] = bucket
        for item in found.get(self._benches, []):
            snapshot.bench = decode_bench(item)
        for item in found.get(self._idempotency, []):
            snapshot.record = decode_record(item)
        for item in found.get(self._table, []):
            snapshot.reservation = decode_reservation(item)
        return snapshot

    def _check_bookable(self, bench_id: str) -> Action:
        return {
            "ConditionCheck": {
                "TableName": self._benches,
                "Key": bench_key(bench_id),
                "ConditionExpression": "attribute_exists(bench_id) AND #state = :active",
                "ExpressionAttributeNames": {"#state": "admin_state"},
                "ExpressionAttributeValues": {":active": s(AdminState.ACTIVE.value)},
                # The bench as it is, to say why it cannot be booked without another read.
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    def _update_reservation(self, current: Reservation, updated: Reservation) -> Action:
        # SET only what an update may change, as the SQLite adapter does: the bench, the
        # owner and the creation time stay as stored.
        expression = (
            "SET #start = :start, #end = :end, #purpose = :purpose, #state = :state,"
            " #version = :version, #updated = :updated"
        )
        values: Item = {}
        if updated.state is ReservationState.BOOKED:
            expression += ", #open = :open"
            values[":open"] = s(OPEN_RESERVATION_PK)
        else:
            expression += " REMOVE #open"
        return {
            "Update": {
                "TableName": self._table,
                "Key": reservation_key(current.reservation_id),
                "UpdateExpression": expression,
                "ConditionExpression": "#version = :seen",
                "ExpressionAttributeNames": {
                    "#start": "start",
                    "#end": "end",
                    "#purpose": "purpose",
                    "#state": "state",
                    "#version": "version",
                    "#updated": "updated_at",
                    "#open": "open_pk",
                },
                "ExpressionAttributeValues": {
                    **values,
                    ":start": s(to_iso(updated.start)),
                    ":end": s(to_iso(updated.end)),
                    ":purpose": s(updated.purpose),
                    ":state": s(updated.state.value),
                    ":version": n(updated.version),
                    ":updated": s(to_iso(updated.updated_at)),
                    ":seen": n(current.version),
                },
                # A missing item fails ``version = :seen`` too: no Item back means 404.
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }


async def _find_ended(call: Call, table: str, before: datetime, limit: int) -> list[Reservation]:
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
