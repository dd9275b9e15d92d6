"""The tokens file (``ORCH_TOKENS_FILE``): opaque bearer tokens, reloaded while running.

Adding a user must not need a restart, and a request must not pay for a file read: the
file's mtime, size and inode are compared at most once per ``check_interval_s`` on the
request path (no thread), and SIGHUP forces a reload. A file that fails to load keeps the
tokens loaded before and logs an error naming where it is wrong, never what it holds.
Tokens are kept as SHA-256 digests only; a leaked tokens file does not leak tokens.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import BaseModel, TypeAdapter, ValidationError, model_validator

from app.identity import Principal, Role

logger = logging.getLogger("app.http.auth")

# Seconds since some origin; the registry only compares two readings.
Ticker = Callable[[], float]
_Stamp = tuple[int, int, int]  # mtime_ns, size, inode


class TokenRecord(BaseModel):
    token_sha256: str
    subject: str
    role: Role
    bench_id: str | None = None
    team: str | None = None

    @model_validator(mode="after")
    def _agents_have_a_bench(self) -> TokenRecord:
        if (self.role is Role.AGENT) != (self.bench_id is not None):
            raise ValueError("bench_id is required for agents and only for agents")
        self.token_sha256 = self.token_sha256.lower()
        return self


_token_list = TypeAdapter(list[TokenRecord])


@functools.lru_cache(maxsize=1024)
def token_digest(token: str) -> str:
    # Remembered for the callers of late (agents and pipelines send the same token on
    # every request): a dict lookup where a hash and its hex text were made each time.
    return hashlib.sha256(token.encode()).hexdigest()


def _index(records: Iterable[TokenRecord]) -> dict[str, Principal]:
    return {
        record.token_sha256: Principal(record.subject, record.role, record.bench_id, record.team)
        for record in records
    }


def _stamp(path: Path) -> _Stamp | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size, status.st_ino)


def _where(error: ValidationError) -> str:
    """The locations and messages of a validation error, without the input values."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '<file>'}: {item['msg']}"
        for item in error.errors(include_input=False, include_url=False)
    )


class TokenFile:
    """The digests of the tokens file, and the principal each one stands for."""

    def __init__(
        self,
        records: Iterable[TokenRecord] = (),
        *,
        path: Path | None = None,
        tick: Ticker | None = None,
        check_interval_s: float = 1.0,
    ) -> None:
        self._by_digest = _index(records)
        self._path = path
        self._tick = tick
        self._interval = check_interval_s
        self._stamp = None if path is None else _stamp(path)
        self._checked_at = None if tick is None else tick()

    @classmethod
    def load(
        cls, path: Path, *, tick: Ticker | None = None, check_interval_s: float = 1.0
    ) -> TokenFile:
        """Read the file at start-up; a missing or broken file refuses to start."""
        if not path.exists():
            raise RuntimeError(
                f"tokens file {path} does not exist: set ORCH_TOKENS_FILE, or run "
                "'orchestrator dev-tokens' to make one for development"
            )
        stamp = _stamp(path)
        try:
            records = _token_list.validate_json(path.read_bytes())
        except ValidationError as error:
            raise RuntimeError(f"tokens file {path} is not valid: {_where(error)}") from None
        tokens = cls(records, path=path, tick=tick, check_interval_s=check_interval_s)
        tokens._stamp = stamp
        return tokens

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, token: str) -> Principal | None:
        self._reload_if_changed()
        return self._by_digest.get(token_digest(token))

    def reload(self) -> bool:
        """Read the file again (SIGHUP). False, with an error logged, when it cannot be
        loaded: the tokens loaded before stay in force."""
        if self._path is None:
            return False
        stamp = _stamp(self._path)
        self._stamp = stamp  # a broken file is reported once, not on every check
        try:
            records = _token_list.validate_json(self._path.read_bytes())
        except OSError as error:
            logger.error(
                "tokens file %s cannot be read (%s); keeping the %d tokens loaded before",
                self._path,
                error.strerror or type(error).__name__,
                len(self._by_digest),
            )
            return False
        except ValidationError as error:
            logger.error(
                "tokens file %s is not valid (%s); keeping the %d tokens loaded before",
                self._path,
                _where(error),
                len(self._by_digest),
            )
            return False
        self._by_digest = _index(records)
        logger.info("tokens file %s loaded: %d tokens", self._path, len(self._by_digest))
        return True

    def _reload_if_changed(self) -> None:
        if self._path is None or self._tick is None:
            return
        now = self._tick()
        # A clock set back counts as time passed: better one stat too many than none.
        if self._checked_at is not None and 0 <= now - self._checked_at < self._interval:
            return
        self._checked_at = now
        if _stamp(self._path) != self._stamp:
            self.reload()


def reload_on_sighup(reload: Callable[[], object]) -> Callable[[], None]:
    """Call ``reload`` on SIGHUP, in the running loop; returns what removes the handler.
    Only the main thread may handle signals: elsewhere (an embedding test) nothing is done."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGHUP)
    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (NotImplementedError, RuntimeError, ValueError):
        return lambda: None

    def remove() -> None:
        loop.remove_signal_handler(signal.SIGHUP)
        if previous is not None:  # the loop resets to SIG_DFL; put back what was there
            signal.signal(signal.SIGHUP, previous)

    return remove
