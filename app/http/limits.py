"""Input limits, checked once at the boundary (http-contract.md, "Input limits").

Everything a client sends is bounded here before any service sees it, so nothing that a
store or the JSON encoder cannot take back out is ever stored: free-form objects have a
size, a depth, a key count, finite numbers and valid Unicode; instants stay representable
after conversion to UTC; headers the service parses have a length.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, WithJsonSchema

# Free-form JSON objects (metadata, params, result, details).
MAX_JSON_BYTES = 16 * 1024
MAX_JSON_DEPTH = 32
MAX_JSON_KEYS = 512
MAX_JSON_STRING = 4096
MAX_SMALL_JSON_BYTES = 4096
# Instants the stores keep as fixed-width UTC text and the clients parse without surprise.
EARLIEST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(9000, 1, 1, tzinfo=UTC)
# Headers the service parses (If-Match, If-None-Match); longer ones are a 400.
MAX_PRECONDITION_HEADER = 1024


def check_json_object(value: dict[str, Any], max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """Refuse what a store or an encoder could not hand back: deep, huge, NaN, bad text."""
    keys = _walk(value, depth=1)
    if keys > MAX_JSON_KEYS:
        raise ValueError(f"must have at most {MAX_JSON_KEYS} keys in all, not {keys}")
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > max_bytes:
        raise ValueError(f"must be at most {max_bytes} bytes as JSON, not {size}")
    return value


def _walk(value: Any, depth: int) -> int:
    """The number of object keys below ``value``; raises on the first bad member.
    ``depth`` counts the objects and arrays that hold ``value``, itself included."""
    if isinstance(value, dict | list) and depth > MAX_JSON_DEPTH:
        raise ValueError(f"must be nested at most {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, dict):
        keys = len(value)
        for key, member in value.items():
            _check_text(key)
            keys += _walk(member, depth + 1)
        return keys
    if isinstance(value, list):
        return sum(_walk(member, depth + 1) for member in value)
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (no NaN or Infinity)")
    return 0


def _check_text(text: str) -> None:
    if len(text) > MAX_JSON_STRING:
        raise ValueError(f"strings must be at most {MAX_JSON_STRING} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("strings must be valid Unicode (no lone surrogates)") from None


def _object_schema(max_bytes: int) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": True,
        "maxProperties": MAX_JSON_KEYS,
        "description": (
            f"Free-form JSON object: at most {max_bytes} bytes encoded, {MAX_JSON_DEPTH} levels"
            f" deep, {MAX_JSON_KEYS} keys in all, finite numbers, valid Unicode."
        ),
    }


def _check_small_json_object(value: dict[str, Any]) -> dict[str, Any]:
    return check_json_object(value, MAX_SMALL_JSON_BYTES)


# A free-form object of a request body (metadata, params, result).
JsonObject = Annotated[
    dict[str, Any],
    AfterValidator(check_json_object),
    WithJsonSchema(_object_schema(MAX_JSON_BYTES)),
]
# The same, for what is sent often and kept on the bench (heartbeat details).
SmallJsonObject = Annotated[
    dict[str, Any],
    AfterValidator(_check_small_json_object),
    WithJsonSchema(_object_schema(MAX_SMALL_JSON_BYTES)),
]


def _representable(moment: datetime) -> datetime:
    if not EARLIEST_INSTANT <= moment < LATEST_INSTANT:
        raise ValueError(
            f"must lie between {EARLIEST_INSTANT:%Y-%m-%d} and {LATEST_INSTANT:%Y-%m-%d} (UTC)"
        )
    return moment.astimezone(UTC)


def _utc_safely(value: Any) -> Any:
    """Conversion to UTC may overflow (9999-12-31T20:00-14:00): that is bad input, not a
    crash. Parsed here as pydantic would, then shifted with the overflow caught."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return value  # pydantic's own parser words the error
        if parsed.tzinfo is not None:
            try:
                parsed.astimezone(UTC)
            except OverflowError:
                raise ValueError("is out of the range of representable instants") from None
    return value


# A client's instant in a body: with an offset, representable, returned as UTC.
Instant = Annotated[AwareDatetime, BeforeValidator(_utc_safely), AfterValidator(_representable)]

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+ -]\d{2}:\d{2})?$"
)


def _query_instant(value: Any) -> Any:
    """Query strings are text: a bare number is not an instant, and a ``+`` sent
    unencoded arrives as a space, which the message names."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 instant such as 2026-11-25T09:00:00Z")
    if " " in value and re.search(r" \d{2}:\d{2}$", value):
        raise ValueError(
            "has a space where its offset's '+' should be: encode '+' as %2B in a query"
        )
    return _utc_safely(value)


QueryInstant = Annotated[
    AwareDatetime,
    BeforeValidator(_query_instant),
    AfterValidator(_representable),
    Field(description="RFC 3339 with an offset, e.g. 2026-11-25T09:00:00Z (encode + as %2B)"),
]


def _drop_null(schema: dict[str, Any]) -> None:
    if schema.get("default", ...) is None:
        del schema["default"]
    variants = schema.pop("anyOf", None)
    if variants is None:
        return
    kept = [variant for variant in variants if variant.get("type") != "null"]
    if len(kept) == 1:
        schema.update(kept[0])
    else:
        schema["anyOf"] = kept


# For optional fields that may be left out but never sent as null: the schema says so.
NOT_NULL = Field(default=None, json_schema_extra=_drop_null)


_ISO_DURATION = re.compile(r"^-?P(?!$)(\d+(\.\d+)?[YMWD])*(T(?=\d)(\d+(\.\d+)?[HMS])*)?$")


def _query_duration(value: Any) -> Any:
    if not isinstance(value, str) or not _ISO_DURATION.fullmatch(value.upper()):
        raise ValueError("must be an ISO 8601 duration such as PT2H or PT90M (not 2h)")
    return value.upper()


QueryDuration = Annotated[
    timedelta,
    BeforeValidator(_query_duration),
    Field(description="ISO 8601 duration, e.g. PT2H or PT90M"),
]
