"""Reservation items in DynamoDB's attribute-value format, and the sparse index attributes
they carry.

Optional fields are absent rather than NULL (the item stays small), so an item written
before a field existed reads as that field's default. Three sparse indexes follow the
state: ``open_pk`` while booked (the ended and the started reservations), ``announce_pk``
while a milestone is left to announce, ``advance_pk`` while booked to advance.
"""

from __future__ import annotations

from datetime import datetime

from app.reservations.domain import (
    DEFAULT_PRIORITY,
    AtRisk,
    Reservation,
    ReservationKind,
    ReservationState,
)
from app.store.dynamodb.codec import Action, Item, n, s
from app.store.dynamodb.tables import (
    ADVANCE_PK,
    ADVANCE_PK_ATTRIBUTE,
    ANNOUNCE_AT,
    ANNOUNCE_PK,
    ANNOUNCE_PK_ATTRIBUTE,
    AT_RISK_PK,
    AT_RISK_PK_ATTRIBUTE,
    OPEN_RESERVATION_PK,
)
from app.timeutil import from_iso, to_iso


def reservation_key(reservation_id: str) -> Item:
    return {"reservation_id": s(reservation_id)}


def _put_time(item: Item, name: str, moment: datetime | None) -> None:
    if moment is not None:
        item[name] = s(to_iso(moment))


def _time(item: Item, name: str) -> datetime | None:
    value = item.get(name)
    return None if value is None else from_iso(value["S"])


def encode_reservation(reservation: Reservation) -> Item:
    item: Item = {
        **reservation_key(reservation.reservation_id),
        "bench_id": s(reservation.bench_id),
        "user_id": s(reservation.user_id),
        "start": s(to_iso(reservation.start)),
        "end": s(to_iso(reservation.end)),
        "purpose": s(reservation.purpose),
        "state": s(reservation.state.value),
        "version": n(reservation.version),
        "created_at": s(to_iso(reservation.created_at)),
        "updated_at": s(to_iso(reservation.updated_at)),
        "announced": n(reservation.announced),
        "advance": {"BOOL": reservation.advance},
        "priority": n(reservation.priority),
    }
    _put_time(item, "not_before", reservation.not_before)
    if reservation.capabilities:  # a string set cannot be empty
        item["capabilities"] = {"SS": sorted(reservation.capabilities)}
    if reservation.team is not None:
        item["team"] = s(reservation.team)
    _put_time(item, "checked_in_at", reservation.checked_in_at)
    _put_time(item, "idle_warned_at", reservation.idle_warned_at)
    if reservation.allow_swap:
        item["allow_swap"] = {"BOOL": True}
    if reservation.kind is not ReservationKind.BOOKING:
        item["kind"] = s(reservation.kind.value)
    if reservation.at_risk is not None:
        item["at_risk_reason"] = s(reservation.at_risk.reason)
        item["at_risk_since"] = s(to_iso(reservation.at_risk.since))
        if reservation.state is ReservationState.BOOKED:
            item[AT_RISK_PK_ATTRIBUTE] = s(AT_RISK_PK)
    if reservation.state is ReservationState.BOOKED:
        item["open_pk"] = s(OPEN_RESERVATION_PK)
        if reservation.advance:
            item[ADVANCE_PK_ATTRIBUTE] = s(ADVANCE_PK)
    item.update(announce_attributes(reservation, reservation.announced))
    return item


def decode_reservation(item: Item) -> Reservation:
    team = item.get("team")
    return Reservation(
        reservation_id=item["reservation_id"]["S"],
        bench_id=item["bench_id"]["S"],
        user_id=item["user_id"]["S"],
        start=from_iso(item["start"]["S"]),
        end=from_iso(item["end"]["S"]),
        purpose=item["purpose"]["S"],
        state=ReservationState(item["state"]["S"]),
        version=int(item["version"]["N"]),
        created_at=from_iso(item["created_at"]["S"]),
        updated_at=from_iso(item["updated_at"]["S"]),
        # Items written before milestones were announced have announced none; before
        # scheduling, they neither advance nor carry a team, a check-in or a warning.
        announced=int(item.get("announced", {}).get("N", 0)),
        advance=bool(item.get("advance", {}).get("BOOL", False)),
        priority=int(item.get("priority", {}).get("N", DEFAULT_PRIORITY)),
        not_before=_time(item, "not_before"),
        capabilities=frozenset(item.get("capabilities", {}).get("SS", ())),
        team=None if team is None else str(team["S"]),
        checked_in_at=_time(item, "checked_in_at"),
        idle_warned_at=_time(item, "idle_warned_at"),
        allow_swap=bool(item.get("allow_swap", {}).get("BOOL", False)),
        at_risk=_at_risk(item),
        kind=ReservationKind(item.get("kind", {}).get("S", ReservationKind.BOOKING.value)),
    )


def _at_risk(item: Item) -> AtRisk | None:
    since = _time(item, "at_risk_since")
    if since is None:
        return None
    return AtRisk(item["at_risk_reason"]["S"], since)


def announce_at(reservation: Reservation, announced: int) -> datetime | None:
    """When the next milestone of ``reservation`` falls due once ``announced`` are: its
    start (nothing announced yet), its end (started); None when none is left to announce
    (both announced, or the reservation no longer booked)."""
    if reservation.state is not ReservationState.BOOKED or announced >= 2:
        return None
    return reservation.start if announced == 0 else reservation.end


def announce_attributes(reservation: Reservation, announced: int) -> Item:
    """The sparse announce index's attributes: none when nothing is left to announce."""
    due = announce_at(reservation, announced)
    if due is None:
        return {}
    return {ANNOUNCE_PK_ATTRIBUTE: s(ANNOUNCE_PK), ANNOUNCE_AT: s(to_iso(due))}


def announced_is(announced: int) -> tuple[str, Item]:
    """The condition "the stored announced count is ``announced``" (``#announced``) and
    its value; items written before milestones were counted have none, which reads as 0."""
    if announced == 0:
        return "(attribute_not_exists(#announced) OR #announced = :was)", {":was": n(0)}
    return "#announced = :was", {":was": n(announced)}


def at_risk_is(at_risk: AtRisk | None) -> tuple[str, Item]:
    """The condition "the stored at-risk mark is ``at_risk``" (names ``#risk``, ``#risk_since``)."""
    if at_risk is None:
        return "attribute_not_exists(#risk) AND attribute_not_exists(#risk_since)", {}
    return "#risk = :risk_was AND #risk_since = :risk_since_was", {
        ":risk_was": s(at_risk.reason),
        ":risk_since_was": s(to_iso(at_risk.since)),
    }


RISK_NAMES = {"#risk": "at_risk_reason", "#risk_since": "at_risk_since"}


def replace_reservation(table: str, current: Reservation, updated: Reservation) -> Action:
    """Put ``updated`` whole, if the stored item is still at ``current``'s version and
    announced count: a milestone announced since ``current`` was read moved no version,
    but this copy would undo it. The sparse index attributes follow from the new item."""
    condition, seen = announced_is(current.announced)
    risk, risk_seen = at_risk_is(current.at_risk)
    return {
        "Put": {
            "TableName": table,
            "Item": encode_reservation(updated),
            # A missing item fails ``version = :seen`` too: no Item back means 404.
            "ConditionExpression": f"#version = :seen AND {condition} AND {risk}",
            "ExpressionAttributeNames": {
                "#version": "version",
                "#announced": "announced",
                **RISK_NAMES,
            },
            "ExpressionAttributeValues": {":seen": n(current.version), **seen, **risk_seen},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }
