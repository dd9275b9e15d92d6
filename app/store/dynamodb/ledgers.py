"""The Ledgers guard items of the reservations repository: what each quota holder holds.

A quota limits the windows a user (or a team) holds at once and over seven days. No
condition can sum reservations, and the user index lags the table, so neither can decide
a quota; one item per holder can. A ledger (holder "user#<id>" or "team#<name>") lists the
windows of the holder's holding reservations (booked, completed) as [reservation_id,
start, end], under a version every rewrite conditions on and increments, as the calendar
days do. Every change of a reservation that changes what it holds (a booking, a cancel, a
release, a move, a team change) rewrites its holders' ledgers in its own transaction,
whether or not a quota is checked: a cancel gives the room back at once. A quota check
reads the ledgers it names with the calendar days, decides on them, and conditions its
transaction on their versions (a ConditionCheck where the write leaves one unchanged), so
two bookings of one holder cannot both squeeze under a limit: the second one's transaction
is cancelled, and it reads and decides again.

Ledgers only grow by what their holder books: a rewrite drops the windows that ended
LEDGER_KEPT before the write (no quota check can reach them: a new window starts now or
later, and its span goes back seven days from its end) unless one of the holder's windows
still running started before them (extending it checks what it overlaps). Ledgers are
never deleted, even when empty, so versions only grow (no ABA).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.quotas.domain import QuotaCheck, QuotaKind
from app.reservations.domain import BookedSlot, Reservation, Window
from app.store.dynamodb.codec import Action, Item, n, s
from app.timeutil import from_iso, to_iso

LEDGER_KEPT = timedelta(days=8)


def holder(kind: QuotaKind, name: str) -> str:
    return f"{kind.value}#{name}"


class HolderTurns:
    """Writers of one holder's ledgers take turns within the process.

    Every booking of a holder rewrites its ledger under a version condition, so a CI
    account booking many benches at once had all but one of its transactions cancelled,
    round after round of back-off, until some gave up (503). Here they queue instead and
    each reads the ledger its predecessor wrote. The conditions still decide: this only
    keeps the writers of one process from racing each other (replicas still race, and
    back off). Holders are locked in name order, so two writers never wait on each other.
    """

    def __init__(self) -> None:
        # Weak: a holder's lock lives while some writer holds or awaits it.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @asynccontextmanager
    async def taken(self, holders: Iterable[str]) -> AsyncIterator[None]:
        locks = []
        for name in sorted(set(holders)):
            lock = self._locks.get(name)
            if lock is None:
                lock = self._locks[name] = asyncio.Lock()
            locks.append(lock)
        async with AsyncExitStack() as stack:
            for lock in locks:
                await stack.enter_async_context(lock)
            yield


def ledger_key(name: str) -> Item:
    return {"holder": s(name)}


@dataclass(slots=True)
class Ledger:
    """One holder's ledger as read; ``version`` None when it has no item yet."""

    holder: str
    version: int | None = None
    slots: list[BookedSlot] = field(default_factory=list)


def decode_ledger(item: Item) -> Ledger:
    return Ledger(
        holder=item["holder"]["S"],
        version=int(item["version"]["N"]),
        slots=[
            BookedSlot(
                reservation_id=window["L"][0]["S"],
                window=Window(from_iso(window["L"][1]["S"]), from_iso(window["L"][2]["S"])),
            )
            for window in item["windows"]["L"]
        ],
    )


def holdings(reservation: Reservation) -> dict[str, BookedSlot]:
    """The ledgers that list ``reservation``, and its window in them: its user's and its
    team's while it holds its bench, none once it does not."""
    if not reservation.holds_bench:
        return {}
    held = {holder(QuotaKind.USER, reservation.user_id): reservation.slot}
    if reservation.team is not None:
        held[holder(QuotaKind.TEAM, reservation.team)] = reservation.slot
    return held


def checked_holders(quota: QuotaCheck | None) -> list[str]:
    """The ledgers a quota check reads: its user's, and its team's when it has one."""
    if quota is None:
        return []
    names = [holder(QuotaKind.USER, quota.user_id)]
    if quota.team is not None:
        names.append(holder(QuotaKind.TEAM, quota.team))
    return names


def held_for(quota: QuotaCheck, ledgers: Mapping[str, Ledger]) -> dict[QuotaKind, list[BookedSlot]]:
    """What ``quota.check`` takes: the windows of its holders' ledgers overlapping its span."""
    span = quota.span
    held: dict[QuotaKind, list[BookedSlot]] = {}
    for kind, name in ((QuotaKind.USER, quota.user_id), (QuotaKind.TEAM, quota.team)):
        if name is None:
            continue
        ledger = ledgers[holder(kind, name)]
        held[kind] = [slot for slot in ledger.slots if slot.window.overlaps(span)]
    return held


def _kept(slots: Iterable[BookedSlot], now: datetime) -> list[BookedSlot]:
    slots = list(slots)
    cutoff = min(
        [now - LEDGER_KEPT, *(slot.window.start for slot in slots if slot.window.end > now)]
    )
    kept = [slot for slot in slots if slot.window.end > cutoff]
    return sorted(kept, key=lambda slot: (slot.window.start, slot.reservation_id))


def _condition(ledger: Ledger) -> dict[str, Any]:
    if ledger.version is None:
        return {"ConditionExpression": "attribute_not_exists(holder)"}
    return {
        "ConditionExpression": "#version = :seen",
        "ExpressionAttributeNames": {"#version": "version"},
        "ExpressionAttributeValues": {":seen": n(ledger.version)},
    }


def _encode_slot(slot: BookedSlot) -> Item:
    window = slot.window
    return {"L": [s(slot.reservation_id), s(to_iso(window.start)), s(to_iso(window.end))]}


def ledger_actions(
    table: str,
    ledgers: Mapping[str, Ledger],
    reservation_id: str,
    before: Mapping[str, BookedSlot],
    after: Mapping[str, BookedSlot],
    checked: Iterable[str],
    now: datetime,
) -> list[Action]:
    """The transaction's actions on the ledgers: those where the reservation's window
    changes (``before`` -> ``after``, by holder) are rewritten, pruned as of ``now``; those
    a quota check read and the write leaves as they are get a ConditionCheck."""
    actions: list[Action] = []
    for name in sorted({*before, *after, *checked}):
        ledger = ledgers[name]
        if before.get(name) == after.get(name):
            if name in checked:
                actions.append(
                    {
                        "ConditionCheck": {
                            "TableName": table,
                            "Key": ledger_key(name),
                            **_condition(ledger),
                        }
                    }
                )
            continue
        slots = [slot for slot in ledger.slots if slot.reservation_id != reservation_id]
        if name in after:
            slots.append(after[name])
        item: Item = {
            **ledger_key(name),
            "windows": {"L": [_encode_slot(slot) for slot in _kept(slots, now)]},
            "version": n((ledger.version or 0) + 1),
        }
        actions.append({"Put": {"TableName": table, "Item": item, **_condition(ledger)}})
    return actions
