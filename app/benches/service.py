"""Bench use-cases: each loads, decides with the domain, and writes with its history entry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from app.benches.domain import (
    DEFAULT_CONCURRENCY,
    AdminState,
    Bench,
    BenchChanges,
    HealthReport,
    Heartbeat,
    Liveness,
    LivenessChange,
    MaintenanceWindow,
    Quarantine,
    apply_changes,
    check_may_report_for,
    heartbeat_refused,
    liveness_change,
    new_bench,
    retire,
    with_maintenance,
    without_maintenance,
)
from app.clock import Clock
from app.errors import Conflict, NotFound
from app.history.domain import AuditTrail, HistoryEntry, record_change
from app.identity import Actor, Principal
from app.kit.concurrency import change_versioned, retrying
from app.kit.idempotency import IdempotencyClaim, create_once
from app.kit.paging import filtered_page, page_of
from app.store.base import (
    AlreadyExists,
    BenchQuery,
    BenchRetired,
    IdempotencyRecord,
    ItemNotFound,
    Page,
    Store,
    VersionMismatch,
)
from app.timeutil import rfc3339
from app.versioning import VersionExpectation

_BENCH_EVENTS = {
    "created": "bench.registered",
    "updated": "bench.changed",
    "retired": "bench.retired",
    "quarantined": "bench.quarantined",
}


def _bench_view(bench: Bench, at: datetime) -> dict[str, Any]:
    return {"bench_id": bench.bench_id, **bench.config(), "version": bench.version}


AUDIT: AuditTrail[Bench] = AuditTrail(
    "bench",
    lambda bench: bench.bench_id,
    Bench.audited,
    raises=lambda action, before, after: _BENCH_EVENTS.get(action),
    view=_bench_view,
    scope=lambda bench: (bench.bench_id, None),
)
# A bench's liveness transitions: history entries of their own, numbered by the bench's
# transition count, so recording one never moves the bench's version (its ETag).
LIVENESS_LOG = "bench_liveness"


@dataclass(frozen=True, slots=True)
class NewBench:
    bench_id: str
    name: str
    type: str
    capabilities: frozenset[str]
    labels: dict[str, str]
    heartbeat_interval_s: int
    concurrency: int = DEFAULT_CONCURRENCY


class BenchService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        on_change: Callable[[Bench, Bench], Awaitable[object]] | None = None,
    ) -> None:
        """``on_change`` sees the bench before and after each change of its admin state
        (bench health protects the bookings of a bench that became unfit, and restarts its
        failure counts when a quarantine ends)."""
        self._store = store
        self._clock = clock
        self._on_change = on_change

    def now(self) -> datetime:
        return self._clock.now()

    async def create(
        self, spec: NewBench, actor: Actor, claim: IdempotencyClaim | None = None
    ) -> tuple[Bench, bool]:
        """Returns (bench, replayed): a retried create with its Idempotency-Key replays."""
        now = self._clock.now()
        bench = new_bench(
            bench_id=spec.bench_id,
            name=spec.name,
            type=spec.type,
            capabilities=spec.capabilities,
            labels=spec.labels,
            heartbeat_interval_s=spec.heartbeat_interval_s,
            now=now,
            concurrency=spec.concurrency,
        )

        async def create(record: IdempotencyRecord | None) -> Bench:
            entry = AUDIT.entry(bench, actor, "created", None)
            try:
                await self._store.benches.create(bench, entry, record)
            except AlreadyExists as error:
                raise Conflict(f"bench {spec.bench_id!r} already exists") from error
            return bench

        return await create_once(
            claim,
            resource_id=bench.bench_id,
            now=now,
            lookup=self._store.idempotency.get,
            create=create,
            load=self._store.benches.get,
        )

    async def get(self, bench_id: str) -> Bench:
        bench = await self._store.benches.get(bench_id)
        if bench is None:
            raise NotFound(f"bench {bench_id!r} does not exist")
        return bench

    async def find(
        self,
        *,
        capabilities: frozenset[str] = frozenset(),
        type: str | None = None,
        admin_state: AdminState | None = None,
        status: Liveness | None = None,
        limit: int,
        after: str | None,
    ) -> Page[Bench]:
        """Benches with every capability and the given type, admin state and liveness.
        Liveness depends on the clock, so it is filtered here, page by page."""
        query = BenchQuery(
            capabilities=capabilities,
            type=type,
            admin_state=None if admin_state is None else admin_state.value,
        )
        if status is None:
            return await self._store.benches.find(query, limit, after)
        now = self._clock.now()
        return await filtered_page(
            lambda size, start: self._store.benches.find(query, size, start),
            lambda bench: bench.liveness(now) is status,
            lambda bench: bench.bench_id,
            limit,
            after,
        )

    async def update(
        self,
        bench_id: str,
        changes: BenchChanges,
        expectation: VersionExpectation | None,
        actor: Actor,
    ) -> Bench:
        """A quarantine asked for without a reason is the caller's (an admin's)."""
        if changes.admin_state is AdminState.QUARANTINED and changes.quarantine is None:
            reason = Quarantine("admin", actor.subject, self._clock.now())
            changes = replace(changes, quarantine=reason)
        return await self._change(
            bench_id,
            lambda bench: apply_changes(bench, changes, self._clock.now()),
            expectation,
            actor,
            "updated",
        )

    async def schedule_maintenance(
        self, bench_id: str, window: MaintenanceWindow, actor: Actor
    ) -> Bench:
        """List a maintenance window on the bench (its calendar already holds it)."""
        return await self._change(
            bench_id,
            lambda bench: with_maintenance(bench, window, self._clock.now()),
            None,
            actor,
            "maintenance_scheduled",
        )

    async def end_maintenance(self, bench_id: str, reservation_id: str, actor: Actor) -> Bench:
        """Drop a maintenance window whose reservation was cancelled or released."""
        return await self._change(
            bench_id,
            lambda bench: without_maintenance(bench, reservation_id, self._clock.now()),
            None,
            actor,
            "maintenance_ended",
        )

    async def retire(
        self, bench_id: str, expectation: VersionExpectation | None, actor: Actor
    ) -> Bench:
        return await self._change(
            bench_id,
            lambda bench: retire(bench, self._clock.now()),
            expectation,
            actor,
            "retired",
        )

    async def record_liveness(self, bench: Bench, actor: Actor) -> LivenessChange | None:
        """Housekeeping: log a liveness transition of ``bench`` (as a listing read it);
        None when there was none.

        The write is conditioned on the transition count that was read: when another
        process recorded one meanwhile, the decision is made again on the stored bench
        the failed write reports, so no read is spent on a bench that did not change.
        """
        seen = bench

        async def attempt() -> LivenessChange | None:
            nonlocal seen
            change = liveness_change(seen, self._clock.now())
            if change is None:
                return None
            entry = record_change(
                entity_type=LIVENESS_LOG,
                entity_id=change.bench_id,
                version=change.seq,
                at=change.at,
                actor=actor,
                action=change.action,
                before={"liveness": change.was.value},
                after={"liveness": change.liveness.value},
            )
            event = AUDIT.event(f"bench.{change.liveness.value}", seen, actor, at=change.at)
            entry = replace(
                entry,
                event=replace(
                    event,
                    data={
                        **event.data,
                        "liveness": change.liveness.value,
                        "last_heartbeat_at": None
                        if seen.last_heartbeat is None
                        else rfc3339(seen.last_heartbeat.at),
                    },
                ),
            )
            try:
                await self._store.benches.record_liveness(seen, change.liveness, entry)
            except ItemNotFound as error:
                raise NotFound(f"bench {bench.bench_id!r} does not exist") from error
            except VersionMismatch as mismatch:
                seen = mismatch.current
                raise
            return change

        return await retrying(attempt, f"liveness of bench {bench.bench_id!r}")

    async def record_heartbeat(
        self,
        bench_id: str,
        principal: Principal,
        agent_version: str,
        details: dict[str, Any],
        health: HealthReport | None = None,
    ) -> Bench:
        check_may_report_for(principal, bench_id)
        heartbeat = Heartbeat(
            at=self._clock.now(), agent_version=agent_version, details=details, health=health
        )
        try:
            return await self._store.benches.record_heartbeat(bench_id, heartbeat)
        except ItemNotFound as error:
            raise NotFound(f"bench {bench_id!r} does not exist") from error
        except BenchRetired as refused:
            raise heartbeat_refused(refused.bench) from refused

    async def history(self, bench_id: str, limit: int, after: int | None) -> Page[HistoryEntry]:
        return await page_of(
            lambda: self.get(bench_id),
            lambda: self._store.history.find(
                AUDIT.entity_type, bench_id, limit, after, now=self._clock.now()
            ),
        )

    async def liveness_log(
        self, bench_id: str, limit: int, after: int | None
    ) -> Page[HistoryEntry]:
        """The bench's liveness transitions, oldest first; ``after`` is a sequence number."""
        return await page_of(
            lambda: self.get(bench_id),
            lambda: self._store.history.find(
                LIVENESS_LOG, bench_id, limit, after, now=self._clock.now()
            ),
        )

    async def _change(
        self,
        bench_id: str,
        decide: Callable[[Bench], Bench],
        expectation: VersionExpectation | None,
        actor: Actor,
        action: str,
    ) -> Bench:
        moved_from: list[Bench] = []

        async def write(before: Bench, after: Bench) -> None:
            moved_from[:] = [before] if before.admin_state is not after.admin_state else []
            quarantined = (
                after.admin_state is AdminState.QUARANTINED
                and before.admin_state is not AdminState.QUARANTINED
            )
            entry = AUDIT.entry(after, actor, "quarantined" if quarantined else action, before)
            await self._store.benches.update(before, after, entry)

        changed = await change_versioned(
            load=lambda: self._store.benches.get(bench_id),
            decide=decide,
            write=write,
            expectation=expectation,
            what=f"bench {bench_id!r}",
        )
        if self._on_change is not None and moved_from:
            await self._on_change(moved_from[0], changed)
        return changed
