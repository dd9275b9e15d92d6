"""The two text forms of an instant: the stored one, fixed-width so that text order is
time order, and the one the API speaks everywhere (responses, history, export)."""

from __future__ import annotations

from datetime import UTC, datetime


def to_iso(moment: datetime) -> str:
    # isoformat, not strftime: the same fixed-width text at a fraction of the cost, on
    # the hottest paths (every heartbeat stores one).
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def rfc3339(moment: datetime) -> str:
    """As the API renders instants: UTC with Z, microseconds only when there are some
    (pydantic's form, so history reads exactly like the resources)."""
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


def from_iso(text: str) -> datetime:
    # Python 3.11's fromisoformat reads a trailing Z as UTC.
    return datetime.fromisoformat(text).astimezone(UTC)
