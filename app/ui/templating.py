"""Jinja2 for the dashboard: autoescaped templates, and the helpers they render times,
durations and states with.

Every instant is rendered as ``<time datetime="...Z" title="UTC: ...">`` with its text in
the browser's time zone as far as the server knows it (the ``orch_tz`` cookie the
page's script sets; UTC before that); the script then formats every ``<time>`` in the
browser's own zone and locale, keeping UTC in the title.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from app.events.domain import EVENT_TYPES
from app.timeutil import from_iso, rfc3339

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
TZ_COOKIE = "orch_tz"

_environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def zone_of(request: Request) -> tzinfo:
    """The browser's time zone as its cookie names it; UTC when unknown."""
    name = request.cookies.get(TZ_COOKIE, "")
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def time_html(moment: datetime | None, zone: tzinfo, style: str = "datetime") -> Markup:
    """``<time>`` for an instant; ``style`` is datetime, time, date or ago (relative)."""
    if moment is None:
        return Markup("<span class='muted'>\u2013</span>")
    utc = moment.astimezone(UTC)
    local = moment.astimezone(zone)
    text = {
        "datetime": local.strftime("%a %d %b %H:%M"),
        "time": local.strftime("%H:%M"),
        "date": local.strftime("%a %d %b"),
        "ago": utc.strftime("%H:%M:%S UTC"),
    }.get(style, local.strftime("%a %d %b %H:%M"))
    return Markup('<time datetime="{}" title="UTC: {}" data-style="{}">{}</time>').format(
        rfc3339(utc), utc.strftime("%Y-%m-%d %H:%M:%S"), style, text
    )


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "\u2013"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def value_text(value: Any) -> str:
    """A value of a history entry's change, as a person reads it."""
    if value is None:
        return "\u2013"
    if isinstance(value, list | tuple):
        return ", ".join(value_text(item) for item in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{key}={value_text(item)}" for key, item in value.items()) or "none"
    return str(value)


_INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$")


def value_html(value: Any, zone: tzinfo) -> Markup:
    """A history change's value: instants as ``<time>``, the rest as text."""
    if isinstance(value, str) and _INSTANT.match(value):
        return time_html(from_iso(value), zone)
    return escape(value_text(value))


def percent(part: float, whole: float) -> str:
    return "\u2013" if whole == 0 else f"{100 * part / whole:.0f} %"


# What each state reads as: a word and a shape, so state never rests on colour alone.
STATE_SYMBOLS = {
    "online": "●",
    "offline": "○",
    "unmonitored": "◌",
    "active": "▶",
    "maintenance": "⚒",
    "quarantined": "⛔",
    "retired": "✕",
    "queued": "…",
    "running": "▶",
    "passed": "✔",
    "succeeded": "✔",
    "failed": "✘",
    "errored": "⚠",
    "timed_out": "⌛",
    "cancelled": "⊘",
    "pending": "…",
    "leased": "▶",
    "dead": "✘",
    "confirmed": "◷",
    "completed": "✔",
    "released": "⏏",
    "ok": "✔",
    "failing": "✘",
}


def badge(state: str | None) -> Markup:
    """A state as a badge: symbol and word, the colour from its class."""
    if not state:
        return Markup("<span class='muted'>\u2013</span>")
    word = str(state)
    symbol = STATE_SYMBOLS.get(word, "•")
    return Markup('<span class="badge s-{}"><span aria-hidden="true">{}</span> {}</span>').format(
        word, symbol, word.replace("_", " ")
    )


def bar_markup(bar: Any) -> Markup:
    """One reservation's bar on the timeline (``views.Bar``). Made here rather than in
    the template: a week of 200 benches has thousands, and this is the page's hot loop."""
    r = bar.reservation
    who, purpose = html.escape(r.user_id), html.escape(r.purpose)
    classes = f"bar s-{bar.status}"
    marks = ""
    if bar.mine:
        classes += " mine"
        marks += '<span aria-hidden="true">\u2605</span>'
    risk = ""
    if bar.at_risk:
        classes += " at-risk"
        reason = html.escape(str(bar.at_risk["reason"]))
        marks += f'<span aria-hidden="true">\u26a0</span><span class="sr"> at risk: {reason}</span>'
        risk = f"; at risk: {reason}"
    if bar.maintenance:
        classes += " maint"
        marks += '<span aria-hidden="true">\u2692</span>'
    window = f"{r.start:%Y-%m-%d %H:%M}\u2013{r.end:%Y-%m-%d %H:%M} UTC"
    return Markup(
        f'<a class="{classes}" href="/ui/reservations/{r.reservation_id}"'
        f' data-reservation="{r.reservation_id}"'
        f' style="left:{bar.left:.3f}%;width:{bar.width:.3f}%"'
        f' title="{who}: {purpose or "no purpose given"} ({bar.status}), {window}{risk}">'
        f'{marks} <b>{who}</b> <span class="purpose">{purpose}</span></a>'
    )


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    zone = zone_of(request)
    page = _environment.get_template(template)
    body = page.render(
        request=request,
        when=lambda moment, style="datetime": time_html(moment, zone, style),
        value=lambda given: value_html(given, zone),
        zone=zone,
        **context,
    )
    response = HTMLResponse(body, status_code=status_code, headers=headers)
    # Pages show the caller's data: never cached, not framed by another site.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
        " img-src 'self' data:; connect-src 'self'; frame-ancestors 'none';"
        " form-action 'self'; base-uri 'none'"
    )
    return response


_environment.globals.update(
    badge=badge,
    bar_markup=bar_markup,
    event_types=EVENT_TYPES,
    duration=duration_text,
    value_text=value_text,
    percent=percent,
    escape=escape,
    symbols=STATE_SYMBOLS,
)
