"""Reservations on DynamoDB.

A condition only sees the item it names, and the reservation indexes lag the table, so
neither can tell whether a window is free. The BenchCalendar guard items can: one item
per bench and UTC day lists the booked windows touching that day. A booking reads its
days with ConsistentRead, decides with the domain's ``conflicts``, and commits in one
TransactWriteItems that rewrites those days conditioned on the versions it read. When
another booking wrote one of them in between, the transaction is cancelled and the
booking reads and decides again.

Milestones (``announced``) are not configuration: announcing one is a write of its own,
conditioned on the version and the announced count, that moves neither; an update is
conditioned on both as well, so a copy read before an announcement cannot undo it.
Listings and the ended-reservation sweep are in reservation_queries.py, milestones in
milestones.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from datetime import date, datetime

from app.benches.domain import AdminState
from app.events.domain import DomainEvent
from app.history.domain import HistoryEntry
from app.reservations.domain import Reservation, ReservationState, conflicts
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
)
from app.store.dynamodb.calendar import (
    Day,
    Snapshot,
    calendar_key,
    decode_day,
    lost_race,
    ordered,
    write_day,
)
from app.store.dynamodb.calls import (
    Call,
    batch_get,
    cancelled,
    failed,
    get_one,
    key_taken,
    old_item,
    transact,
)
from app.store.dynamodb.codec import (
    Action,
    Item,
    announce_attributes,
    bench_key,
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
from app.store.dynamodb.history import HistoryTable
from app.store.dynamodb.milestones import announce, announced_is, find_unannounced
from app.store.dynamodb.reservation_queries import find_ended, find_reservations
from app.store.dynamodb.tables import ANNOUNCE_AT, ANNOUNCE_PK_ATTRIBUTE, OPEN_RESERVATION_PK
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
            actions += self._history.puts(entry)
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
                    if (
                        seen.reservation.version != current.version
                        or seen.reservation.announced != current.announced
                    ):
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
            actions += self._history.puts(entry)
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

    async def find(
        self, query: ReservationQuery, limit: int, after: str | None
    ) -> Page[Reservation]:
        return await find_reservations(self._call, self._table, query, limit, after)

    async def find_ended(self, before: datetime, limit: int) -> list[Reservation]:
        return await find_ended(self._call, self._table, before, limit)

    async def find_unannounced(self, before: datetime, limit: int) -> list[Reservation]:
        return await find_unannounced(self._call, self._table, before, limit)

    async def announce(
        self, current: Reservation, announced: int, events: Sequence[DomainEvent]
    ) -> None:
        await announce(self._call, self._table, self._history.events, current, announced, events)

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
        assignments = [
            "#start = :start",
            "#end = :end",
            "#purpose = :purpose",
            "#state = :state",
            "#version = :version",
            "#updated = :updated",
            "#announced = :announced",
        ]
        removals = []
        values: Item = {}
        if updated.state is ReservationState.BOOKED:
            assignments.append("#open = :open")
            values[":open"] = s(OPEN_RESERVATION_PK)
        else:
            removals.append("#open")
        # The announce index follows the new window and state.
        due = announce_attributes(updated, updated.announced)
        if due:
            assignments += ["#due_pk = :due_pk", "#due_at = :due_at"]
            values[":due_pk"] = due[ANNOUNCE_PK_ATTRIBUTE]
            values[":due_at"] = due[ANNOUNCE_AT]
        else:
            removals += ["#due_pk", "#due_at"]
        expression = "SET " + ", ".join(assignments)
        if removals:
            expression += " REMOVE " + ", ".join(removals)
        # A milestone announced since ``current`` was read moved no version, but this
        # copy would undo it: the stored count must be the one read, too.
        condition, seen = announced_is(current.announced)
        values.update(seen)
        return {
            "Update": {
                "TableName": self._table,
                "Key": reservation_key(current.reservation_id),
                "UpdateExpression": expression,
                "ConditionExpression": f"#version = :seen AND {condition}",
                "ExpressionAttributeNames": {
                    "#start": "start",
                    "#end": "end",
                    "#purpose": "purpose",
                    "#state": "state",
                    "#version": "version",
                    "#updated": "updated_at",
                    "#open": "open_pk",
                    "#announced": "announced",
                    "#due_pk": ANNOUNCE_PK_ATTRIBUTE,
                    "#due_at": ANNOUNCE_AT,
                },
                "ExpressionAttributeValues": {
                    **values,
                    ":start": s(to_iso(updated.start)),
                    ":end": s(to_iso(updated.end)),
                    ":purpose": s(updated.purpose),
                    ":state": s(updated.state.value),
                    ":version": n(updated.version),
                    ":updated": s(to_iso(updated.updated_at)),
                    ":announced": n(updated.announced),
                    ":seen": n(current.version),
                },
                # A missing item fails ``version = :seen`` too: no Item back means 404.
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }
