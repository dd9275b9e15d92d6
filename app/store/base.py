"""The store port: what services need from storage, in domain terms.

Two adapters implement it (SQLite and DynamoDB) and pass one contract suite
(tests/contract). Every write that changes a resource takes the history entry that
describes it and stores both atomically, or neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from app.benches.domain import Bench, Heartbeat, Liveness
from app.events.domain import DomainEvent
from app.executions.domain import Execution, ExecutionStatus, Task
from app.history.domain import HistoryEntry
from app.quotas.domain import Quota, QuotaCheck, QuotaKind
from app.reservations.domain import AtRisk, BookedSlot, Reservation
from app.timeutil import to_iso
from app.webhooks.domain import Delivery, Webhook

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
class IdempotencyRecord:
    """A create's Idempotency-Key, stored in the same transaction as what it created."""

    key: str  # "<caller subject>\n<operation>\n<client key>"
    fingerprint: str  # of the request body: the same key with another body is refused
    resource_id: str
    created_at: datetime
    expires_at: datetime


class IdempotencyKeyTaken(StoreError):
    """A create's key record already exists (and is not expired)."""

    def __init__(self, record: IdempotencyRecord) -> None:
        super().__init__(record.key)
        self.record = record


class WindowTaken(StoreError):
    """A booking collided with reservations holding the bench (checked atomically)."""

    def __init__(self, conflicts: list[BookedSlot]) -> None:
        super().__init__("window taken")
        self.conflicts = conflicts


class BenchRetired(StoreError):
    """A heartbeat reached a retired bench (checked in the same write): nothing changed."""

    def __init__(self, bench: Bench) -> None:
        super().__init__("bench retired")
        self.bench = bench


class BenchNotBookable(StoreError):
    """The bench is missing (``bench`` is None) or not active at the moment of booking."""

    def __init__(self, bench: Bench | None) -> None:
        super().__init__("bench not bookable")
        self.bench = bench


class PositionNotKept(StoreError):
    """A position in the event log older than the log keeps, or one it never gave."""


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


@dataclass(frozen=True, slots=True)
class ReservationQuery:
    """Needs ``bench_id``, ``user_id`` or ``team``: each is an index, and nothing here
    scans."""

    bench_id: str | None = None
    user_id: str | None = None
    team: str | None = None
    # Reservations whose window ends after ``ends_after`` and starts before ``starts_before``.
    ends_after: datetime | None = None
    starts_before: datetime | None = None
    # Only those holding the bench (booked), as a calendar shows them.
    holding_only: bool = False


class BenchRepository(Protocol):
    async def create(
        self, bench: Bench, entry: HistoryEntry, idempotency: IdempotencyRecord | None = None
    ) -> None:
        """Store a new bench, with no liveness recorded yet (offline, no transitions).
        Raises AlreadyExists when the id is taken, and IdempotencyKeyTaken when
        ``idempotency``'s key is in use (and not expired)."""

    async def get(self, bench_id: str) -> Bench | None: ...

    async def update(self, current: Bench, bench: Bench, entry: HistoryEntry) -> None:
        """Replace ``current`` (as the caller read it) by ``bench``, if still at its version.

        Raises ItemNotFound, or VersionMismatch carrying the stored bench. Heartbeat and
        liveness fields (``recorded_liveness``, ``liveness_changes``) are left as stored:
        an admin's change made from an older read never undoes a recorded transition.
        """

    async def record_liveness(
        self, current: Bench, liveness: Liveness, entry: HistoryEntry
    ) -> None:
        """Record a liveness transition: ``recorded_liveness`` becomes ``liveness`` and
        ``liveness_changes`` one more than ``current``'s, if the stored count is still
        ``current.liveness_changes``; ``entry`` (its version that new count) is stored in
        the same transaction. Version, updated_at and configuration stay as they are.

        Raises ItemNotFound, or VersionMismatch carrying the stored bench when another
        transition was recorded since ``current`` was read.
        """

    async def record_heartbeat(self, bench_id: str, heartbeat: Heartbeat) -> Bench:
        """One write; no version change, no history. A heartbeat with a health report keeps
        it, its run of equal reports one longer (``after_report``). Raises ItemNotFound,
        or BenchRetired (with the stored bench) when the bench is retired."""

    async def record_run_outcome(self, bench_id: str, infrastructure_failure: bool) -> Bench:
        """One write, no version change: the count of consecutive infrastructure failures
        one more, or back to 0; returns the bench. Raises ItemNotFound."""

    async def restart_failure_runs(self, bench_id: str) -> None:
        """Both runs of consecutive failures (health reports, runs) back to 0: counting
        starts again, say after an admin ended a quarantine. No version change."""

    async def request_health_check(self, bench_id: str, due: datetime) -> None:
        """Ask the bench's agent (in its heartbeats' answers) to check health before
        ``due``. No version change; nothing happens when the bench is gone."""

    async def find(self, query: BenchQuery, limit: int, after: str | None) -> Page[Bench]:
        """Benches matching every filter, ordered by bench_id, starting after ``after``."""


class ReservationRepository(Protocol):
    async def create(
        self,
        reservation: Reservation,
        entry: HistoryEntry,
        idempotency: IdempotencyRecord | None = None,
        quota: QuotaCheck | None = None,
    ) -> None:
        """Book atomically: the bench exists and is active, no booked reservation of the
        bench overlaps the window, the idempotency key is unused, and ``quota`` (when
        given) passes on the windows its user and team hold over ``quota.span``, read in
        the same write (``quota.check`` raises QuotaExceeded).

        Raises BenchNotBookable, WindowTaken (with every overlapping slot),
        IdempotencyKeyTaken (with the stored record), QuotaExceeded, or StoreUnavailable
        after too many lost races.
        """

    async def get(self, reservation_id: str) -> Reservation | None: ...

    async def update(
        self,
        current: Reservation,
        updated: Reservation,
        entry: HistoryEntry,
        quota: QuotaCheck | None = None,
    ) -> None:
        """Replace ``current`` (as read) by ``updated`` if still at ``current.version``
        (and at its announced count and at-risk mark, which move no version), and
        ``quota`` passing as for ``create``.

        The calendar follows: the old window is freed when ``updated`` no longer holds the
        bench or holds another window, and a new window must be free of every other booked
        reservation (WindowTaken, the old window left intact). ``updated`` may name another
        bench (the scheduler moves a booking made by capability): that bench must be
        active (BenchNotBookable otherwise). Raises ItemNotFound or VersionMismatch
        (carrying the stored reservation).
        """

    async def find(
        self, query: ReservationQuery, limit: int, after: str | None
    ) -> Page[Reservation]:
        """Ordered by (start, reservation_id); ``after`` is the page key of the last one
        seen, as ``reservation_page_key`` makes it."""

    async def find_ended(self, before: datetime, limit: int) -> list[Reservation]:
        """Booked reservations whose window ended at or before ``before``, earliest end
        first: the ones housekeeping marks completed."""

    async def find_advancing(self, after: datetime, limit: int) -> list[Reservation]:
        """Booked reservations with ``advance`` that start after ``after``, soonest first:
        the ones the scheduler may move into an earlier window."""

    async def find_started(self, since: datetime, until: datetime, limit: int) -> list[Reservation]:
        """Booked reservations that started in [since, until], earliest first."""

    async def find_at_risk(self, limit: int) -> list[Reservation]:
        """Booked reservations marked at risk, soonest start first."""

    async def find_unannounced(self, before: datetime, limit: int) -> list[Reservation]:
        """Booked reservations with a milestone not yet announced whose milestone time
        (its start while ``announced`` is 0, its end while it is 1) is at or before
        ``before``, soonest first."""

    async def flag(
        self, current: Reservation, at_risk: AtRisk | None, events: Sequence[DomainEvent]
    ) -> None:
        """Set (or clear, None) the at-risk mark and store ``events`` in one write, if the
        reservation is still at ``current``'s version, announced count and mark: whoever
        wins raises them, once. Version and updated_at stay (the holder's If-Match still
        holds). Raises ItemNotFound, or VersionMismatch carrying the stored reservation."""

    async def announce(
        self, current: Reservation, announced: int, events: Sequence[DomainEvent]
    ) -> None:
        """Set ``announced`` and store ``events`` in one write, if the reservation is still
        at ``current``'s version and announced count: whoever wins raises them, once.
        Version and updated_at stay. Raises ItemNotFound, or VersionMismatch carrying the
        stored reservation."""


def reservation_page_key(reservation: Reservation) -> str:
    return f"{to_iso(reservation.start)}|{reservation.reservation_id}"


def parse_reservation_page_key(after: str) -> tuple[str, str]:
    """(start as stored text, reservation_id)."""
    start, _, reservation_id = after.partition("|")
    return start, reservation_id


R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Write(Generic[R]):
    """One item of an all-or-nothing change set.

    ``before`` None: create ``after`` (it must not exist). ``after`` None: only check that
    ``before`` is still stored at its version. Both: replace ``before`` by ``after`` if
    still at ``before``'s version.
    """

    before: R | None
    after: R | None


@dataclass(frozen=True, slots=True)
class ExecutionQuery:
    """Needs ``reservation_id``, ``bench_id`` or ``status``: each is an index."""

    reservation_id: str | None = None
    bench_id: str | None = None
    status: ExecutionStatus | None = None
    # Only queued or running executions (with reservation_id: an index of its own).
    open_only: bool = False


class ExecutionRepository(Protocol):
    async def apply(
        self,
        executions: Sequence[Write[Execution]],
        tasks: Sequence[Write[Task]],
        entries: Sequence[HistoryEntry],
        idempotency: IdempotencyRecord | None = None,
    ) -> None:
        """Every write, every history entry and the key, atomically; or none of them.

        Raises AlreadyExists (a created item exists), ItemNotFound (a replaced or checked
        item is gone), VersionMismatch carrying the stored Execution or Task that moved,
        or IdempotencyKeyTaken.
        """

    async def get(self, execution_id: str) -> Execution | None: ...

    async def get_task(self, task_id: str) -> Task | None: ...

    async def get_tasks(self, task_ids: Sequence[str]) -> list[Task]:
        """Strongly consistent, in the order asked; missing ids are left out."""

    async def find(self, query: ExecutionQuery, limit: int, after: str | None) -> Page[Execution]:
        """Ordered by (created_at, execution_id); ``after`` as execution_page_key makes it."""

    async def find_expired_leases(self, now: datetime, limit: int) -> list[Task]:
        """Leased tasks whose lease ended at or before ``now``, soonest expired first."""

    async def find_claim_candidates(self, reservation_id: str, first: int) -> list[Execution]:
        """The reservation's open runs a claim decides on, in creation order: every running
        one, and the first ``first`` open ones (at least; an adapter may give more)."""


def execution_page_key(execution: Execution) -> str:
    return f"{to_iso(execution.created_at)}|{execution.execution_id}"


class IdempotencyRepository(Protocol):
    async def get(self, key: str) -> IdempotencyRecord | None:
        """The stored record, expired or not (the caller compares ``expires_at``)."""


class HistoryRepository(Protocol):
    async def find(
        self, entity_type: str, entity_id: str, limit: int, after: int | None, *, now: datetime
    ) -> Page[HistoryEntry]:
        """Entries oldest first; ``after`` is the last version already seen. Entries past
        their retention at ``now`` are left out (a store may delete them later)."""


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event as the log holds it: ``position`` is where a reader resumes after it."""

    position: str
    event: DomainEvent


class EventLog(Protocol):
    async def read(self, after: str | None, limit: int, *, now: datetime) -> list[LoggedEvent]:
        """Events in commit order after ``after`` (None: from the oldest kept). Raises
        PositionNotKept when events after ``after`` may have been deleted already."""

    async def head(self, *, now: datetime) -> str:
        """A position after the newest event readable now: reading after it gives the
        events committed from now on."""


class QuotaRepository(Protocol):
    async def get(self, kind: QuotaKind, name: str) -> Quota | None: ...

    async def put(self, current: Quota | None, quota: Quota, entry: HistoryEntry) -> None:
        """Store ``quota``: a new one when ``current`` is None (AlreadyExists if one is
        there), else if the stored one is still at ``current.version`` (VersionMismatch
        carrying the stored quota)."""


class WebhookRepository(Protocol):
    async def create(self, webhook: Webhook, entry: HistoryEntry) -> None: ...

    async def get(self, webhook_id: str) -> Webhook | None: ...

    async def update(self, current: Webhook, updated: Webhook, entry: HistoryEntry) -> None:
        """Raises ItemNotFound, or VersionMismatch carrying the stored subscription."""

    async def delete(self, current: Webhook, entry: HistoryEntry) -> None:
        """Raises ItemNotFound, or VersionMismatch carrying the stored subscription."""

    async def record_failing(self, webhook_id: str, failing_since: datetime | None) -> None:
        """The failure run's start: no version change (it is not configuration)."""

    async def find(self, owner: str | None, limit: int, after: str | None) -> Page[Webhook]:
        """By webhook_id; ``owner`` None: everyone's."""


class DeliveryRepository(Protocol):
    async def add(self, deliveries: Sequence[Delivery]) -> int:
        """Store each one that is not stored yet; how many were new."""

    async def get(self, webhook_id: str, delivery_id: str) -> Delivery | None: ...

    async def update(self, current: Delivery, updated: Delivery) -> None:
        """Raises ItemNotFound, or VersionMismatch carrying the stored delivery."""

    async def find(self, webhook_id: str, limit: int, after: str | None) -> Page[Delivery]:
        """A subscription's deliveries, oldest event first."""

    async def find_due(self, now: datetime, limit: int) -> list[Delivery]:
        """Open deliveries due at or before ``now`` (waiting ones, and claimed ones whose
        sender's lease ran out), soonest first."""

    async def first_open(self, webhook_id: str, entity_key: str) -> str | None:
        """The id of the subscription's oldest open delivery about that entity: only it may
        be sent, so receivers see an entity's events in order."""

    async def relay_position(self) -> tuple[int, str | None]:
        """(version, position) of the fan-out's checkpoint in the event log; (0, None)."""

    async def advance_relay(self, version: int, position: str) -> bool:
        """Move the checkpoint if still at ``version``; False when another moved it."""


class Store(Protocol):
    # Read-only in the protocol, so adapters may expose their concrete repositories.
    @property
    def benches(self) -> BenchRepository: ...

    @property
    def history(self) -> HistoryRepository: ...

    @property
    def reservations(self) -> ReservationRepository: ...

    @property
    def idempotency(self) -> IdempotencyRepository: ...

    @property
    def executions(self) -> ExecutionRepository: ...

    @property
    def events(self) -> EventLog: ...

    @property
    def webhooks(self) -> WebhookRepository: ...

    @property
    def quotas(self) -> QuotaRepository: ...

    @property
    def deliveries(self) -> DeliveryRepository: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot serve requests."""

    async def purge_expired(self, now: datetime) -> int:
        """Delete history entries and change events past their retention; how many went.
        A store whose database expires items itself (DynamoDB TTL) deletes nothing here."""

    async def close(self) -> None: ...
