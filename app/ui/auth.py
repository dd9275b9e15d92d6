"""Who is signed in to the dashboard, and the CSRF check of every form that changes
something.

``signed_in`` reads the session cookie and resolves its token with the API's own
``authenticate_request`` (the tokens file or a JWT issuer, rate-limited), which keeps the
caller as the request's principal: the API's role dependencies (``Booker``, ``Holder``,
...) and ``ActorDep`` then work on /ui routes unchanged, and the services apply the same
ownership rules. The page can do exactly what the token can.
"""

from __future__ import annotations

import hashlib
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Depends, Request

from app.http.auth import authenticate_request
from app.http.exceptions import ProblemException
from app.http.state import STATE_ATTRIBUTE
from app.state import AppState
from app.ui.session import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, Session, SessionCodec

_CODEC_ATTRIBUTE = "orchestrator_ui_sessions"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


class SignInRequired(Exception):
    """No valid session: pages answer 303 to the sign-in form, scripts 401."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


def app_state(request: Request) -> AppState:
    state: AppState = getattr(request.app.state, STATE_ATTRIBUTE)
    return state


def sessions(request: Request) -> SessionCodec:
    """The app's session codec, made on first use from the settings and the cursor key."""
    codec: SessionCodec | None = getattr(request.app.state, _CODEC_ATTRIBUTE, None)
    if codec is None:
        state = app_state(request)
        secret = state.settings.ui_session_secret
        key = (
            hashlib.sha256(b"bench-orchestrator ui session\n" + secret.encode()).digest()
            if secret
            else state.cursor_codec.derived_key("ui-session")
        )
        codec = SessionCodec(key, state.settings.ui_session_ttl_min * 60.0)
        setattr(request.app.state, _CODEC_ATTRIBUTE, codec)
    return codec


async def signed_in(request: Request) -> Session:
    session = sessions(request).read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise SignInRequired()
    try:
        await authenticate_request(request, session.token)
    except ProblemException as refused:
        if refused.status == 401:
            raise SignInRequired(f"your token is no longer accepted: {refused.detail}") from None
        raise
    return session


SessionDep = Annotated[Session, Depends(signed_in)]


async def read_form(request: Request) -> dict[str, str]:
    """A form's fields (the first value of each), as browsers and fetch() send them."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM_MEDIA_TYPE:
        raise ProblemException(415, f"send the form as {FORM_MEDIA_TYPE}")
    try:
        text = (await request.body()).decode()
    except UnicodeDecodeError:
        raise ProblemException(400, "the form is not UTF-8") from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=64)
    except ValueError:
        raise ProblemException(400, "the form has too many fields") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


async def checked_form(request: Request, session: SessionDep) -> dict[str, str]:
    """The form of a change, once its CSRF token (field ``csrf`` or header
    ``X-CSRF-Token``) is the session's: checked before the role and the state are."""
    form = await read_form(request)
    given = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    if not sessions(request).csrf_valid(session, given):
        raise ProblemException(
            403,
            "the form's CSRF token is missing or not this session's: reload the page and try again",
            slug="csrf-token",
        )
    return form


FormDep = Annotated[dict[str, str], Depends(checked_form)]
