"""Bench use-cases: each loads, decides with the domain, and writes with its history entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.benches.domain import (
    Bench,
    BenchChanges,
    Heartbeat,
    Liveness,
    apply_changes,
    new_bench,
    record_liveness,
    retire,
)
from app.clock import Clock
from app.concurrency import change_versioned
from app.errors import Conflict, Forbidden, NotFound
from app.history.domain import HistoryEntry, record_change
from app.idempotency import IdempotencyClaim, IdempotencyRecord, create_once
from app.identity import Actor, Principal, Role
from app.store.base import AlreadyExists, BenchQuery, ItemNotFound, Page, Store
from app.versioning import VersionExpectation

ENTITY = "bench"


@dataclass(frozen=True, slots=True)
class NewBench:
    bench_id: str
    name: str
    type: str
    capabilities: frozenset[str]
    labels: dict[str, str]
    heartbeat_interval_s: int


def _entry(bench: Bench, actor: Actor, action: str, before: Bench | None) -> HistoryEntry:
    return record_change(
        entity_type=ENTITY,
        entity_id=bench.bench_id,
        version=bench.version,
        at=bench.updated_at,
        actor=actor,
        action=action,
        before=None if before is None else before.audited(),
        after=bench.audited(),
    )


class BenchService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

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
        )

        async def create(record: IdempotencyRecord | None) -> Bench:
            entry = _entry(bench, actor, "created", None)
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

    async def list(
        self, query: BenchQuery, status: Liveness | None, limit: int, after: str | None
    ) -> Page[Bench]:
        """Liveness depends on the clock, so it is filtered here, page by page."""
        if status is None:
            return await self._store.benches.find(query, limit, after)
        now = self._clock.now()
        found: list[Bench] = []
        while True:
            page = await self._store.benches.find(query, limit, after)
            for bench in page.items:
                if bench.liveness(now) is status:
                    found.append(bench)
                    if len(found) == limit:
                        return Page(found, bench.bench_id)
            if page.next_after is None:
                return Page(found, None)
            after = page.next_after

    async def update(
        self,
        bench_id: str,
        changes: BenchChanges,
        expectation: VersionExpectation | None,
        actor: Actor,
    ) -> Bench:
        return await self._change(
            bench_id,
            lambda bench: apply_changes(bench, changes, self._clock.now()),
            expectation,
            actor,
            "updated",
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

    async def record_liveness(self, bench: Bench, actor: Actor) -> Bench | None:
        """Housekeeping: write a liveness transition to history; None when there was none."""
        now = self._clock.now()
        if record_liveness(bench, now) is bench:
            return None
        observed = bench.liveness(now)
        action = "went_offline" if observed is Liveness.OFFLINE else "came_online"
        return await self._change(
            bench.bench_id,
            lambda current: record_liveness(current, self._clock.now()),
            None,
            actor,
            action,
        )

    async def record_heartbeat(
        self, bench_id: str, principal: Principal, agent_version: str, details: dict[str, Any]
    ) -> Bench:
        if principal.role is Role.AGENT and principal.bench_id != bench_id:
            raise Forbidden(f"this agent token belongs to bench {principal.bench_id!r}")
        if principal.role not in (Role.AGENT, Role.ADMIN):
            raise Forbidden("only the bench's agent or an admin posts heartbeats")
        heartbeat = Heartbeat(at=self._clock.now(), agent_version=agent_version, details=details)
        try:
            return await self._store.benches.record_heartbeat(bench_id, heartbeat)
        except ItemNotFound as error:
            raise NotFound(f"bench {bench_id!r} does not exist") from error

    async def history(self, bench_id: str, limit: int, after: int | None) -> Page[HistoryEntry]:
        await self.get(bench_id)
        return await self._store.history.find(ENTITY, bench_id, limit, after)

    async def _change(
        self,
        bench_id: str,
        decide: Callable[[Bench], Bench],
        expectation: VersionExpectation | None,
        actor: Actor,
        action: str,
    ) -> Bench:
        async def write(before: Bench, after: Bench) -> None:
            entry = _entry(after, actor, action, before)
            await self._store.benches.update(before, after, entry)

        return await change_versioned(
            load=lambda: self._store.benches.get(bench_id),
            decide=decide,
            write=write,
            expectation=expectation,
            what=f"bench {bench_id!r}",
        )
