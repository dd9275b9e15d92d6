"""``benchctl quota show|set`` and ``benchctl usage``: a user's or a team's booking limits,
and how much they booked and used, per day, over the last 30 days."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, TypeVar

import typer

from bench_client.cli.context import open_client, settings_of, usage_error
from bench_client.cli.output import Output
from bench_client.cli.timeparse import format_duration
from bench_client.models import QuotaKind, QuotaOut, UsageOut

__all__ = ["describe_quota", "hours", "quota_app", "usage"]

N = TypeVar("N", int, float)
_CLEAR = ("none", "-", "null", "unlimited")

quota_app = typer.Typer(
    help="Booking limits of a user or a team: show them, set them (admins).",
    no_args_is_help=True,
)

UserOption = Annotated[
    str | None, typer.Option("--user", help="This user's (default: yours).", metavar="NAME")
]
TeamOption = Annotated[str | None, typer.Option("--team", help="This team's.", metavar="NAME")]


def hours(value: float) -> str:
    """``2h``, ``1h30m``; ``0`` for none."""
    return format_duration(timedelta(hours=value)) if value > 0 else "0"


def _limit(value: object, unit: str = "") -> str:
    if value is None:
        return "none"
    root = getattr(value, "root", value)
    return f"{root:g}{unit}" if isinstance(root, float) else f"{root}{unit}"


def _raw(value: object) -> float | int | None:
    root = getattr(value, "root", value)
    return root if isinstance(root, int | float) else None


def describe_quota(quota: QuotaOut) -> str:
    """One line: ``at most 20 h booked in any 7 days, 2 at once, 4 h a window``."""
    parts = []
    if quota.max_booked_hours_7d is not None:
        parts.append(f"{_limit(quota.max_booked_hours_7d, ' h')} booked in any 7 days")
    if quota.max_concurrent is not None:
        parts.append(f"{_limit(quota.max_concurrent)} at once")
    if quota.max_window_hours is not None:
        parts.append(f"{_limit(quota.max_window_hours, ' h')} a window")
    return "at most " + ", ".join(parts) if parts else "no limits"


def _who(ctx: typer.Context, user: str | None, team: str | None) -> tuple[QuotaKind, str] | None:
    if user is not None and team is not None:
        raise usage_error(ctx, "give --user NAME or --team NAME, not both")
    if team is not None:
        return QuotaKind.team, team
    if user is not None:
        return QuotaKind.user, user
    return None


def _show_quota(out: Output, quota: QuotaOut, headline: str | None = None) -> None:
    if out.json:
        out.emit_json(quota)
        return
    if headline:
        out.say(headline)
    set_when = (
        f"{out.when(quota.updated_at)} (version {quota.version})"
        if quota.version and quota.updated_at is not None
        else "never: the service's defaults apply"
    )
    out.fields(
        [
            ("quota", f"{quota.kind.value} {quota.name}"),
            ("max booked hours in 7 days", _limit(quota.max_booked_hours_7d, " h")),
            ("max concurrent", _limit(quota.max_concurrent)),
            ("max window hours", _limit(quota.max_window_hours, " h")),
            ("set", set_when),
        ]
    )


@quota_app.command("show")
def quota_show(ctx: typer.Context, user: UserOption = None, team: TeamOption = None) -> None:
    """Your quota, another user's or a team's (yours and your team's; admins: any)."""
    settings = settings_of(ctx)
    who = _who(ctx, user, team)
    with open_client(settings) as client:
        # Without a name: yours, from your usage (which names you).
        quota = client.get_usage(user_id="me").quota if who is None else client.get_quota(*who)
    _show_quota(settings.out, quota)


def _parse(
    value: str | None, option: str, kind: Callable[[str], N], least: N, exclusive: bool
) -> tuple[bool, N | None]:
    """(given, value): ``none`` clears the limit."""
    if value is None:
        return False, None
    if value.strip().lower() in _CLEAR:
        return True, None
    try:
        number = kind(value.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a number (or none)", param_hint=option) from exc
    if number < least or (exclusive and number == least):
        bound = f"more than {least}" if exclusive else f"at least {least}"
        raise typer.BadParameter(f"must be {bound} (or none)", param_hint=option)
    return True, number


@quota_app.command("set")
def quota_set(
    ctx: typer.Context,
    user: Annotated[
        str | None, typer.Option("--user", help="This user's quota.", metavar="NAME")
    ] = None,
    team: TeamOption = None,
    max_booked_hours_7d: Annotated[
        str | None,
        typer.Option(
            "--max-booked-hours-7d",
            help="Hours booked in any 7 days (none: no limit).",
            metavar="HOURS",
        ),
    ] = None,
    max_concurrent: Annotated[
        str | None,
        typer.Option(
            "--max-concurrent", help="Reservations held at once (none: no limit).", metavar="N"
        ),
    ] = None,
    max_window_hours: Annotated[
        str | None,
        typer.Option(
            "--max-window-hours",
            help="The longest single window, in hours (none: no limit).",
            metavar="HOURS",
        ),
    ] = None,
) -> None:
    """Set a user's or a team's limits (admins). Limits not named stay as they are."""
    settings = settings_of(ctx)
    who = _who(ctx, user, team)
    if who is None:
        raise usage_error(ctx, "give --user NAME or --team NAME")
    booked = _parse(max_booked_hours_7d, "--max-booked-hours-7d", float, 0.0, True)
    concurrent = _parse(max_concurrent, "--max-concurrent", int, 1, False)
    window = _parse(max_window_hours, "--max-window-hours", float, 0.0, True)
    if not (booked[0] or concurrent[0] or window[0]):
        raise usage_error(ctx, "give --max-booked-hours-7d, --max-concurrent or --max-window-hours")
    with open_client(settings) as client:

        def change(current: QuotaOut) -> QuotaOut:
            # If-Match from what was read: a 412 (set meanwhile) reads again and merges again.
            return client.put_quota(
                current,
                max_booked_hours_7d=booked[1] if booked[0] else _raw(current.max_booked_hours_7d),
                max_concurrent=concurrent[1]
                if concurrent[0]
                else _int(_raw(current.max_concurrent)),
                max_window_hours=window[1] if window[0] else _raw(current.max_window_hours),
            )

        quota = client.update(lambda: client.get_quota(*who), change)
    _show_quota(settings.out, quota, f"quota of {quota.kind.value} {quota.name} set")


def _int(value: float | int | None) -> int | None:
    return None if value is None else int(value)


def usage(ctx: typer.Context, user: UserOption = None, team: TeamOption = None) -> None:
    """Hours booked and used (a run under way) per day over the last 30 days, the
    totals and the quota: yours, another user's or a team's (admins: anyone's)."""
    settings = settings_of(ctx)
    out = settings.out
    if user is not None and team is not None:
        raise usage_error(ctx, "give --user NAME or --team NAME, not both")
    with open_client(settings) as client:
        found = client.get_usage(user_id=user, team=team)
    if out.json:
        out.emit_json(found)
        return
    _show_usage(out, found)


def _show_usage(out: Output, found: UsageOut) -> None:
    who = f"team {found.team}" if found.team is not None else f"user {found.user_id}"
    out.say(f"usage of {who}, last 30 days (UTC days):")
    rows = [
        [day.day.strftime("%Y-%m-%d %a"), hours(day.booked_hours), hours(day.used_hours)]
        for day in found.days
        if day.booked_hours > 0 or day.used_hours > 0
    ]
    if rows:
        rows.append(["total", hours(found.booked_hours), hours(found.used_hours)])
    out.table(["DAY", "BOOKED", "USED"], rows, empty="nothing booked in the last 30 days")
    if found.booked_hours > 0:
        share = 100.0 * found.used_hours / found.booked_hours
        out.say(f"used {share:.0f}% of the booked time")
    out.say(f"quota: {describe_quota(found.quota)}")
