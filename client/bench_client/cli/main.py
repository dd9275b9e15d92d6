"""benchctl: the Bench Orchestrator on the command line, for engineers and CI pipelines.

Exit status: 0 success (a run: passed), 1 a run failed, 2 a run errored or timed out (the
service's timeout or our --timeout), 3 a run was cancelled, 4 a usage or server error;
130/143 when interrupted by SIGINT/SIGTERM (after giving back what it booked).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from bench_client import Client
from bench_client.cli.booking import NoWindow, book_earliest
from bench_client.cli.context import ClickException, Settings, UsageError, usage_error
from bench_client.cli.context import open_client as _client
from bench_client.cli.context import read_token as _read_token
from bench_client.cli.context import settings_of as _settings
from bench_client.cli.output import Output, jsonable, text
from bench_client.cli.profiles import save_profile
from bench_client.cli.quotas import quota_app, usage
from bench_client.cli.runs import (
    EXIT_CODES,
    EXIT_TIMED_OUT,
    EXIT_USAGE,
    Follower,
    parse_task,
    verdict_code,
)
from bench_client.cli.scheduling import (
    book_advancing,
    checkin,
    conflict_lines,
    extend_by,
    problem_lines,
    show_advancing,
)
from bench_client.cli.timeparse import format_duration, parse_duration, parse_when
from bench_client.cli.watch import watch
from bench_client.config import ConfigError
from bench_client.errors import (
    ApiError,
    Conflict,
    InvalidTransition,
    TransportFailure,
    Unauthorized,
    ValidationFailed,
)
from bench_client.models import ExecutionOut, FreeWindowOut, ReservationOut

__all__ = ["app", "main"]

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
START_SLACK = timedelta(seconds=60)  # the service's own allowance for clock skew
RUN_GRACE = timedelta(seconds=60)  # how long past its reservation a run is followed
CALENDAR_AHEAD = timedelta(days=7)
REPLAY_PATIENCE_S = 5.0
HOLDING = ("confirmed", "active")


class Format(StrEnum):
    table = "table"
    json = "json"


# What main() reports errors with; the global options replace it.
_output = Output("table")

app = typer.Typer(
    name="benchctl",
    help="Book test benches, run commits on them and follow runs to a verdict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
bench_app = typer.Typer(help="One bench: what it is and who holds it; its history.")
app.add_typer(bench_app, name="bench")


@app.callback()
def _global_options(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="The service (else BENCH_URL, else the profile).", metavar="URL"
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="A file holding the bearer token (else BENCH_TOKEN[_FILE], else the profile).",
            metavar="FILE",
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option("--profile", help="A profile of the config file (see login).", metavar="NAME"),
    ] = None,
    output: Annotated[
        Format,
        typer.Option("-o", "--output", help="table for people, json (the API's) for scripts."),
    ] = Format.table,
) -> None:
    global _output
    _output = Output(output.value)
    ctx.obj = Settings(url=url, token_file=token_file, profile=profile, out=_output)


def _now() -> datetime:
    return datetime.now(UTC)


def _when(value: str, option: str) -> datetime:
    try:
        return parse_when(value, now=_now())
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from exc


def _duration(value: str, option: str, *, allow_zero: bool = False) -> timedelta:
    if allow_zero and value.strip().upper() in ("0", "0S", "0M", "0H", "PT0S", "PT0M"):
        return timedelta(0)
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from exc


def _seconds(value: str, option: str) -> int:
    if value.strip().isdigit():
        return int(value.strip())
    return int(_duration(value, option).total_seconds())


def _usage(ctx: typer.Context, message: str) -> Exception:
    return usage_error(ctx, message)


# --- login -------------------------------------------------------------------------------


@app.command()
def login(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option("--url", help="The service.", metavar="URL")] = None,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="The file holding your token.", metavar="FILE"),
    ] = None,
    profile: Annotated[
        str | None, typer.Option("--profile", help="Its name (default: default).", metavar="NAME")
    ] = None,
    make_default: Annotated[
        bool,
        typer.Option("--default/--no-default", help="Make it the profile used without --profile."),
    ] = True,
) -> None:
    """Check a token against the service and save them as a profile in the config file."""
    settings = _settings(ctx)
    url = url or settings.url
    token_path = token_file or settings.token_file
    name = profile or settings.profile or "default"
    if not url or token_path is None:
        raise _usage(ctx, "login needs --url URL and --token-file FILE")
    token_path = token_path.expanduser().resolve()
    token = _read_token(token_path)
    with Client(url=url, token=token) as client:
        next(iter(client.list_benches()), None)  # one call: 401 when the token is not good
    written = save_profile(
        name, url=url.rstrip("/"), token_file=str(token_path), make_default=make_default
    )
    out = settings.out
    if out.json:
        out.emit_json({"profile": name, "url": url, "config": str(written)})
    else:
        out.say(f"logged in: profile {name!r} ({url}) saved in {written}")


# --- benches -----------------------------------------------------------------------------


@app.command()
def benches(
    ctx: typer.Context,
    capability: Annotated[
        list[str] | None,
        typer.Option("--capability", "-c", help="Required capability (repeat for several)."),
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="online or offline.", metavar="STATUS")
    ] = None,
    bench_type: Annotated[str | None, typer.Option("--type", help="Bench type.")] = None,
    admin_state: Annotated[
        str | None, typer.Option("--admin-state", help="active, maintenance, retired, ...")
    ] = None,
) -> None:
    """List benches, filtered by capabilities, liveness, type or state."""
    settings = _settings(ctx)
    out = settings.out
    with _client(settings) as client:
        found = list(
            client.list_benches(
                capabilities=capability or (),
                type=bench_type,
                admin_state=admin_state,
                status=status,
            )
        )
    if out.json:
        out.emit_json(found)
        return
    out.table(
        ["BENCH", "NAME", "TYPE", "STATUS", "STATE", "CAPABILITIES", "LAST HEARTBEAT"],
        (
            [
                bench.bench_id,
                bench.name,
                bench.type,
                bench.status,
                bench.admin_state,
                ", ".join(bench.capabilities) or "-",
                out.when(bench.last_heartbeat_at),
            ]
            for bench in found
        ),
        empty="no bench matches",
    )


@bench_app.command("show")
def bench_show(
    ctx: typer.Context, bench_id: Annotated[str, typer.Argument(metavar="BENCH")]
) -> None:
    """A bench: liveness, who holds it now, its next bookings."""
    settings = _settings(ctx)
    out = settings.out
    now = _now()
    with _client(settings) as client:
        bench = client.get_bench(bench_id)
        calendar = [
            reservation
            for reservation in client.bench_calendar(bench_id, start=now, end=now + CALENDAR_AHEAD)
            if text(reservation.status) in HOLDING
        ]
    current = [r for r in calendar if r.start <= now < r.end]
    upcoming = [r for r in calendar if r.start > now][:10]
    if out.json:
        out.emit_json(
            {"bench": bench, "current": current[0] if current else None, "upcoming": upcoming}
        )
        return
    heartbeat = (
        f"last heartbeat {out.when(bench.last_heartbeat_at)}, agent {bench.agent_version}"
        if bench.last_heartbeat_at
        else "never heard from"
    )
    holder = (
        f"{current[0].user_id} until {out.when(current[0].end)} "
        f"(reservation {current[0].reservation_id})"
        if current
        else "nobody"
    )
    health = bench.health
    quarantine = bench.quarantine
    out.fields(
        [
            ("bench", f"{bench.bench_id} ({bench.name})"),
            ("type", bench.type),
            ("state", text(bench.admin_state)),
            *(
                [
                    (
                        "quarantine",
                        f"{quarantine.reason} by {quarantine.by} since"
                        f" {out.when(quarantine.since)}",
                    )
                ]
                if quarantine is not None
                else []
            ),
            ("liveness", f"{text(bench.status)} ({heartbeat})"),
            (
                "health",
                f"{text(health.status)} x{health.consecutive}: {health.message or '-'}"
                f" ({out.when(health.at)})"
                if health is not None
                else "no report",
            ),
            *(
                (
                    "maintenance",
                    f"{out.when(window.start)} - {out.when(window.end)}: {window.reason}",
                )
                for window in bench.maintenance or []
            ),
            ("capabilities", ", ".join(bench.capabilities) or "-"),
            ("labels", ", ".join(f"{k}={v}" for k, v in bench.labels.items()) or "-"),
            ("held by", holder),
        ]
    )
    out.say("next bookings:" if upcoming else "next bookings: none in the next 7 days")
    if upcoming:
        _reservation_table(out, upcoming, empty="")


@bench_app.command("state")
def bench_state(
    ctx: typer.Context,
    bench_id: Annotated[str, typer.Argument(metavar="BENCH")],
    state: Annotated[
        str, typer.Argument(metavar="STATE", help="active, maintenance or quarantined")
    ],
) -> None:
    """Set a bench's admin state (admins): `active` clears a quarantine."""
    settings = _settings(ctx)
    out = settings.out
    with _client(settings) as client:
        bench = client.get_bench(bench_id)
        changed = client.update_bench(bench, admin_state=state)
    if out.json:
        out.emit_json(changed)
        return
    out.say(f"bench {changed.bench_id}: {text(bench.admin_state)} -> {text(changed.admin_state)}")


@bench_app.command("history")
def bench_history(
    ctx: typer.Context, bench_id: Annotated[str, typer.Argument(metavar="BENCH")]
) -> None:
    """Every configuration change of a bench: when, who, what."""
    settings = _settings(ctx)
    out = settings.out
    with _client(settings) as client:
        entries = list(client.bench_history(bench_id))
    if out.json:
        out.emit_json(entries)
        return
    out.table(
        ["AT", "ACTOR", "ACTION", "VERSION", "CHANGES"],
        ([out.when(e.at), e.actor, e.action, e.version, _compact(e.changes)] for e in entries),
        empty="no history",
    )


def _compact(changes: dict[str, Any], limit: int = 100) -> str:
    rendered = json.dumps(jsonable(changes), separators=(",", ":"), ensure_ascii=False)
    return rendered if len(rendered) <= limit else rendered[: limit - 1] + "…"


# --- reservations ------------------------------------------------------------------------


def _reservation_table(out: Output, items: Sequence[ReservationOut], *, empty: str) -> None:
    out.table(
        ["RESERVATION", "BENCH", "START", "END", "STATUS", "USER", "PURPOSE"],
        (
            [
                r.reservation_id,
                r.bench_id,
                out.when(r.start),
                out.when(r.end),
                f"{text(r.status)} (at risk: {r.at_risk.reason})" if r.at_risk else r.status,
                r.user_id,
                r.purpose or "-",
            ]
            for r in items
        ),
        empty=empty,
    )


def _show_reservation(out: Output, reservation: ReservationOut, headline: str) -> None:
    if out.json:
        out.emit_json(reservation)
        return
    out.say(headline)
    out.fields(
        [
            ("reservation", reservation.reservation_id),
            ("bench", reservation.bench_id),
            ("start", out.when(reservation.start)),
            ("end", out.when(reservation.end)),
            ("length", format_duration(reservation.end - reservation.start)),
            ("status", reservation.status),
            ("purpose", reservation.purpose or "-"),
        ]
    )


@app.command()
def book(
    ctx: typer.Context,
    for_: Annotated[
        str, typer.Option("--for", help="How long: 2h, 90m, 1h30m, PT2H.", metavar="DURATION")
    ],
    bench_id: Annotated[
        str | None, typer.Argument(metavar="[BENCH]", help="The bench (or use --capability).")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="Start: 'tomorrow 09:00', 'today 14:30', now, 'in 2h', '2026-12-03 09:00' "
            "(local time) or ISO 8601 with an offset. With --earliest: search from then.",
            metavar="WHEN",
        ),
    ] = None,
    capability: Annotated[
        list[str] | None,
        typer.Option("--capability", "-c", help="Any bench with these (repeat for several)."),
    ] = None,
    earliest: Annotated[
        bool, typer.Option("--earliest", help="Book the earliest free window.")
    ] = False,
    purpose: Annotated[str, typer.Option("--purpose", help="What it is for.")] = "",
    advance: Annotated[
        bool,
        typer.Option(
            "--advance",
            help="Book the earliest free window now; the service moves it up by itself "
            "whenever an earlier one frees.",
        ),
    ] = False,
    priority: Annotated[
        int | None,
        typer.Option(
            "--priority",
            min=0,
            max=100,
            help="With --advance: who moves up first (users up to 50; CI and admins 100).",
        ),
    ] = None,
    not_before: Annotated[
        str | None,
        typer.Option("--not-before", help="With --advance: never start before.", metavar="WHEN"),
    ] = None,
    latest_start: Annotated[
        str | None,
        typer.Option(
            "--latest-start",
            help="With --advance: refuse (naming the earliest window) unless it starts by then.",
            metavar="WHEN",
        ),
    ] = None,
) -> None:
    """Book a bench (or any bench with some capabilities) at a time, at the earliest, or
    at the earliest and moving up (--advance)."""
    settings = _settings(ctx)
    out = settings.out
    length = _duration(for_, "--for")
    if bench_id is None and not capability:
        raise _usage(ctx, "name a BENCH or give --capability")
    if advance and (earliest or at is not None):
        raise _usage(ctx, "--advance finds the window itself: drop --at/--earliest (--not-before)")
    if not advance and (priority is not None or not_before or latest_start):
        raise _usage(ctx, "--priority, --not-before and --latest-start go with --advance")
    start = _when(at, "--at") if at is not None else None
    with _client(settings) as client:
        if advance:
            booked = book_advancing(
                client,
                length,
                bench_id=bench_id,
                capabilities=capability or (),
                purpose=purpose,
                not_before=_when(not_before, "--not-before") if not_before else None,
                latest_start=_when(latest_start, "--latest-start") if latest_start else None,
                priority=priority,
            )
            show_advancing(out, booked)
            return
        if earliest:

            def lost(window: FreeWindowOut, conflict: Conflict) -> None:
                out.say(
                    f"{window.bench_id} at {out.when(window.start)} was just taken; "
                    "trying the next free window"
                )

            try:
                booked = book_earliest(
                    client,
                    length,
                    capabilities=capability or (),
                    bench_id=bench_id,
                    purpose=purpose,
                    search_from=start,
                    on_lost=lost,
                )
            except NoWindow as none:
                raise _Failure(str(none)) from none
        else:
            if start is None:
                raise _usage(ctx, "give --at WHEN, or --earliest")
            booked = client.create_reservation(
                start=start,
                end=start + length,
                bench_id=bench_id,
                capabilities=() if bench_id else (capability or ()),
                purpose=purpose,
            )
    _show_reservation(out, booked, f"booked {booked.bench_id}")


@app.command()
def free(
    ctx: typer.Context,
    for_: Annotated[
        str, typer.Option("--for", help="How long: 2h, 90m, PT2H.", metavar="DURATION")
    ],
    capability: Annotated[
        list[str] | None, typer.Option("--capability", "-c", help="Required capability.")
    ] = None,
    bench_id: Annotated[str | None, typer.Option("--bench", help="Only this bench.")] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="Search from (default now).", metavar="WHEN")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Search until (default 7 days on).", metavar="WHEN")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 10,
) -> None:
    """The earliest free windows at least that long."""
    settings = _settings(ctx)
    out = settings.out
    length = _duration(for_, "--for")
    start = _when(from_, "--from") if from_ else None
    end = _when(to, "--to") if to else None
    with _client(settings) as client:
        windows = client.find_availability(
            length,
            capabilities=capability or (),
            bench_id=bench_id,
            start=start,
            end=end,
            limit=limit,
        )
    if out.json:
        out.emit_json(windows)
        return
    out.table(
        ["BENCH", "FREE FROM", "UNTIL", "FOR"],
        (
            [w.bench_id, out.when(w.start), out.when(w.end), format_duration(w.end - w.start)]
            for w in windows
        ),
        empty="no free window that long",
    )


@app.command()
def reservations(
    ctx: typer.Context,
    all_: Annotated[
        bool,
        typer.Option("--all", help="Also finished, cancelled and released ones."),
    ] = False,
    bench_id: Annotated[
        str | None, typer.Option("--bench", help="A bench's (everyone's) instead of yours.")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="Someone else's.")] = None,
) -> None:
    """Your reservations that are upcoming or active (--all: every one)."""
    settings = _settings(ctx)
    out = settings.out
    with _client(settings) as client:
        found = list(
            client.list_reservations(
                user_id=user, bench_id=bench_id, start=None if all_ else _now()
            )
        )
    if not all_:
        found = [r for r in found if text(r.status) in HOLDING]
    found.sort(key=lambda r: (r.start, r.reservation_id))
    if out.json:
        out.emit_json(found)
        return
    _reservation_table(out, found, empty="no reservations")


@app.command()
def move(
    ctx: typer.Context,
    reservation_id: Annotated[str, typer.Argument(metavar="RESERVATION")],
    to: Annotated[
        str | None,
        typer.Option("--to", help="New start (keeps the length).", metavar="WHEN"),
    ] = None,
    extend: Annotated[
        str | None, typer.Option("--extend", help="Add to the end: 30m.", metavar="DURATION")
    ] = None,
    for_: Annotated[
        str | None, typer.Option("--for", help="New length.", metavar="DURATION")
    ] = None,
) -> None:
    """Move a reservation (--to), or make it longer (--extend) or another length (--for).

    --extend alone extends it in place, or says who holds the time after."""
    settings = _settings(ctx)
    if to is None and extend is None and for_ is None:
        raise _usage(ctx, "give --to WHEN, --extend DURATION or --for DURATION")
    start = _when(to, "--to") if to is not None else None
    extra = _duration(extend, "--extend") if extend is not None else timedelta(0)
    length = _duration(for_, "--for") if for_ is not None else None
    with _client(settings) as client:
        if start is None and length is None:
            longer = extend_by(client, reservation_id, extra)
            headline = f"extended {longer.reservation_id} to {settings.out.when(longer.end)}"
            _show_reservation(settings.out, longer, headline)
            return

        def change(current: ReservationOut) -> ReservationOut:
            new_start = start or current.start
            new_end = new_start + (length or (current.end - current.start)) + extra
            return client.update_reservation(
                current,
                start=new_start if new_start != current.start else None,
                end=new_end,
            )

        moved = client.update(lambda: client.get_reservation(reservation_id), change)
    _show_reservation(settings.out, moved, f"moved {moved.reservation_id}")


@app.command()
def cancel(
    ctx: typer.Context, reservation_id: Annotated[str, typer.Argument(metavar="RESERVATION")]
) -> None:
    """Cancel a reservation (before it ends)."""
    settings = _settings(ctx)
    with _client(settings) as client:
        done = client.cancel_reservation(reservation_id)
    _show_reservation(settings.out, done, f"reservation {done.reservation_id}: {text(done.status)}")


@app.command()
def release(
    ctx: typer.Context, reservation_id: Annotated[str, typer.Argument(metavar="RESERVATION")]
) -> None:
    """End an active reservation now, freeing the bench."""
    settings = _settings(ctx)
    with _client(settings) as client:
        done = client.release_reservation(reservation_id)
    _show_reservation(settings.out, done, f"reservation {done.reservation_id}: {text(done.status)}")


# --- runs --------------------------------------------------------------------------------


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that ``finally`` gives the bench back."""


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    def raise_terminated(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _shielded() -> Iterator[None]:
    """No interruption while cleaning up (a second Ctrl-C must not strand a reservation)."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _best_effort(out: Output, what: str, action: Callable[[], object]) -> None:
    try:
        action()
    except (ApiError, TransportFailure) as exc:
        out.error(f"could not {what}: {exc}")


def _give_back(client: Client, out: Output, reservation_id: str) -> None:
    """Cancel it if it has not begun, release it if it is active; nothing otherwise."""
    current = client.get_reservation(reservation_id)
    status = text(current.status)
    try:
        if status == "confirmed":
            current = client.cancel_reservation(reservation_id)
        elif status == "active":
            current = client.release_reservation(reservation_id)
    except InvalidTransition:  # it began or ended meanwhile
        current = client.get_reservation(reservation_id)
        if text(current.status) == "active":
            current = client.release_reservation(reservation_id)
    out.say(f"reservation {reservation_id}: {text(current.status)}")


def _wait_until(out: Output, reservation: ReservationOut) -> None:
    left = (reservation.start - _now()).total_seconds()
    if left <= 0:
        return
    what = f"reservation {reservation.reservation_id} on {reservation.bench_id}"
    with out.progress(f"waiting for {what} to start at {out.when(reservation.start)}") as wait:
        while (left := (reservation.start - _now()).total_seconds()) > 0:
            wait.update(
                f"waiting for {what} to start at {out.when(reservation.start)} "
                f"(in {format_duration(timedelta(seconds=left))})"
            )
            time.sleep(min(left, 1.0))


@app.command()
def run(
    ctx: typer.Context,
    commit: Annotated[str, typer.Option("--commit", help="The commit to run.", metavar="SHA")],
    task: Annotated[
        list[str],
        typer.Option(
            "--task",
            "-t",
            help="A task, in order: 'type' or 'type:key=value,key=value' (repeat).",
            metavar="TASK",
        ),
    ],
    reservation_id: Annotated[
        str | None,
        typer.Option("--reservation", "-r", help="Run on this reservation.", metavar="ID"),
    ] = None,
    capability: Annotated[
        list[str] | None,
        typer.Option("--capability", "-c", help="One step: book a bench with these."),
    ] = None,
    bench_id: Annotated[
        str | None, typer.Option("--bench", help="One step: book this bench.")
    ] = None,
    for_: Annotated[
        str | None,
        typer.Option("--for", help="One step: how long to book.", metavar="DURATION"),
    ] = None,
    max_wait: Annotated[
        str,
        typer.Option(
            "--max-wait", help="One step: how long the window may be away.", metavar="DURATION"
        ),
    ] = "0",
    task_timeout: Annotated[
        str | None,
        typer.Option("--task-timeout", help="Per task: seconds or 10m.", metavar="SECONDS"),
    ] = None,
    max_attempts: Annotated[
        int | None, typer.Option("--max-attempts", min=1, max=10, help="Per task.")
    ] = None,
    pipeline_url: Annotated[
        str | None,
        typer.Option("--pipeline-url", envvar="CI_PIPELINE_URL", help="Link back to the CI."),
    ] = None,
    purpose: Annotated[
        str | None, typer.Option("--purpose", help="One step: the booking's purpose.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the run to its verdict.")
    ] = False,
    timeout: Annotated[
        str | None,
        typer.Option("--timeout", help="Give up following after this long.", metavar="DURATION"),
    ] = None,
) -> None:
    """Run a commit's tasks on a reservation, or book, run and release in one step.

    With --wait the exit status is the verdict: 0 passed, 1 failed, 2 errored or timed out,
    3 cancelled (4: usage or server error)."""
    settings = _settings(ctx)
    out = settings.out
    one_step = reservation_id is None
    if one_step:
        if not capability and bench_id is None:
            raise _usage(ctx, "give --reservation ID, or --capability/--bench with --for to book")
        if for_ is None:
            raise _usage(ctx, "booking for a run needs --for DURATION")
        if not wait:
            raise _usage(ctx, "booking for a run needs --wait (the bench is released when it ends)")
    elif capability or bench_id or for_:
        raise _usage(ctx, "--reservation runs on a reservation you have: drop --capability/--for")
    try:
        timeout_s = _seconds(task_timeout, "--task-timeout") if task_timeout else None
        specs = [parse_task(t, timeout_s=timeout_s, max_attempts=max_attempts) for t in task]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--task") from exc
    length = _duration(for_, "--for") if for_ else None
    patience = _duration(max_wait, "--max-wait", allow_zero=True)
    follow_for = _duration(timeout, "--timeout") if timeout else None

    code = EXIT_USAGE
    booked: ReservationOut | None = None
    execution: ExecutionOut | None = None
    create: Callable[[], ExecutionOut] | None = None
    key = f"benchctl-run-{uuid.uuid4()}"
    verdict = False
    with _client(settings) as client, _sigterm_interrupts():
        try:
            if one_step:
                assert length is not None
                booked = _book_for_run(
                    client, out, length, capability or (), bench_id, patience, purpose, commit
                )
                _wait_until(out, booked)
                reservation_id = booked.reservation_id
            assert reservation_id is not None

            def create() -> ExecutionOut:
                # One key for the request and any replay of it in the cleanup below.
                return client.create_execution(
                    reservation_id, commit, specs, pipeline_url=pipeline_url, idempotency_key=key
                )

            execution = create()
            out.say(
                f"execution {execution.execution_id}: {len(specs)} task(s) of {commit} "
                f"on {execution.bench_id}"
            )
            if not wait:
                if out.json:
                    out.emit_json(execution)
                code = 0
                return
            deadline: float | None = None
            if follow_for is not None:
                deadline = time.monotonic() + follow_for.total_seconds()
            elif booked is not None:
                deadline = time.monotonic() + (booked.end + RUN_GRACE - _now()).total_seconds()
            with out.progress(
                f"following execution {execution.execution_id} (Ctrl-C cancels it)"
            ) as progress:
                follower = Follower(client, progress.log)
                execution, verdict = follower.follow(
                    execution.execution_id, deadline=deadline, progress=progress
                )
            if verdict:
                code = verdict_code(text(execution.status))
                took = (
                    f" in {format_duration(timedelta(seconds=execution.duration_s))}"
                    if execution.duration_s is not None
                    else ""
                )
                out.say(f"execution {execution.execution_id} {text(execution.status)}{took}")
            else:
                code = EXIT_TIMED_OUT
                limit = "--timeout" if follow_for is not None else "the reservation's end"
                out.error(
                    f"gave up on execution {execution.execution_id} at {limit} "
                    f"(still {text(execution.status)}); cancelling it"
                )
                with _shielded():
                    execution = _cancel_run(client, out, execution)
                verdict = text(execution.status) in EXIT_CODES
            if out.json:
                out.emit_json(execution)
        except KeyboardInterrupt as stop:
            code = EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
            with _shielded():
                out.error("interrupted (SIGTERM)" if code == EXIT_TERMINATED else "interrupted")
                if execution is None and create is not None:
                    # Interrupted while creating it: the key's replay says what was made.
                    execution = _replay(out, create)
                if execution is not None and not verdict:
                    execution = _cancel_run(client, out, execution)
                    verdict = text(execution.status) in EXIT_CODES
        finally:
            if booked is not None:
                held = booked.reservation_id
                with _shielded():
                    if execution is not None and not verdict and wait:
                        # Failed to follow it (the service gone?): do not leave it running.
                        _cancel_run(client, out, execution)
                    _best_effort(
                        out,
                        f"give back reservation {held}",
                        lambda: _give_back(client, out, held),
                    )
    raise typer.Exit(code)


def _replay(out: Output, create: Callable[[], ExecutionOut]) -> ExecutionOut | None:
    """The execution an interrupted create made (made now, if it never arrived: it is
    cancelled next). The service answers 409 while the first request is still in flight."""
    deadline = time.monotonic() + REPLAY_PATIENCE_S
    while True:
        try:
            return create()
        except Conflict:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        except (ApiError, TransportFailure) as exc:
            out.error(f"could not find the execution being created: {exc}")
            return None
    out.error("could not find the execution being created: its request is still in flight")
    return None


def _cancel_run(client: Client, out: Output, execution: ExecutionOut) -> ExecutionOut:
    try:
        cancelled = client.cancel_execution(execution.execution_id)
    except (ApiError, TransportFailure) as exc:
        out.error(f"could not cancel execution {execution.execution_id}: {exc}")
        return execution
    out.say(f"execution {cancelled.execution_id}: {text(cancelled.status)}")
    return cancelled


def _book_for_run(
    client: Client,
    out: Output,
    length: timedelta,
    capabilities: Sequence[str],
    bench_id: str | None,
    patience: timedelta,
    purpose: str | None,
    commit: str,
) -> ReservationOut:
    def lost(window: FreeWindowOut, conflict: Conflict) -> None:
        out.say(f"{window.bench_id} at {out.when(window.start)} was just taken; trying the next")

    try:
        booked = book_earliest(
            client,
            length,
            capabilities=capabilities,
            bench_id=bench_id,
            purpose=purpose if purpose is not None else f"benchctl run {commit[:12]}",
            start_by=_now() + patience + START_SLACK,
            on_lost=lost,
        )
    except NoWindow as none:
        raise _Failure(f"{none} (--max-wait {format_duration(patience)})", EXIT_TIMED_OUT) from none
    out.say(
        f"booked {booked.bench_id}: reservation {booked.reservation_id}, "
        f"{out.when(booked.start)} to {out.when(booked.end)}"
    )
    return booked


# --- events (bench_client/cli/watch.py) -------------------------------------------------

app.command()(watch)

# --- scheduling and quotas (bench_client/cli/scheduling.py, quotas.py) -------------------

app.command()(checkin)
app.command()(usage)
app.add_typer(quota_app, name="quota")


# --- errors and the entry point ----------------------------------------------------------


class _Failure(Exception):
    """Something the user should read, without a traceback."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _when_text(value: object) -> str:
    if isinstance(value, datetime):
        return _output.when(value)
    if isinstance(value, str):
        try:
            return _output.when(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return value
    return text(value)


def _api_error_lines(error: ApiError) -> tuple[str, list[str]]:
    special = problem_lines(error, _when_text)
    if special is not None:
        return special
    first = " ".join(f"{error.title}: {error.detail}".split())
    more: list[str] = []
    if isinstance(error, Conflict):
        more += conflict_lines(error, _when_text)
        tried = error.problem.get("candidates_tried")
        for candidate in tried if isinstance(tried, list) else []:
            if not isinstance(candidate, dict):
                continue
            held = candidate.get("conflicts") or []
            ways = ", ".join(
                f"{c.get('reservation_id')} ({_when_text(c.get('start'))} to "
                f"{_when_text(c.get('end'))})"
                for c in held
                if isinstance(c, dict)
            )
            more.append(f"{candidate.get('bench_id')}: {ways or 'not bookable'}")
        if error.allowed_transitions is not None and not error.conflicts:
            allowed = ", ".join(error.allowed_transitions) or "nothing"
            more.append(f"it is {error.current_status}; allowed now: {allowed}")
    elif isinstance(error, ValidationFailed):
        for item in error.errors[:3]:
            where = ".".join(str(part) for part in item.get("location", []))
            more.append(f"{where}: {item.get('message')}")
    elif isinstance(error, Unauthorized):
        more.append("check the token: benchctl login, BENCH_TOKEN or --token-file")
    return first, more


def _message(exc: Exception) -> str:
    format_message = getattr(exc, "format_message", None)
    return str(format_message() if callable(format_message) else exc)


def _hoist_output(args: list[str]) -> list[str]:
    """-o/--output is a global option; accept it after the command too."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest += args[index:]
            break
        if arg in ("-o", "--output") and index + 1 < len(args):
            front += [arg, args[index + 1]]
            index += 2
            continue
        if arg.startswith("--output=") or (arg.startswith("-o") and len(arg) > 2):
            front.append(arg)
        else:
            rest.append(arg)
        index += 1
    return front + rest


def main(argv: Sequence[str] | None = None) -> None:
    args = _hoist_output(list(sys.argv[1:] if argv is None else argv))
    try:
        result = app(args=args, prog_name="benchctl", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except UsageError as exc:
        where = getattr(exc, "ctx", None)
        command = getattr(where, "command_path", None) or "benchctl"
        _output.error(_message(exc), [f"see: {command} --help"])
        code = EXIT_USAGE
    except ClickException as exc:
        _output.error(_message(exc))
        code = EXIT_USAGE
    except typer.Abort:
        code = EXIT_INTERRUPTED
    except ApiError as exc:
        first, more = _api_error_lines(exc)
        if _output.json:
            _output.emit_json(exc.problem or {"status": exc.status, "title": exc.title})
        _output.error(first, more)
        code = EXIT_USAGE
    except TransportFailure as exc:
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        _output.error(f"cannot reach the service{cause}", [str(exc)] if str(exc) else [])
        code = EXIT_USAGE
    except ConfigError as exc:
        _output.error(str(exc), ["give --url/--token-file, set BENCH_URL/BENCH_TOKEN, or login"])
        code = EXIT_USAGE
    except _Failure as exc:
        _output.error(str(exc))
        code = exc.code
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except Exception as exc:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("BENCHCTL_DEBUG"):
            raise
        _output.error(f"unexpected {type(exc).__name__}: {exc} (BENCHCTL_DEBUG=1 for details)")
        code = EXIT_USAGE
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
