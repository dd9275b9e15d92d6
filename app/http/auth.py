"""Bearer-token identity: who is calling, and which roles may call what.

A bearer token is either opaque, looked up in the tokens file (``token_file.py``), or a
JWT of a trusted issuer (``jwt_bearer.py``); its shape (three base64url parts) says which.
No token ever appears in a response or a log line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from app.http.exceptions import ProblemException
from app.http.jwks import JwksUnavailable
from app.http.jwt_bearer import InvalidJwt, JwtVerifier, looks_like_jwt
from app.http.rate_limit import refuse_if_limited
from app.http.state import http_state
from app.http.token_file import Ticker, TokenFile, TokenRecord, token_digest
from app.identity import Principal, Role
from app.settings import JwtIssuer

__all__ = [
    "PrincipalDep",
    "TokenRecord",
    "TokenRegistry",
    "authenticate_request",
    "current_principal",
    "require_roles",
    "token_digest",
    "write_dev_tokens",
]

logger = logging.getLogger("app.http.auth")
_REALM = 'Bearer realm="bench-orchestrator"'


class TokenRegistry:
    """Every bearer credential the service accepts: the tokens file and trusted issuers."""

    def __init__(self, tokens: TokenFile, jwt: JwtVerifier | None = None) -> None:
        self.tokens = tokens
        self.jwt = jwt

    @classmethod
    async def open(
        cls, tokens_file: Path, issuers: Sequence[JwtIssuer], *, tick: Ticker
    ) -> TokenRegistry:
        """Load the tokens file and every issuer's JWKS file; either broken refuses to start."""
        tokens = TokenFile.load(tokens_file, tick=tick)
        verifier = JwtVerifier(issuers, tick=tick) if issuers else None
        if verifier is not None:
            try:
                await verifier.start()
            except BaseException:
                await verifier.aclose()
                raise
        return cls(tokens, verifier)

    def reload(self) -> bool:
        """Re-read the tokens file now (SIGHUP); keeps the old tokens if it is broken."""
        return self.tokens.reload()

    async def aclose(self) -> None:
        if self.jwt is not None:
            await self.jwt.aclose()

    async def authenticate(self, token: str) -> Principal:
        """The caller the token stands for; a 401 (or 503) ProblemException otherwise."""
        if not looks_like_jwt(token):
            principal = self.tokens.authenticate(token)
            if principal is None:
                raise _unauthorized("the token is not known", error="invalid_token")
            return principal
        if self.jwt is None:
            raise _unauthorized("this service trusts no JWT issuer", error="invalid_token")
        try:
            return await self.jwt.authenticate(token)
        except InvalidJwt as refused:
            logger.info("bearer JWT refused: %s", refused.detail)
            raise _unauthorized(refused.detail, error="invalid_token") from None
        except JwksUnavailable as unavailable:
            raise ProblemException(
                503,
                "the keys of the token's issuer cannot be fetched now; retry later",
                headers={"Retry-After": str(round(unavailable.retry_after_s))},
            ) from None


def _unauthorized(detail: str, *, error: str | None = None) -> ProblemException:
    challenge = _REALM if error is None else f'{_REALM}, error="{error}"'
    return ProblemException(401, detail, headers={"WWW-Authenticate": challenge})


# Where a request keeps the caller once authenticated: every dependency that asks for
# the caller (role check, actor) gets it from there.
_PRINCIPAL_SCOPE_KEY = "orch.principal"


async def current_principal(request: Request) -> Principal:
    """The authenticated caller, rate-limited once per request.

    One dependency node, not a tree: FastAPI resolves every node of a route's tree on
    every request, and authentication sits on every /v1 route. The OpenAPI document
    declares the bearer scheme for them (``openapi.py``)."""
    known: Principal | None = request.scope.get(_PRINCIPAL_SCOPE_KEY)
    if known is not None:
        return known
    header = request.headers.get("authorization")
    if header is None:
        raise _unauthorized("send Authorization: Bearer <token>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("the Authorization header must be 'Bearer <token>'")
    return await authenticate_request(request, token.strip())


async def authenticate_request(request: Request, token: str) -> Principal:
    """The caller ``token`` stands for, rate-limited, kept as this request's caller: the
    role checks (``require_roles``) and the actor of the request see it. The bearer header
    comes here, and so does the token a dashboard session holds (``app/ui/session.py``)."""
    state = http_state(request)
    principal = await state.tokens.authenticate(token)
    refuse_if_limited(state.rate_limiter, principal.subject)
    request.scope[_PRINCIPAL_SCOPE_KEY] = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that admits only the given roles (403 for the others)."""
    allowed = frozenset(roles)

    async def check(request: Request) -> Principal:
        principal = await current_principal(request)
        if principal.role not in allowed:
            raise ProblemException(
                403,
                f"role {principal.role.value!r} may not do this; "
                f"allowed: {', '.join(sorted(role.value for role in allowed))}",
            )
        return principal

    return check


def write_dev_tokens(tokens_file: Path, env_file: Path) -> dict[str, str] | None:
    """Make a development tokens file, unless one exists. Returns the tokens it made."""
    import secrets

    if tokens_file.exists():
        return None
    people = {
        "ADMIN_TOKEN": ("admin", Role.ADMIN, None),
        "USER_TOKEN": ("alice", Role.USER, None),
        "USER2_TOKEN": ("bob", Role.USER, None),
        "CI_TOKEN": ("ci-pipeline", Role.CI, None),
        "AGENT_TOKEN": ("agent-rig-1", Role.AGENT, "rig-1"),
    }
    made: dict[str, str] = {}
    records = []
    for variable, (subject, role, bench_id) in people.items():
        token = secrets.token_urlsafe(24)
        made[variable] = token
        record = {"token_sha256": token_digest(token), "subject": subject, "role": role.value}
        if bench_id is not None:
            record["bench_id"] = bench_id
        records.append(record)
    tokens_file.parent.mkdir(parents=True, exist_ok=True)
    tokens_file.write_text(json.dumps(records, indent=2) + "\n")
    # Plain tokens for the developer's shell (`source var/dev-tokens.env`); never for production.
    env_file.write_text("".join(f"export {name}={token}\n" for name, token in made.items()))
    env_file.chmod(0o600)
    return made
