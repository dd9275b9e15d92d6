"""The store port: what services need from storage, in domain terms.

Two adapters implement it (SQLite and DynamoDB) and pass one contract suite
(tests/contract). Every write that changes a resource takes the history entry that
describes it and stores both atomically, or neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from app.benches.domain import Bench, Heartbeat
from app.history.domain import HistoryEntry

T = TypeVar("T")


class StoreError(Exception):
    pass


class AlreadyExists(StoreError):
    pass


class ItemNotFound(StoreError):
    pass


class VersionMismatch(StoreError, Generic[T]):
    """A conditional write lost: the stored item is not at the version the caller read."""

    def __init__(self, current: T) -> None:
        super().__init__("version mismatch")
        self.current = current


class StoreUnavailable(StoreError):
    pass


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    # Where the next page starts (the sort key of the last item), None on the last page.
    next_after: str | None


@dataclass(frozen=True, slots=True)
class BenchQuery:
    capabilities: frozenset[str] = frozenset()
    type: str | None = None
    admin_state: str | None = None


class BenchRepository(Protocol):
    async def create(self, bench: Bench, entry: HistoryEntry) -> None:
        """Store a new bench. Raises AlreadyExists when the id is taken."""

    async def get(self, bench_id: str) -> Bench | None: ...

    async def update(self, current: Bench, bench: Bench, entry: HistoryEntry) -> None:
        """Replace ``current`` (as the caller read it) by ``bench``, if still at its version.

        Raises ItemNotFound, or VersionMismatch carrying the stored bench. Heartbeat
        fields are left as they are.
        """

    async def record_heartbeat(self, bench_id: str, heartbeat: Heartbeat) -> Bench:
        """One write; no version change, no history. Raises ItemNotFound."""

    async def find(self, query: BenchQuery, limit: int, after: str | None) -> Page[Bench]:
        """Benches matching every filter, ordered by bench_id, starting after ``after``."""


class HistoryRepository(Protocol):
    async def find(
        self, entity_type: str, entity_id: str, limit: int, after: int | None
    ) -> Page[HistoryEntry]:
        """Entries oldest first; ``after`` is the last version already seen."""


class Store(Protocol):
    # Read-only in the protocol, so adapters may expose their concrete repositories.
    @property
    def benches(self) -> BenchRepository: ...

    @property
    def history(self) -> HistoryRepository: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot serve requests."""

    async def close(self) -> None: ...
