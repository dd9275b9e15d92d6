"""Cursor pagination: opaque, HMAC-signed cursors bound to the query that made them.

A cursor carries the sort key of the last item served. The signature makes it tamper-
evident; the query fingerprint makes a cursor useless with other filters (400 either way).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query, Request, Response
from pydantic import BaseModel

from app.http.exceptions import ProblemException
from app.http.responses import json_bytes_response
from app.http.state import http_state

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_SIGNATURE_BYTES = 16

ItemT = TypeVar("ItemT")


class PageOut(BaseModel, Generic[ItemT]):
    items: list[ItemT]
    next_cursor: str | None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _fingerprint(scope: str, query: Mapping[str, Any]) -> str:
    canonical = json.dumps([scope, query], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]

    def derived_key(self, purpose: str) -> bytes:
        """A key of its own for ``purpose`` (the dashboard's session cookies), derived
        from the cursor secret: as stable as it is (one shared secret for every replica,
        kept over restarts), and no signature of one kind passes for the other."""
        return hmac.new(self._secret, f"derived key: {purpose}".encode(), hashlib.sha256).digest()

    def encode(self, scope: str, query: Mapping[str, Any], after: str) -> str:
        payload = json.dumps({"q": _fingerprint(scope, query), "a": after}).encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def decode(self, cursor: str, scope: str, query: Mapping[str, Any]) -> str:
        try:
            payload_text, signature_text = cursor.split(".")
            payload = _unb64(payload_text)
            signature = _unb64(signature_text)
        except (ValueError, binascii.Error) as error:
            raise _bad_cursor("the cursor is not one this service made") from error
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise _bad_cursor("the cursor is not one this service made")
        decoded = json.loads(payload)
        if decoded.get("q") != _fingerprint(scope, query):
            raise _bad_cursor("the cursor belongs to another query; start again without it")
        after = decoded.get("a")
        if not isinstance(after, str):
            raise _bad_cursor("the cursor is not one this service made")
        return after


def _bad_cursor(detail: str) -> ProblemException:
    return ProblemException(400, detail, slug="invalid-cursor")


@dataclass(frozen=True, slots=True)
class Pager:
    """One list request's paging: where to start, and how to say where the next page starts."""

    codec: CursorCodec
    limit: int
    cursor: str | None

    def start_after(self, scope: str, query: Mapping[str, Any]) -> str | None:
        return None if self.cursor is None else self.codec.decode(self.cursor, scope, query)

    def next_cursor(self, scope: str, query: Mapping[str, Any], after: str | None) -> str | None:
        return None if after is None else self.codec.encode(scope, query, after)


async def _pager(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> Pager:
    codec = http_state(request).cursor_codec
    return Pager(codec=codec, limit=limit, cursor=cursor)


PagerDep = Annotated[Pager, Depends(_pager)]


Item = TypeVar("Item")
_logger = logging.getLogger("app.http")


def render_page(
    items: Iterable[Item], render: Callable[[Item], BaseModel], next_cursor: str | None
) -> Response:
    """A page of representations, as ``PageOut`` of them (what the routes declare), each
    item encoded once. An item that cannot be rendered (stored before the input limits
    existed: too deep to encode, text that is not Unicode) is left out and logged, so
    that one bad item never turns a whole list into a 500."""
    encoded: list[str] = []
    for item in items:
        try:
            encoded.append(render(item).model_dump_json())
        except (ValueError, RecursionError) as error:
            _logger.error("left an item out of a page: it cannot be rendered (%s)", error)
    body = f'{{"items":[{",".join(encoded)}],"next_cursor":{json.dumps(next_cursor)}}}'
    return json_bytes_response(body.encode())
