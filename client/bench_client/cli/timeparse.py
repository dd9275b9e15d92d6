"""Instants and durations in the user's terms, and instants shown in the user's zone.

Every function takes the "now" it works from and the zone to read local times in, so the
rules are testable with a fixed clock; ``tz=None`` means the process's local zone (which
honours ``TZ``), resolved by the C library so that daylight saving time is right for the
day asked about, not for today.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo

__all__ = [
    "format_duration",
    "format_local",
    "localize",
    "parse_duration",
    "parse_when",
    "to_local",
]

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_HUMAN = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)", re.IGNORECASE)
_ISO = re.compile(
    r"P(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?",
    re.IGNORECASE,
)
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_DAY_WORDS = {"today": 0, "tomorrow": 1}


def parse_duration(text: str) -> timedelta:
    """``2h``, ``90m``, ``1h30m``, ``1h 30m``, ``45s``, ``1d``, or ISO 8601 (``PT2H``,
    ``PT1H30M``, ``P1DT2H``). Raises ValueError when it is none of those or not positive."""
    raw = text.strip()
    seconds: float | None = None
    if raw[:1] in ("P", "p"):
        iso = _ISO.fullmatch(raw)
        if iso and any(iso.group(unit) for unit in "dhms") and not raw.upper().endswith("T"):
            seconds = sum(float(iso.group(unit) or 0) * _UNITS[unit] for unit in "dhms")
    elif raw:
        compact = raw.replace(" ", "")
        parts = _HUMAN.findall(compact)
        if parts and "".join(n + u for n, u in parts).lower() == compact.lower():
            seconds = sum(float(number) * _UNITS[unit.lower()] for number, unit in parts)
    if seconds is None:
        raise ValueError(f"{text!r} is not a duration: use e.g. 2h, 90m, 1h30m or ISO 8601 (PT2H)")
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return timedelta(seconds=seconds)


def localize(naive: datetime, tz: tzinfo | None) -> datetime:
    """A wall-clock time in ``tz`` (None: the local zone) as an aware datetime."""
    if tz is None:
        return naive.astimezone()  # mktime: the local zone's offset on that day
    return naive.replace(tzinfo=tz)


def to_local(instant: datetime, tz: tzinfo | None) -> datetime:
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(tz) if tz is not None else instant.astimezone()


def parse_when(text: str, *, now: datetime, tz: tzinfo | None = None) -> datetime:
    """An instant from what a person types, read in ``tz`` (None: local) unless it carries
    an offset:

    - ``now``; ``in 2h``, ``in 1h30m`` (any duration of ``parse_duration``);
    - ``today 14:30``, ``tomorrow 09:00`` (``today``/``tomorrow`` alone: midnight);
    - ``14:30`` (today);
    - ``2026-12-03 09:00`` or ``2026-12-03T09:00[:ss]`` (local wall clock);
    - ISO 8601 with an offset: ``2026-12-03T09:00:00+01:00``, ``...Z``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be aware")
    raw = " ".join(text.strip().split())
    lowered = raw.lower()
    if lowered == "now":
        return now
    if lowered.startswith("in "):
        return now + parse_duration(raw[3:])
    words = lowered.split(" ")
    if words[0] in _DAY_WORDS and len(words) <= 2:
        day = to_local(now, tz).date() + timedelta(days=_DAY_WORDS[words[0]])
        clock = _parse_clock(words[1]) if len(words) == 2 else time(0, 0)
        return localize(datetime.combine(day, clock), tz)
    if _CLOCK.fullmatch(lowered):
        return localize(datetime.combine(to_local(now, tz).date(), _parse_clock(lowered)), tz)
    candidate = raw[:-1] + "+00:00" if raw[-1:] in ("Z", "z") else raw
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        parsed = None
    if parsed is not None and ("-" in raw[:10] or "T" in raw.upper()):
        if parsed.tzinfo is not None:
            return parsed
        if len(raw) == 10:  # a date alone: its midnight
            return localize(datetime.combine(date.fromisoformat(raw), time(0, 0)), tz)
        return localize(parsed, tz)
    raise ValueError(
        f"{text!r} is not a time: use now, 'in 2h', 'today 14:30', 'tomorrow 09:00', "
        "'2026-12-03 09:00' or ISO 8601 with an offset"
    )


def _parse_clock(text: str) -> time:
    match = _CLOCK.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time of day (HH:MM)")
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"{text!r} is not a time of day (HH:MM)")
    return time(hour, minute, second)


def format_local(instant: datetime | None, tz: tzinfo | None = None) -> str:
    """``2026-12-03 09:00 CET`` (seconds only when there are some)."""
    if instant is None:
        return "-"
    local = to_local(instant, tz)
    pattern = "%Y-%m-%d %H:%M:%S %Z" if local.second else "%Y-%m-%d %H:%M %Z"
    return local.strftime(pattern).strip()


def format_duration(span: timedelta) -> str:
    """``2h``, ``1h30m``, ``45s``, ``3d4h``."""
    total = round(span.total_seconds())
    if total <= 0:
        return "0s"
    parts: list[str] = []
    for unit, size in _UNITS.items():
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
