"""Scheduling from the command line: advancing bookings (``book --advance``), ``checkin``,
``move --extend`` on the service's extend, and how their refusals read (a 409 that says
who holds the time after or where the earliest window is; a 403 over quota)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from bench_client import Client
from bench_client.cli.context import open_client, settings_of
from bench_client.cli.output import Output, text
from bench_client.cli.timeparse import format_duration
from bench_client.errors import ApiError, Conflict, QuotaExceeded
from bench_client.models import ReservationOut

__all__ = [
    "ESTIMATE_NOTE",
    "book_advancing",
    "checkin",
    "conflict_lines",
    "extend_by",
    "problem_lines",
    "show_advancing",
]

ESTIMATE_NOTE = "estimate: moves up if an earlier window frees"


# --- book --advance ------------------------------------------------------------------------


def book_advancing(
    client: Client,
    duration: timedelta,
    *,
    bench_id: str | None,
    capabilities: Sequence[str],
    purpose: str,
    not_before: datetime | None,
    latest_start: datetime | None,
    priority: int | None,
) -> ReservationOut:
    """One request: the service books the earliest free window at once and moves the
    booking up by itself later (a 409 names the earliest window when none starts by
    ``latest_start``)."""
    return client.create_reservation(
        duration=duration,
        bench_id=bench_id,
        capabilities=() if bench_id else capabilities,
        purpose=purpose,
        advance=True,
        not_before=not_before,
        latest_start=latest_start,
        priority=priority,
    )


def show_advancing(out: Output, reservation: ReservationOut) -> None:
    if out.json:
        out.emit_json(reservation)
        return
    begun = reservation.start <= datetime.now(UTC)
    note = "free now: it has begun" if begun else ESTIMATE_NOTE
    mark = "" if begun else " (estimate)"
    out.say(f"booked {reservation.bench_id} from {out.when(reservation.start)} ({note})")
    out.fields(
        [
            ("reservation", reservation.reservation_id),
            ("bench", reservation.bench_id),
            ("start", out.when(reservation.start) + mark),
            ("end", out.when(reservation.end) + mark),
            ("length", format_duration(reservation.end - reservation.start)),
            ("not before", out.when(reservation.not_before) if reservation.not_before else "now"),
            ("priority", reservation.priority),
            ("status", reservation.status),
            ("purpose", reservation.purpose or "-"),
        ]
    )
    if not begun:
        out.say("follow it: benchctl watch --mine --type reservation.advanced")


# --- extend ----------------------------------------------------------------------------


def extend_by(client: Client, reservation_id: str, by: timedelta) -> ReservationOut:
    """The service's extend, conditional on the version read (so it is retried safely,
    and read again if someone changed the reservation meanwhile)."""
    return client.update(
        lambda: client.get_reservation(reservation_id),
        lambda current: client.extend_reservation(
            current.reservation_id, by, version=current.version
        ),
    )


# --- checkin -----------------------------------------------------------------------------


def checkin(
    ctx: typer.Context,
    reservation_id: Annotated[str, typer.Argument(metavar="RESERVATION")],
) -> None:
    """Say you are at the bench (hands-on work, no run on it), so that an active reservation
    is not released as a no-show."""
    settings = settings_of(ctx)
    out = settings.out
    with open_client(settings) as client:
        done = client.checkin_reservation(reservation_id)
    if out.json:
        out.emit_json(done)
        return
    out.say(
        f"checked in to reservation {done.reservation_id} on {done.bench_id} "
        f"at {out.when(done.checked_in_at)} (until {out.when(done.end)})"
    )


# --- refusals ----------------------------------------------------------------------------


def problem_lines(error: ApiError, when: Callable[[object], str]) -> tuple[str, list[str]] | None:
    """How the scheduling problems read, or None for the generic lines. ``when`` shows an
    instant in the user's zone."""
    if isinstance(error, QuotaExceeded):
        more = [] if error.frees_at is None else [f"room frees on {when(error.frees_at)}"]
        return " ".join(error.detail.split()), [*more, "see: benchctl usage, benchctl quota show"]
    return None


def conflict_lines(error: Conflict, when: Callable[[object], str]) -> list[str]:
    """What a 409 adds: the reservations in the way (and whose, where the service says),
    and the earliest window an advancing booking could have."""
    lines = []
    for c in error.conflicts:
        holder = error.holders.get(c.reservation_id)
        whose = f" of {holder}" if holder else ""
        lines.append(
            f"in the way: reservation {c.reservation_id}{whose} ({when(c.start)} to {when(c.end)})"
        )
    if error.earliest_start is not None:
        lines.append(
            f"earliest free: {text(error.earliest_bench_id)} from {when(error.earliest_start)}"
        )
    return lines
