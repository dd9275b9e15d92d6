"""Reservations: their rows and the repository that books, changes and finds them.

Booking checks the bench and the calendar inside the write transaction that inserts the
reservation, so no other booking can slip in between the check and the insert.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import aiosqlite

from app.benches.domain import AdminState
from app.events.domain import DomainEvent
from app.history.domain import HistoryEntry
from app.quotas.domain import QuotaCheck, QuotaKind
from app.reservations.domain import (
    HOLDING_STATES,
    LONGEST_WINDOW,
    AtRisk,
    BookedSlot,
    Reservation,
    ReservationKind,
    ReservationState,
)
from app.store.base import (
    BenchNotBookable,
    IdempotencyRecord,
    ItemNotFound,
    Page,
    ReservationQuery,
    VersionMismatch,
    WindowTaken,
    Write,
    reservation_page_key,
)
from app.store.sqlite.benches import BENCHES
from app.store.sqlite.database import SqliteDatabase
from app.store.sqlite.table import Table
from app.timeutil import from_iso, to_iso


def _reservation_row(reservation: Reservation) -> dict[str, Any]:
    return {
        "reservation_id": reservation.reservation_id,
        "bench_id": reservation.bench_id,
        "user_id": reservation.user_id,
        "start": to_iso(reservation.start),
        "end": to_iso(reservation.end),
        "purpose": reservation.purpose,
        "state": reservation.state.value,
        "version": reservation.version,
        "created_at": to_iso(reservation.created_at),
        "updated_at": to_iso(reservation.updated_at),
        "announced": reservation.announced,
        "advance": int(reservation.advance),
        "priority": reservation.priority,
        "not_before": None if reservation.not_before is None else to_iso(reservation.not_before),
        "capabilities": json.dumps(sorted(reservation.capabilities)),
        "team": reservation.team,
        "checked_in_at": _iso_or_none(reservation.checked_in_at),
        "idle_warned_at": _iso_or_none(reservation.idle_warned_at),
        "allow_swap": int(reservation.allow_swap),
        "at_risk_reason": None if reservation.at_risk is None else reservation.at_risk.reason,
        "at_risk_since": None if reservation.at_risk is None else to_iso(reservation.at_risk.since),
        "kind": reservation.kind.value,
    }


def _iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else to_iso(moment)


def _time_or_none(text: str | None) -> datetime | None:
    return None if text is None else from_iso(text)


def _reservation_from_row(row: sqlite3.Row) -> Reservation:
    return Reservation(
        reservation_id=row["reservation_id"],
        bench_id=row["bench_id"],
        user_id=row["user_id"],
        start=from_iso(row["start"]),
        end=from_iso(row["end"]),
        purpose=row["purpose"],
        state=ReservationState(row["state"]),
        version=row["version"],
        created_at=from_iso(row["created_at"]),
        updated_at=from_iso(row["updated_at"]),
        announced=row["announced"],
        advance=bool(row["advance"]),
        priority=row["priority"],
        not_before=_time_or_none(row["not_before"]),
        capabilities=frozenset(json.loads(row["capabilities"])),
        team=row["team"],
        checked_in_at=_time_or_none(row["checked_in_at"]),
        idle_warned_at=_time_or_none(row["idle_warned_at"]),
        allow_swap=bool(row["allow_swap"]),
        at_risk=None
        if row["at_risk_reason"] is None
        else AtRisk(row["at_risk_reason"], from_iso(row["at_risk_since"])),
        kind=ReservationKind(row["kind"]),
    )


_RESERVATIONS: Table[Reservation] = Table(
    "reservations", "reservation_id", _reservation_row, _reservation_from_row
)


class SqliteReservationRepository:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def create(
        self,
        reservation: Reservation,
        entry: HistoryEntry,
        idempotency: IdempotencyRecord | None = None,
        quota: QuotaCheck | None = None,
    ) -> None:
        async with self._db.write() as connection:
            await self._db.claim_key(connection, idempotency)
            await self._check_bookable(connection, reservation.bench_id)
            await self._check_free(connection, reservation)
            await self._check_quota(connection, quota)
            await _RESERVATIONS.write(
                connection, reservation.reservation_id, Write(None, reservation), None
            )
            await self._db.insert_history(connection, entry)

    async def get(self, reservation_id: str) -> Reservation | None:
        async with self._db.read() as connection:
            return await _RESERVATIONS.read(connection, reservation_id)

    async def update(
        self,
        current: Reservation,
        updated: Reservation,
        entry: HistoryEntry,
        quota: QuotaCheck | None = None,
    ) -> None:
        async with self._db.write() as connection:
            stored = await _RESERVATIONS.read(connection, current.reservation_id)
            if stored is None:
                raise ItemNotFound(current.reservation_id)
            # A milestone announced since the caller read it moves no version, but the
            # caller's copy would undo it: decide again on the stored one.
            if (stored.version, stored.announced, stored.at_risk) != (
                current.version,
                current.announced,
                current.at_risk,
            ):
                raise VersionMismatch(stored)
            if updated.bench_id != stored.bench_id:
                await self._check_bookable(connection, updated.bench_id)
            if updated.holds_bench:
                await self._check_free(connection, updated)
                await self._check_quota(connection, quota)
            # The write lock is held since BEGIN IMMEDIATE, so the check above still holds;
            # the write is conditioned on the version all the same.
            await _RESERVATIONS.write(
                connection, current.reservation_id, Write(current, updated), current.version
            )
            await self._db.insert_history(connection, entry)

    async def find(
        self, query: ReservationQuery, limit: int, after: str | None
    ) -> Page[Reservation]:
        clauses: list[str] = []
        params: list[Any] = []
        if query.bench_id is not None:
            clauses.append("bench_id = ?")
            params.append(query.bench_id)
        if query.user_id is not None:
            clauses.append("user_id = ?")
            params.append(query.user_id)
        if query.team is not None:
            clauses.append("team = ?")
            params.append(query.team)
        if not clauses:
            raise ValueError("a reservation query needs bench_id, user_id or team")
        if query.ends_after is not None:
            # A reservation lasts at most LONGEST_WINDOW: one that ends after this started
            # at most that long before it. The bound keeps the index range to the window
            # asked about, not the bench's whole past (as the DynamoDB adapter's Query).
            clauses.append('"end" > ? AND start >= ?')
            params += [to_iso(query.ends_after), to_iso(query.ends_after - LONGEST_WINDOW)]
        if query.starts_before is not None:
            clauses.append("start < ?")
            params.append(to_iso(query.starts_before))
        if query.holding_only:
            clauses.append("state IN (?, ?)")
            params += sorted(state.value for state in HOLDING_STATES)
        async with self._db.read() as connection:
            return await _RESERVATIONS.page(
                connection,
                clauses,
                params,
                ("start", "reservation_id"),
                after,
                limit,
                reservation_page_key,
            )

    async def find_ended(self, before: datetime, limit: int) -> list[Reservation]:
        async with self._db.read() as connection:
            return await _RESERVATIONS.select(
                connection,
                'state = ? AND "end" <= ?',
                [ReservationState.BOOKED.value, to_iso(before), limit],
                'ORDER BY "end", reservation_id LIMIT ?',
            )

    async def find_advancing(self, after: datetime, limit: int) -> list[Reservation]:
        async with self._db.read() as connection:
            return await _RESERVATIONS.select(
                connection,
                "state = ? AND advance = 1 AND start > ?",
                [ReservationState.BOOKED.value, to_iso(after), limit],
                "ORDER BY start, reservation_id LIMIT ?",
            )

    async def find_at_risk(self, limit: int) -> list[Reservation]:
        async with self._db.read() as connection:
            return await _RESERVATIONS.select(
                connection,
                "state = ? AND at_risk_reason IS NOT NULL",
                [ReservationState.BOOKED.value, limit],
                "ORDER BY start, reservation_id LIMIT ?",
            )

    async def find_started(self, since: datetime, until: datetime, limit: int) -> list[Reservation]:
        async with self._db.read() as connection:
            return await _RESERVATIONS.select(
                connection,
                "state = ? AND start >= ? AND start <= ?",
                [ReservationState.BOOKED.value, to_iso(since), to_iso(until), limit],
                "ORDER BY start, reservation_id LIMIT ?",
            )

    @staticmethod
    async def _check_quota(connection: aiosqlite.Connection, quota: QuotaCheck | None) -> None:
        """Inside the write transaction: what the user and the team hold cannot change
        before this booking commits."""
        if quota is None:
            return
        span = quota.span
        held: dict[QuotaKind, list[BookedSlot]] = {}
        for kind, column, value in (
            (QuotaKind.USER, "user_id", quota.user_id),
            (QuotaKind.TEAM, "team", quota.team),
        ):
            if value is None:
                continue
            found = await _RESERVATIONS.select(
                connection,
                f'{column} = ? AND state IN (?, ?) AND start < ? AND start >= ? AND "end" > ?',
                [
                    value,
                    *sorted(state.value for state in HOLDING_STATES),
                    to_iso(span.end),
                    to_iso(span.start - LONGEST_WINDOW),
                    to_iso(span.start),
                ],
            )
            held[kind] = [reservation.slot for reservation in found]
        quota.check(held)

    @staticmethod
    async def _check_bookable(connection: aiosqlite.Connection, bench_id: str) -> None:
        rows = list(
            await connection.execute_fetchall(
                "SELECT bench_id FROM benches WHERE bench_id = ? AND admin_state = ?",
                (bench_id, AdminState.ACTIVE.value),
            )
        )
        if not rows:
            raise BenchNotBookable(await BENCHES.read(connection, bench_id))

    async def find_unannounced(self, before: datetime, limit: int) -> list[Reservation]:
        at = to_iso(before)
        booked = ReservationState.BOOKED.value
        async with self._db.read() as connection:
            found = await _RESERVATIONS.select(
                connection,
                "reservation_id IN (SELECT reservation_id FROM reservations"
                " WHERE state = ? AND announced = 0 AND start <= ?"
                " UNION SELECT reservation_id FROM reservations"
                ' WHERE state = ? AND announced = 1 AND "end" <= ?)',
                [booked, at, booked, at],
            )
        found.sort(key=lambda r: (r.start if r.announced == 0 else r.end, r.reservation_id))
        return found[:limit]

    async def flag(
        self, current: Reservation, at_risk: AtRisk | None, events: Sequence[DomainEvent]
    ) -> None:
        was = current.at_risk
        async with self._db.write() as connection:
            cursor = await connection.execute(
                "UPDATE reservations SET at_risk_reason = ?, at_risk_since = ?"
                " WHERE reservation_id = ? AND version = ? AND announced = ?"
                " AND at_risk_reason IS ? AND at_risk_since IS ?",
                (
                    None if at_risk is None else at_risk.reason,
                    None if at_risk is None else to_iso(at_risk.since),
                    current.reservation_id,
                    current.version,
                    current.announced,
                    None if was is None else was.reason,
                    None if was is None else to_iso(was.since),
                ),
            )
            if cursor.rowcount == 0:
                stored = await _RESERVATIONS.read(connection, current.reservation_id)
                if stored is None:
                    raise ItemNotFound(current.reservation_id)
                raise VersionMismatch(stored)
            await self._db.insert_events(connection, list(events))

    async def announce(
        self, current: Reservation, announced: int, events: Sequence[DomainEvent]
    ) -> None:
        async with self._db.write() as connection:
            cursor = await connection.execute(
                "UPDATE reservations SET announced = ?"
                " WHERE reservation_id = ? AND version = ? AND announced = ?",
                (announced, current.reservation_id, current.version, current.announced),
            )
            if cursor.rowcount == 0:
                stored = await _RESERVATIONS.read(connection, current.reservation_id)
                if stored is None:
                    raise ItemNotFound(current.reservation_id)
                raise VersionMismatch(stored)
            await self._db.insert_events(connection, list(events))

    @staticmethod
    async def _check_free(connection: aiosqlite.Connection, reservation: Reservation) -> None:
        """Inside the write transaction, so no booking can slip in between check and insert."""
        overlapping = await _RESERVATIONS.select(
            connection,
            'bench_id = ? AND state IN (?, ?) AND start < ? AND start >= ? AND "end" > ?'
            " AND reservation_id != ?",
            [
                reservation.bench_id,
                *sorted(state.value for state in HOLDING_STATES),
                to_iso(reservation.end),
                to_iso(reservation.start - LONGEST_WINDOW),  # see find()
                to_iso(reservation.start),
                reservation.reservation_id,
            ],
            "ORDER BY start",
        )
        taken = [stored.slot for stored in overlapping]
        if taken:
            raise WindowTaken(taken)
