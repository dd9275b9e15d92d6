"""The public keys of one JWT issuer (its JWKS), from a file or a URL, cached.

Issuers rotate keys: a token naming an unknown ``kid`` refetches the set, at most once per
``refresh_min_s`` so that a flood of forged ``kid``s cannot make us hammer the issuer;
otherwise the set lives ``cache_s``. A failed fetch keeps the keys fetched before. Only
asymmetric signing keys of the algorithms we accept are kept: a symmetric (``oct``) key
in a JWKS would turn a published key into an HMAC secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt

logger = logging.getLogger("app.http.auth")

ACCEPTED_ALGORITHMS = frozenset({"RS256", "ES256"})
_MAX_JWKS_BYTES = 1024 * 1024
_FETCH_TIMEOUT_S = 5.0


class JwksUnavailable(Exception):
    """No key set could be loaded yet, and no fetch is allowed now."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("the issuer's keys are unavailable")
        self.retry_after_s = retry_after_s


class JwksSource(Protocol):
    label: str

    async def fetch(self) -> bytes: ...


class FileSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = str(path)

    async def fetch(self) -> bytes:
        return await asyncio.to_thread(self.path.read_bytes)


class UrlSource:
    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.url = url
        self.label = url
        self._client = client

    async def fetch(self) -> bytes:
        response = await self._client.get(self.url, timeout=_FETCH_TIMEOUT_S)
        response.raise_for_status()
        if len(response.content) > _MAX_JWKS_BYTES:
            raise ValueError(f"the JWKS is larger than {_MAX_JWKS_BYTES} bytes")
        return response.content


def parse_jwks(data: bytes) -> dict[str | None, jwt.PyJWK]:
    """The usable signing keys of a JWKS document, by ``kid``; ValueError if none."""
    document: Any = json.loads(data)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('a JWKS is an object with a "keys" list')
    keys: dict[str | None, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") not in ("RSA", "EC"):
            continue
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError):
            continue
        if key.algorithm_name in ACCEPTED_ALGORITHMS:
            kid = entry.get("kid")
            keys[kid if isinstance(kid, str) else None] = key
    if not keys:
        raise ValueError("the JWKS holds no usable RS256 or ES256 signing key")
    return keys


class JwksCache:
    """One issuer's key set. Three clocks: the set expires ``cache_s`` after it loaded; an
    unknown ``kid`` refetches at most once per ``refresh_min_s``; and after a failed fetch
    nothing is fetched for ``refresh_min_s``."""

    def __init__(
        self,
        source: JwksSource,
        *,
        cache_s: float,
        refresh_min_s: float,
        tick: Callable[[], float],
    ) -> None:
        self.source = source
        self._cache_s = cache_s
        self._refresh_min_s = refresh_min_s
        self._tick = tick
        self._keys: dict[str | None, jwt.PyJWK] | None = None
        self._loaded_at = 0.0
        self._failed_at: float | None = None  # the last fetch, if it failed
        self._kid_refetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Load now, raising on failure (a JWKS file is checked at start-up)."""
        now = self._tick()
        self._keys = parse_jwks(await self.source.fetch())
        self._loaded_at = now

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The key the token names; None when the set (refetched if allowed) lacks it.
        JwksUnavailable when no set has ever loaded and none may be fetched now."""
        now = self._tick()
        fetched = False
        if self._stale(now):
            fetched = await self._refresh(now, for_kid=False)
        found = self._find(kid)
        if found is None and not fetched and self._keys is not None:
            await self._refresh(now, for_kid=True)
            found = self._find(kid)
        if self._keys is None:
            waited = 0.0 if self._failed_at is None else _elapsed(now, self._failed_at)
            raise JwksUnavailable(max(1.0, self._refresh_min_s - waited))
        return found

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if self._keys is None:
            return None
        if kid is None:
            # No kid: only a set of one key leaves no doubt which key is meant.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _stale(self, now: float) -> bool:
        return self._keys is None or _elapsed(now, self._loaded_at) >= self._cache_s

    def _backing_off(self, now: float) -> bool:
        return self._failed_at is not None and _elapsed(now, self._failed_at) < self._refresh_min_s

    def _may_refetch_for_kid(self, now: float) -> bool:
        last = self._kid_refetched_at
        return last is None or _elapsed(now, last) >= self._refresh_min_s

    async def _refresh(self, now: float, *, for_kid: bool) -> bool:
        """Fetch the set if allowed now; True when this call fetched (or tried to)."""
        async with self._lock:
            # Re-checked under the lock: a concurrent request may just have fetched.
            if self._backing_off(now):
                return False
            if for_kid and not self._may_refetch_for_kid(now):
                return False
            if not for_kid and not self._stale(now):
                return False
            if for_kid:
                self._kid_refetched_at = now
            try:
                keys = parse_jwks(await self.source.fetch())
            except (OSError, ValueError, httpx.HTTPError) as error:
                self._failed_at = now
                logger.error(
                    "JWKS %s cannot be loaded (%s); keeping the %d keys loaded before",
                    self.source.label,
                    _describe(error),
                    0 if self._keys is None else len(self._keys),
                )
                return True
            self._keys, self._loaded_at, self._failed_at = keys, now, None
            logger.info("JWKS %s loaded: %d keys", self.source.label, len(keys))
            return True


def _elapsed(now: float, then: float) -> float:
    # A clock set back counts as a long time passed.
    return now - then if now >= then else float("inf")


def _describe(error: Exception) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code}"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {error}"
