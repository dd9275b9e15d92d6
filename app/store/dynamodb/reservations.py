"""Reservations on DynamoDB.

A condition only sees the item it names, and the reservation indexes lag the table, so
neither can tell whether a window is free. The BenchCalendar guard items can: one item
per bench and UTC day lists the booked windows touching that day. A booking reads its
days with ConsistentRead, decides with the domain's ``conflicts``, and commits in one
TransactWriteItems that rewrites those days conditioned on the versions it read. When
another booking wrote one of them in between, the transaction is cancelled and the
booking reads and decides again. Quotas are decided the same way on the Ledgers guard
items of the reservation's holders (ledgers.py), read with the days and rewritten in the
same transaction by every change of what a reservation holds.

Milestones (``announced``) are not configuration: announcing one is a write of its own,
conditioned on the version and the announced count, that moves neither; an update is
conditioned on both as well, so a copy read before an announcement cannot undo it.
Listings and the sweeps are in reservation_queries.py, milestones in milestones.py, the
item layout in reservation_codec.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from datetime import datetime

from app.benches.domain import AdminState
from app.events.domain import DomainEvent
from app.history.domain import HistoryEntry
from app.quotas.domain import QuotaCheck
from app.reservations.domain import AtRisk, Reservation, conflicts
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
    DayKey,
    Snapshot,
    calendar_key,
    day_keys,
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
    bench_key,
    decode_bench,
    decode_record,
    idempotency_key,
    put_record,
    s,
)
from app.store.dynamodb.history import HistoryTable
from app.store.dynamodb.ledgers import (
    HolderTurns,
    Ledger,
    checked_holders,
    decode_ledger,
    held_for,
    holdings,
    ledger_actions,
    ledger_key,
)
from app.store.dynamodb.milestones import announce, find_unannounced, flag
from app.store.dynamodb.reservation_codec import (
    decode_reservation,
    encode_reservation,
    replace_reservation,
    reservation_key,
)
from app.store.dynamodb.reservation_queries import (
    find_advancing,
    find_at_risk,
    find_ended,
    find_reservations,
    find_started,
)

# Lost races before giving up with StoreUnavailable. Each lost race means another booking
# of the same bench and day, or of the same holder, committed, so a few rounds settle any
# realistic burst.
_ATTEMPTS = 10
# Full-jitter backoff between rounds: spreads racers apart instead of re-colliding.
_BACKOFF_BASE_S = 0.005
_BACKOFF_CAP_S = 0.2


async def _back_off(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt)))


def _placement(reservation: Reservation) -> tuple[str, datetime, datetime] | None:
    """Where a reservation sits on the calendars: nowhere once it no longer holds."""
    if not reservation.holds_bench:
        return None
    return (reservation.bench_id, reservation.start, reservation.end)


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
        ledgers_table: str,
    ) -> None:
        self._call = call
        self._table = reservations_table
        self._calendar = calendar_table
        self._benches = benches_table
        self._history = history_table
        self._idempotency = idempotency_table
        self._ledgers = ledgers_table
        self._turns = HolderTurns()

    async def create(
        self,
        reservation: Reservation,
        entry: HistoryEntry,
        idempotency: IdempotencyRecord | None = None,
        quota: QuotaCheck | None = None,
    ) -> None:
        async with self._turns.taken([*holdings(reservation), *checked_holders(quota)]):
            await self._create(reservation, entry, idempotency, quota)

    async def _create(
        self,
        reservation: Reservation,
        entry: HistoryEntry,
        idempotency: IdempotencyRecord | None,
        quota: QuotaCheck | None,
    ) -> None:
        reservation_id = reservation.reservation_id
        days = day_keys(reservation.bench_id, reservation.window)
        mine, checked = holdings(reservation), checked_holders(quota)
        for attempt in range(_ATTEMPTS):
            if attempt:
                await _back_off(attempt)
            # The bench and the key ride along in the same read, so the outcomes are
            # decided in the SQLite adapter's order: key, bench, window, quota. A
            # concurrent retry with one key must find the key (and replay), not the
            # window it took.
            seen = await self._read(
                days,
                bench=reservation.bench_id,
                key=None if idempotency is None else idempotency.key,
                ledgers=[*mine, *checked],
            )
            if (
                idempotency is not None
                and seen.record is not None
                and seen.record.expires_at > idempotency.created_at
            ):
                raise IdempotencyKeyTaken(seen.record)
            if seen.bench is None or seen.bench.admin_state is not AdminState.ACTIVE:
                raise BenchNotBookable(seen.bench)
            taken = conflicts(reservation.window, seen.slots(days), ignore=reservation_id)
            if taken:
                raise WindowTaken(ordered(taken))
            if quota is not None:
                quota.check(held_for(quota, seen.ledgers))

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
            for day in days:
                bucket = seen.days[day]
                actions.append(write_day(self._calendar, bucket, [*bucket.slots, reservation.slot]))
            actions += ledger_actions(
                self._ledgers, seen.ledgers, reservation_id, {}, mine, checked, entry.at
            )
            guards = range(2, len(actions))
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
                raise AlreadyExists(reservation_id)
            if not lost_race(reasons, guards):
                raise cancelled(reasons)
        raise StoreUnavailable(
            f"booking {reservation.bench_id!r}: lost the race for its calendar days or"
            f" ledgers {_ATTEMPTS} times"
        )

    async def get(self, reservation_id: str) -> Reservation | None:
        return await get_one(
            self._call, self._table, reservation_key(reservation_id), decode_reservation
        )

    async def update(
        self,
        current: Reservation,
        updated: Reservation,
        entry: HistoryEntry,
        quota: QuotaCheck | None = None,
    ) -> None:
        holders = [*holdings(current), *holdings(updated), *checked_holders(quota)]
        async with self._turns.taken(holders):
            await self._update(current, updated, entry, quota)

    async def _update(
        self,
        current: Reservation,
        updated: Reservation,
        entry: HistoryEntry,
        quota: QuotaCheck | None,
    ) -> None:
        reservation_id = current.reservation_id
        moves_bench = updated.bench_id != current.bench_id
        # The calendars follow the placement: the old days freed, the new ones taken (on
        # another bench when the scheduler moves the booking there).
        calendar_changes = _placement(current) != _placement(updated)
        freed: set[DayKey] = set()
        taken: set[DayKey] = set()
        if calendar_changes and current.holds_bench:
            freed = set(day_keys(current.bench_id, current.window))
        if calendar_changes and updated.holds_bench:
            taken = set(day_keys(updated.bench_id, updated.window))
        days = sorted(freed | taken)
        # The ledgers follow what it holds, and a quota is checked (as on SQLite) when the
        # reservation holds after the change.
        before, after = holdings(current), holdings(updated)
        checked = checked_holders(quota) if updated.holds_bench else []
        ledgers = sorted({*before, *after, *checked}) if before != after or checked else []
        # Reading the reservation too whenever a check follows, so a stale caller hears
        # VersionMismatch before BenchNotBookable, WindowTaken or QuotaExceeded, as from
        # the SQLite adapter.
        verify = bool(taken) or moves_bench or bool(checked)
        for attempt in range(_ATTEMPTS):
            if attempt:
                await _back_off(attempt)
            guard_actions: list[Action] = []
            if days or ledgers or verify:
                seen = await self._read(
                    days,
                    bench=updated.bench_id if moves_bench else None,
                    reservation_id=reservation_id if verify else None,
                    ledgers=ledgers,
                )
                if verify:
                    if seen.reservation is None:
                        raise ItemNotFound(reservation_id)
                    if (
                        seen.reservation.version != current.version
                        or seen.reservation.announced != current.announced
                    ):
                        raise VersionMismatch(seen.reservation)
                if moves_bench and (
                    seen.bench is None or seen.bench.admin_state is not AdminState.ACTIVE
                ):
                    raise BenchNotBookable(seen.bench)
                if taken:
                    collisions = conflicts(updated.window, seen.slots(taken), ignore=reservation_id)
                    if collisions:
                        raise WindowTaken(ordered(collisions))
                if quota is not None and checked:
                    quota.check(held_for(quota, seen.ledgers))
                for day in days:
                    bucket = seen.days[day]
                    slots = [slot for slot in bucket.slots if slot.reservation_id != reservation_id]
                    if day in taken:
                        slots.append(updated.slot)
                    if ordered(slots) != ordered(bucket.slots):
                        guard_actions.append(write_day(self._calendar, bucket, slots))
                if ledgers:
                    guard_actions += ledger_actions(
                        self._ledgers,
                        seen.ledgers,
                        reservation_id,
                        before,
                        after,
                        checked,
                        entry.at,
                    )

            actions: list[Action] = [replace_reservation(self._table, current, updated)]
            if moves_bench:
                actions.append(self._check_bookable(updated.bench_id))
            first_guard = len(actions)
            actions += guard_actions
            guards = range(first_guard, len(actions))
            actions += self._history.puts(entry)
            reasons = await transact(self._call, actions)
            if reasons is None:
                return
            if failed(reasons, 0):
                stored = old_item(reasons, 0)
                if stored is None:
                    raise ItemNotFound(reservation_id)
                raise VersionMismatch(decode_reservation(stored))
            if moves_bench and failed(reasons, 1):
                stored = old_item(reasons, 1)
                raise BenchNotBookable(None if stored is None else decode_bench(stored))
            if not lost_race(reasons, guards):
                raise cancelled(reasons)
        raise StoreUnavailable(
            f"changing {reservation_id!r}: lost the race for its calendar days or ledgers"
            f" {_ATTEMPTS} times"
        )

    async def find(
        self, query: ReservationQuery, limit: int, after: str | None
    ) -> Page[Reservation]:
        return await find_reservations(self._call, self._table, query, limit, after)

    async def find_ended(self, before: datetime, limit: int) -> list[Reservation]:
        return await find_ended(self._call, self._table, before, limit)

    async def find_advancing(self, after: datetime, limit: int) -> list[Reservation]:
        return await find_advancing(self._call, self._table, after, limit)

    async def find_at_risk(self, limit: int) -> list[Reservation]:
        return await find_at_risk(self._call, self._table, limit)

    async def find_started(self, since: datetime, until: datetime, limit: int) -> list[Reservation]:
        return await find_started(self._call, self._table, since, until, limit)

    async def find_unannounced(self, before: datetime, limit: int) -> list[Reservation]:
        return await find_unannounced(self._call, self._table, before, limit)

    async def flag(
        self, current: Reservation, at_risk: AtRisk | None, events: Sequence[DomainEvent]
    ) -> None:
        await flag(self._call, self._table, self._history.events, current, at_risk, events)

    async def announce(
        self, current: Reservation, announced: int, events: Sequence[DomainEvent]
    ) -> None:
        await announce(self._call, self._table, self._history.events, current, announced, events)

    async def _read(
        self,
        days: Iterable[DayKey],
        *,
        bench: str | None = None,
        key: str | None = None,
        reservation_id: str | None = None,
        ledgers: Iterable[str] = (),
    ) -> Snapshot:
        """One consistent BatchGetItem: the calendar days, and what else the caller names."""
        snapshot = Snapshot(
            days={day: Day(*day) for day in days},
            ledgers={name: Ledger(name) for name in ledgers},
        )
        keys: dict[str, list[Item]] = {}
        if snapshot.days:
            keys[self._calendar] = [calendar_key(*day) for day in snapshot.days]
        if bench is not None:
            keys[self._benches] = [bench_key(bench)]
        if key is not None:
            keys[self._idempotency] = [idempotency_key(key)]
        if reservation_id is not None:
            keys[self._table] = [reservation_key(reservation_id)]
        if snapshot.ledgers:
            keys[self._ledgers] = [ledger_key(name) for name in snapshot.ledgers]
        found = await batch_get(self._call, keys)
        for item in found.get(self._calendar, []):
            bucket = decode_day(item)
            snapshot.days[bucket.key] = bucket
        for item in found.get(self._benches, []):
            snapshot.bench = decode_bench(item)
        for item in found.get(self._idempotency, []):
            snapshot.record = decode_record(item)
        for item in found.get(self._table, []):
            snapshot.reservation = decode_reservation(item)
        for item in found.get(self._ledgers, []):
            ledger = decode_ledger(item)
            snapshot.ledgers[ledger.holder] = ledger
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
