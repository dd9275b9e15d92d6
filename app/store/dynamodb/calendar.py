"""The BenchCalendar guard items of the reservations repository, as read and rewritten.

One item per bench and UTC day lists the booked windows touching that day, under a
version that every rewrite conditions on and increments. A booking reads the days it
touches (on one bench, or two when it moves to another) with what else it decides on
(the bench, a key, the reservation, its holders' ledgers) in one ``Snapshot``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from app.benches.domain import Bench
from app.reservations.domain import BookedSlot, Reservation, Window
from app.store.base import IdempotencyRecord
from app.store.dynamodb.calls import CONDITION_FAILED, TRANSACTION_CONFLICT, Reasons, reason_code
from app.store.dynamodb.codec import Action, Item, n, s
from app.store.dynamodb.ledgers import Ledger
from app.timeutil import from_iso, to_iso


def calendar_key(bench_id: str, day: date) -> Item:
    return {"bench_id": s(bench_id), "day": s(day.isoformat())}


def encode_slot(slot: BookedSlot) -> Item:
    return {
        "M": {
            "reservation_id": s(slot.reservation_id),
            "start": s(to_iso(slot.window.start)),
            "end": s(to_iso(slot.window.end)),
        }
    }


def decode_slot(value: Item) -> BookedSlot:
    slot = value["M"]
    return BookedSlot(
        reservation_id=slot["reservation_id"]["S"],
        window=Window(from_iso(slot["start"]["S"]), from_iso(slot["end"]["S"])),
    )


# A calendar bucket: (bench_id, UTC day).
DayKey = tuple[str, date]


def day_keys(bench_id: str, window: Window) -> list[DayKey]:
    return [(bench_id, day) for day in window.days()]


@dataclass(slots=True)
class Day:
    """One calendar bucket as read; ``version`` None when it has no item yet."""

    bench_id: str
    day: date
    version: int | None = None
    slots: list[BookedSlot] = field(default_factory=list)

    @property
    def key(self) -> DayKey:
        return (self.bench_id, self.day)


@dataclass(slots=True)
class Snapshot:
    """What a booking read in one go: its calendar days, and what else it named."""

    days: dict[DayKey, Day]
    bench: Bench | None = None
    record: IdempotencyRecord | None = None
    reservation: Reservation | None = None
    ledgers: dict[str, Ledger] = field(default_factory=dict)

    def slots(self, days: Iterable[DayKey]) -> list[BookedSlot]:
        # A window spanning several days sits in each of their buckets: count it once.
        unique: dict[str, BookedSlot] = {}
        for day in days:
            for slot in self.days[day].slots:
                unique.setdefault(slot.reservation_id, slot)
        return list(unique.values())


def ordered(slots: Iterable[BookedSlot]) -> list[BookedSlot]:
    return sorted(slots, key=lambda slot: (slot.window.start, slot.reservation_id))


def lost_race(reasons: Reasons, guards: Iterable[int]) -> bool:
    """Someone else wrote one of our guard items (calendar days, ledgers), or held an item
    we named, meanwhile."""
    return any(reason_code(reasons, index) == CONDITION_FAILED for index in guards) or any(
        reason.get("Code") == TRANSACTION_CONFLICT for reason in reasons
    )


def decode_day(item: Item) -> Day:
    return Day(
        bench_id=item["bench_id"]["S"],
        day=date.fromisoformat(item["day"]["S"]),
        version=int(item["version"]["N"]),
        slots=[decode_slot(slot) for slot in item["slots"]["L"]],
    )


def write_day(table: str, bucket: Day, slots: list[BookedSlot]) -> Action:
    # Buckets are never deleted, even when empty: versions must only grow, or a
    # booking holding an old read could match a recreated bucket's version (ABA).
    item: Item = {
        **calendar_key(bucket.bench_id, bucket.day),
        "slots": {"L": [encode_slot(slot) for slot in ordered(slots)]},
        "version": n((bucket.version or 0) + 1),
    }
    put: dict[str, Any] = {"TableName": table, "Item": item}
    if bucket.version is None:
        put["ConditionExpression"] = "attribute_not_exists(bench_id)"
    else:
        put["ConditionExpression"] = "#version = :seen"
        put["ExpressionAttributeNames"] = {"#version": "version"}
        put["ExpressionAttributeValues"] = {":seen": n(bucket.version)}
    return {"Put": put}
