"""Jinja2 for the dashboard: autoescaped templates, and the helpers they render times,
durations and states with.

Every instant is rendered as ``<time datetime="...Z" title="UTC: ...">`` with its text in
the browser's time zone as far as the server knows it (the ``orch_tz`` cookie the
page's script sets; UTC before that); the script then formats every ``<time>`` in the
browser's own zone and locale, keeping UTC in the title.

Pages are gzip-compressed here, when the browser accepts it: the dashboard's own
responses only (the API's JSON is left as it is; an app-wide GZipMiddleware would not).
"""

from __future__ import annotations

import gzip
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
    "quarantined": "⊗",
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


# Why a bench is quarantined, and why a booking is at risk, as a person reads it.
QUARANTINE_REASONS = {
    "health_failures": "its health check failed again and again",
    "infrastructure_failures": "runs on it kept ending errored or timed out",
    "agent_report": "its agent reported it broken",
    "admin": "an admin quarantined it",
}
RISK_REASONS = {
    "offline": "the bench is offline",
    "quarantined": "the bench is quarantined",
    "maintenance": "the bench is in maintenance",
    "health_failing": "the bench's health check is failing",
}


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _span_text(start: datetime, end: datetime, zone: tzinfo) -> str:
    """``Tue 01 23:00-02:00`` (or ``...-Wed 02 02:00``) in ``zone``, with an en dash.
    Made by hand: strftime was most of a bar's cost."""
    first, last = start.astimezone(zone), end.astimezone(zone)
    tail = f"{last.hour:02d}:{last.minute:02d}"
    if (last.year, last.month, last.day) != (first.year, first.month, first.day):
        tail = f"{_WEEKDAYS[last.weekday()]} {last.day:02d} {tail}"
    head = f"{_WEEKDAYS[first.weekday()]} {first.day:02d} {first.hour:02d}:{first.minute:02d}"
    return f"{head}\u2013{tail}"


def bar_markup(bar: Any, zone: tzinfo = UTC) -> Markup:
    """One reservation's bar on the timeline (``views.Bar``). Made here rather than in
    the template: a week of 200 benches has thousands, and this is the page's hot loop,
    and the page's size (the reservation's id is in its link only; the script reads it
    there). The tooltip says who, what, the status and the window in the page's zone."""
    r = bar.reservation
    window = _span_text(r.start, r.end, zone)
    style = f"left:{bar.left:.2f}%;width:{bar.width:.2f}%"
    href = f"/ui/reservations/{html.escape(r.reservation_id)}"
    if bar.maintenance:
        reason = html.escape(r.purpose)
        return Markup(
            f'<a class="bar maint s-{bar.status}" href="{href}" style="{style}"'
            f' title="Maintenance: {reason} ({bar.status}), {window}">'
            '<span aria-hidden="true">\u2692</span>'
            f'<span class="sr">maintenance:</span> {reason}</a>'
        )
    who, purpose = html.escape(r.user_id), html.escape(r.purpose)
    classes = f"bar s-{bar.status}"
    marks = ""
    if bar.mine:
        classes += " mine"
        marks += '<span aria-hidden="true">\u2605</span>'
    risk = ""
    if r.at_risk is not None:
        classes += " at-risk"
        words = html.escape(RISK_REASONS.get(r.at_risk.reason, r.at_risk.reason))
        marks += f'<span aria-hidden="true">\u26a0</span><span class="sr">at risk ({words}):</span>'
        risk = f"; at risk: {words}"
    return Markup(
        f'<a class="{classes}" href="{href}" style="{style}"'
        f' title="{who}: {purpose or "no purpose given"} ({bar.status}), {window}{risk}">'
        f"{marks + ' ' if marks else ''}<b>{who}</b> {purpose}</a>"
    )


def accepts_gzip(header: str | None) -> bool:
    """Whether an ``Accept-Encoding`` admits gzip (``gzip;q=0`` refuses it, ``*`` admits
    what is not named)."""
    star = False
    for part in (header or "").split(","):
        name, _, parameters = part.partition(";")
        quality = 1.0
        for parameter in parameters.split(";"):
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        coding = name.strip().lower()
        if coding in ("gzip", "x-gzip"):
            return quality > 0
        if coding == "*":
            star = quality > 0
    return star


# Smaller pages are sent as they are: compressing them saves less than a packet.
GZIP_MIN_BYTES = 1400
GZIP_LEVEL = 6


def page_text(request: Request, template: str, context: dict[str, Any]) -> str:
    """A template rendered for ``request`` (its zone, the time helpers)."""
    zone = zone_of(request)
    return _environment.get_template(template).render(
        request=request,
        when=lambda moment, style="datetime": time_html(moment, zone, style),
        value=lambda given: value_html(given, zone),
        zone=zone,
        **context,
    )


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    body = page_text(request, template, context).encode()
    response_headers = {**(headers or {}), "Vary": "Accept-Encoding"}
    if len(body) >= GZIP_MIN_BYTES and accepts_gzip(request.headers.get("accept-encoding")):
        body = gzip.compress(body, GZIP_LEVEL, mtime=0)
        response_headers["Content-Encoding"] = "gzip"
    response = HTMLResponse(body, status_code=status_code, headers=response_headers)
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
    quarantine_reasons=QUARANTINE_REASONS,
    risk_reasons=RISK_REASONS,
)
