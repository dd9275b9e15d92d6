"""The dashboard's session: a signed, expiring cookie holding the bearer token, and the
CSRF tokens bound to it. Standard library only (hmac, hashlib, secrets).

The cookie holds ``{token, expires, session id}``, base64url JSON, with an HMAC-SHA256
tag. It is not a credential of its own: every request resolves the token inside through
the same TokenRegistry (tokens file, JWT issuers) as a bearer header, so a token removed
from the tokens file, or a JWT that expired, ends the session at once. The key is
``ORCH_UI_SESSION_SECRET``, or else derived from the cursor secret (kept in
``var/cursor-secret`` by ``orchestrator serve`` on SQLite, shared by replicas that share
that secret): sessions then survive a restart and work across ``--workers N``.

CSRF: every form that changes something carries a token that is an HMAC of the session
id (session-bound: useless with another session, nothing to store). The sign-in form,
before there is a session, uses a double-submit cookie (``orch_signin``) instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

SESSION_COOKIE = "orch_session"
SIGN_IN_COOKIE = "orch_signin"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
_TAG_BYTES = 32
# Sign-outs remembered per process (sessions ended before their cookie expires).
_ENDED_KEPT = 10_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    session_id: str
    expires_at: float  # seconds since the epoch


class SessionCodec:
    """Makes and reads session cookies and CSRF tokens with one key."""

    def __init__(self, key: bytes, ttl_s: float) -> None:
        self._key = key
        self.ttl_s = ttl_s
        # Session ids signed out in this process, until their cookie would have expired.
        self._ended: OrderedDict[str, float] = OrderedDict()

    def _tag(self, purpose: str, payload: bytes) -> bytes:
        return hmac.new(self._key, purpose.encode() + b"\n" + payload, hashlib.sha256).digest()

    def new(self, token: str, now: float | None = None) -> tuple[Session, str]:
        """A new session for ``token`` and the cookie value that carries it."""
        now = time.time() if now is None else now
        session = Session(token, secrets.token_urlsafe(16), now + self.ttl_s)
        payload = json.dumps(
            {"t": session.token, "s": session.session_id, "e": round(session.expires_at)},
            separators=(",", ":"),
        ).encode()
        return session, f"{_b64(payload)}.{_b64(self._tag('session', payload))}"

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie carries; None when it is missing, tampered with, expired or
        signed out."""
        if not cookie:
            return None
        now = time.time() if now is None else now
        try:
            payload_text, tag_text = cookie.split(".")
            payload, tag = _unb64(payload_text), _unb64(tag_text)
        except (ValueError, binascii.Error):
            return None
        if len(tag) != _TAG_BYTES or not hmac.compare_digest(tag, self._tag("session", payload)):
            return None
        try:
            fields = json.loads(payload)
            session = Session(str(fields["t"]), str(fields["s"]), float(fields["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires_at <= now or session.session_id in self._ended:
            return None
        return session

    def end(self, session: Session, now: float | None = None) -> None:
        """Sign out: this process refuses the session from now on, even if a copy of the
        cookie is replayed (other replicas only see the cookie deleted in the browser)."""
        now = time.time() if now is None else now
        self._ended[session.session_id] = session.expires_at
        while self._ended and (
            len(self._ended) > _ENDED_KEPT or next(iter(self._ended.values())) <= now
        ):
            self._ended.popitem(last=False)

    def csrf_token(self, session: Session) -> str:
        """The CSRF token of a session: its forms carry it, its fetch() calls send it."""
        return _b64(self._tag("csrf", session.session_id.encode())[:18])

    def csrf_valid(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given), self.csrf_token(session))

    def sign_in_nonce(self) -> tuple[str, str]:
        """(cookie value, form value) for the sign-in form's double submit."""
        nonce = secrets.token_urlsafe(16)
        return nonce, _b64(self._tag("sign-in", nonce.encode())[:18])

    def sign_in_valid(self, cookie: str | None, given: str | None) -> bool:
        if not cookie or not given:
            return False
        expected = _b64(self._tag("sign-in", cookie.encode())[:18])
        return hmac.compare_digest(str(given), expected)
