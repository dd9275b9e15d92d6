"""Optimistic concurrency for every resource: read, decide, write conditioned on what was read.

With If-Match the client's version must still be the stored one (412 otherwise, with the
current version). Without it, a lost race is retried on fresh state a few times: the
write is still conditioned on the version the decision was made from.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from app.errors import NotFound, PreconditionFailed, PreconditionRequired, Unavailable
from app.store.base import ItemNotFound, VersionMismatch
from app.versioning import VersionExpectation

# Lost races before giving up with 503. Each lost race means another change committed,
# so a handful settles any realistic burst (20 agents claiming at once included).
MAX_ATTEMPTS = 8

T = TypeVar("T")


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


V = TypeVar("V", bound=Versioned)


def check_expectation(what: str, expectation: VersionExpectation | None, version: int) -> None:
    """After the resource was found: a missing If-Match is 428, a stale one 412."""
    if expectation is None:
        return
    if expectation.missing:
        raise PreconditionRequired(
            f"changing {what} needs If-Match with the ETag you last read (it is {version})"
        )
    if not expectation.allows(version):
        raise stale(what, version)


def stale(what: str, version: int) -> PreconditionFailed:
    return PreconditionFailed(
        f"{what} is at version {version}; re-read it and retry with its ETag", version
    )


async def retrying(attempt: Callable[[], Awaitable[T]], what: str) -> T:
    """Run a read-decide-conditional-write ``attempt`` again when a version it read moved.

    ``attempt`` re-reads everything it decides from; a VersionMismatch it lets through
    means "decide again on fresh state". Anything else ends the loop.
    """
    for _ in range(MAX_ATTEMPTS):
        try:
            return await attempt()
        except VersionMismatch:
            continue
    raise Unavailable(f"{what} is changing too fast to update; retry", retry_after_s=1)


async def change_versioned(
    *,
    load: Callable[[], Awaitable[V | None]],
    decide: Callable[[V], V],
    write: Callable[[V, V], Awaitable[None]],
    expectation: VersionExpectation | None,
    what: str,
    authorize: Callable[[V], None] | None = None,
) -> V:
    """One versioned item: returns the stored result; ``decide`` returning its argument
    means "no change". ``authorize`` runs on the found item before its preconditions, so a
    caller who may not change it learns 403, never whether their If-Match was right."""

    async def attempt() -> V:
        current = await load()
        if current is None:
            raise NotFound(f"{what} does not exist")
        if authorize is not None:
            authorize(current)
        check_expectation(what, expectation, current.version)
        updated = decide(current)
        if updated is current:
            return current
        try:
            await write(current, updated)
        except ItemNotFound as error:
            raise NotFound(f"{what} does not exist") from error
        except VersionMismatch as mismatch:
            # The same version: something that is not configuration moved (a milestone
            # announced), so the caller's If-Match still holds; decide again.
            moved = mismatch.current.version != current.version
            if moved and expectation is not None and not expectation.any_version:
                raise stale(what, mismatch.current.version) from mismatch
            raise
        return updated

    return await retrying(attempt, what)
