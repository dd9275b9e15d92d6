"""What the HTTP machinery needs from the application's state, and nothing more.

The application builds one typed state object in its lifespan (app/state.py); the
modules here see it through this protocol, so app/http knows no feature and no store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from app.http.auth import TokenRegistry
    from app.http.pagination import CursorCodec
    from app.http.rate_limit import RateLimiter

# The one attribute of ``app.state`` the lifespan sets.
STATE_ATTRIBUTE = "orchestrator"


class HttpState(Protocol):
    @property
    def tokens(self) -> TokenRegistry: ...

    @property
    def rate_limiter(self) -> RateLimiter: ...

    @property
    def cursor_codec(self) -> CursorCodec: ...


def http_state(connection: HTTPConnection) -> HttpState:
    state: HttpState = getattr(connection.app.state, STATE_ATTRIBUTE)
    return state
