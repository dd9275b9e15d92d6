"""JWT bearer tokens from trusted issuers: CI systems' OIDC ID tokens, the corporate IdP.

CI jobs get short-lived signed tokens from their CI system (GitLab ``id_tokens``, GitHub
Actions ``id-token: write``); people get them from the IdP. Neither needs a line in the
tokens file. A token is accepted only if its ``iss`` is one of ``ORCH_JWT_ISSUERS``, its
algorithm is RS256/ES256 and one the issuer allows, its signature verifies with a key of
that issuer's JWKS (never a key the token itself points to: ``jku``, ``x5u`` and ``jwk``
headers are ignored), and PyJWT accepts ``exp``, ``iat``, ``nbf``, ``aud`` and ``iss`` with
the issuer's leeway. The issuer's claim mapping then makes the principal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from string import Formatter
from typing import Any

import httpx
import jwt

from app.http.jwks import ACCEPTED_ALGORITHMS, FileSource, JwksCache, JwksSource, UrlSource
from app.identity import Principal, Role
from app.settings import FixedRole, JwtIssuer

# Three base64url parts; the last is empty in an unsigned (``alg: none``) token.
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_BENCH_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_MAX_SUBJECT = 256
_REQUIRED = ["exp", "iat", "iss", "aud"]

# PyJWT's verdicts, most specific first, as the problem detail a client reads.
_REFUSALS: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet (nbf or iat in the future)"),
    (jwt.InvalidAudienceError, "the token is not meant for this service (aud)"),
    (jwt.InvalidIssuerError, "the token's issuer is not trusted"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.InvalidAlgorithmError, "the token's signing algorithm is not accepted"),
)


def looks_like_jwt(token: str) -> bool:
    return _JWT_SHAPE.fullmatch(token) is not None


class InvalidJwt(Exception):
    """A JWT this service does not accept; ``detail`` says why, without the token."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _text(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _subject(issuer: JwtIssuer, claims: dict[str, Any]) -> str:
    if "{" in issuer.subject:  # a template: "{project_path}@{ref}"
        parts = [(literal, field) for literal, field, _, _ in Formatter().parse(issuer.subject)]
    else:  # a claim name
        parts = [("", issuer.subject)]
    subject = ""
    for literal, field in parts:
        subject += literal
        if field:
            value = _text(claims, field)
            if not value:
                raise InvalidJwt(f"the token lacks the {field!r} claim its subject is made of")
            subject += value
    if not subject or len(subject) > _MAX_SUBJECT or not subject.isprintable():
        raise InvalidJwt(f"the token's subject must be 1 to {_MAX_SUBJECT} printable characters")
    return subject


def _role(issuer: JwtIssuer, claims: dict[str, Any]) -> Role:
    if isinstance(issuer.role, FixedRole):
        return issuer.role.fixed
    value = _text(claims, issuer.role)
    if value not in {role.value for role in Role}:
        raise InvalidJwt(
            f"the token's {issuer.role!r} claim names no role of this service "
            f"({', '.join(role.value for role in Role)})"
        )
    return Role(value)


def principal_from_claims(issuer: JwtIssuer, claims: dict[str, Any]) -> Principal:
    """The issuer's claim mapping applied to verified claims."""
    subject = _subject(issuer, claims)
    role = _role(issuer, claims)
    bench_id = None
    if role is Role.AGENT:
        bench_id = _text(claims, issuer.bench_id) if issuer.bench_id else None
        if bench_id is None or _BENCH_ID.fullmatch(bench_id) is None:
            where = f"its {issuer.bench_id!r} claim" if issuer.bench_id else "a bench_id claim"
            raise InvalidJwt(f"an agent token must name a valid bench id in {where}")
    team = (_text(claims, issuer.team) or None) if issuer.team else None
    return Principal(subject, role, bench_id, team)


def _refusal(error: jwt.InvalidTokenError) -> str:
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the token lacks the required {error.claim!r} claim"
    for kind, detail in _REFUSALS:
        if isinstance(error, kind):
            return detail
    return "the token is not a valid JWT"


class JwtVerifier:
    """Verifies JWTs of the configured issuers, each with its cached JWKS."""

    def __init__(self, issuers: Sequence[JwtIssuer], *, tick: Callable[[], float]) -> None:
        needs_http = any(issuer.jwks_url is not None for issuer in issuers)
        self._client = httpx.AsyncClient() if needs_http else None
        self._issuers: dict[str, tuple[JwtIssuer, JwksCache]] = {}
        for issuer in issuers:
            source: JwksSource
            if issuer.jwks_file is not None:
                source = FileSource(issuer.jwks_file)
            else:
                assert issuer.jwks_url is not None and self._client is not None
                source = UrlSource(issuer.jwks_url, self._client)
            cache = JwksCache(
                source,
                cache_s=issuer.jwks_cache_s,
                refresh_min_s=issuer.jwks_refresh_min_s,
                tick=tick,
            )
            self._issuers[issuer.issuer] = (issuer, cache)

    async def start(self) -> None:
        """Load every JWKS file now: a broken one refuses to start. URLs load on first use,
        so that the service starts while an issuer is unreachable."""
        for issuer, cache in self._issuers.values():
            if issuer.jwks_file is None:
                continue
            try:
                await cache.load()
            except (OSError, ValueError) as error:
                raise RuntimeError(
                    f"JWKS file {issuer.jwks_file} of issuer {issuer.issuer!r} cannot be "
                    f"loaded: {error}"
                ) from None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def authenticate(self, token: str) -> Principal:
        """The principal of a valid token; InvalidJwt (or JwksUnavailable) otherwise."""
        try:
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise InvalidJwt("the token is not a well-formed JWT") from None
        header: dict[str, Any] = unverified["header"]
        # Refused before anything else, whatever the issuer: none, HS*, and all the others.
        if header.get("alg") not in ACCEPTED_ALGORITHMS:
            raise InvalidJwt("the token's signing algorithm is not accepted (RS256, ES256)")
        iss = unverified["payload"].get("iss")
        if not isinstance(iss, str) or iss not in self._issuers:
            raise InvalidJwt("the token's issuer is not trusted")
        issuer, cache = self._issuers[iss]
        if header["alg"] not in issuer.algorithms:
            raise InvalidJwt("the token's signing algorithm is not accepted for its issuer")
        kid = header.get("kid")
        key = await cache.key(kid if isinstance(kid, str) else None)
        if key is None:
            raise InvalidJwt("no key of the token's issuer matches its key id (kid)")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=list(issuer.algorithms),
                audience=issuer.audience,
                issuer=issuer.issuer,
                leeway=issuer.leeway_s,
                options={
                    "require": _REQUIRED,
                    "verify_signature": True,
                    "verify_exp": True,
                    "verify_nbf": True,
                    "verify_iat": True,
                    "verify_aud": True,
                    "verify_iss": True,
                },
            )
        except jwt.InvalidTokenError as error:
            raise InvalidJwt(_refusal(error)) from None
        return principal_from_claims(issuer, claims)
