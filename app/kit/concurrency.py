"""Optimistic concurrency for every resource: read, decide, write conditioned on what was read.

With If-Match the client's version must still be the stored one (412 otherwise, with the
current version). Without it, a lost race is retried on fresh state a few times: the
write is still conditioned on the version the decision was made from.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from app.errors import NotFound, PreconditionFailed, Unavailable
from app.store.base import ItemNotFound, VersionMismatch
from app.versioning import VersionExpectation

MAX_ATTEMPTS = 5


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


V = TypeVar("V", bound=Versioned)


def _stale(version: int) -> PreconditionFailed:
    return PreconditionFailed(
        f"the resource is at version {version}; re-read it and retry with its ETag", version
    )


async def change_versioned(
    *,
    load: Callable[[], Awaitable[V | None]],
    decide: Callable[[V], V],
    write: Callable[[V, V], Awaitable[None]],
    expectation: VersionExpectation | None,
    what: str,
) -> V:
    """Returns the stored result; ``decide`` returning its argument means "no change"."""
    for _ in range(MAX_ATTEMPTS):
        current = await load()
        if current is None:
            raise NotFound(f"{what} does not exist")
        if expectation is not None and not expectation.allows(current.version):
            raise _stale(current.version)
        updated = decide(current)
        if updated is current:
            return current
        try:
            await write(current, updated)
        except ItemNotFound as error:
            raise NotFound(f"{what} does not exist") from error
        except VersionMismatch as mismatch:
            if expectation is not None and not expectation.any_version:
                raise _stale(mismatch.current.version) from mismatch
            continue
        return updated
    raise Unavailable(f"{what} is changing too fast to update; retry", retry_after_s=1)
