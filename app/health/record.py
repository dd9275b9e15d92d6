"""A bench's record: uptime from its liveness log, its runs by verdict and its
infrastructure-failure rate over 7 and 30 days, beside its peers'. Part of HealthService."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from app.benches.domain import Bench
from app.benches.service import BenchService
from app.clock import Clock
from app.executions.domain import Execution
from app.health.domain import RunRecord, Transition, run_record, uptime
from app.history.domain import HistoryEntry
from app.store.base import BenchQuery, ExecutionQuery, Store
from app.timeutil import to_iso

# Peers (benches of the same type) a bench's record is compared with.
MAX_PEERS = 50
STATS_PERIODS = {"7d": timedelta(days=7), "30d": timedelta(days=30)}


class BenchRecords:
    _store: Store
    _clock: Clock
    _benches: BenchService

    async def stats(self, bench_id: str) -> dict[str, Any]:
        bench = await self._benches.get(bench_id)
        now = self._clock.now()
        own = await self._record(bench, now)
        same_type = BenchQuery(type=bench.type)
        peers_page = await self._store.benches.find(same_type, MAX_PEERS + 1, None)
        peers = [peer for peer in peers_page.items if peer.bench_id != bench_id][:MAX_PEERS]
        records = [await self._record(peer, now) for peer in peers]
        return {
            "bench_id": bench_id,
            "type": bench.type,
            "as_of": now,
            "consecutive_infrastructure_failures": bench.infra_failures,
            "periods": own,
            "peers": {
                "benches": len(peers),
                "periods": {name: _pooled([r[name] for r in records]) for name in STATS_PERIODS},
            },
        }

    async def _record(self, bench: Bench, now: datetime) -> dict[str, dict[str, Any]]:
        transitions = await self._transitions(bench.bench_id)
        finished = await self._finished_runs(bench.bench_id, now - max(STATS_PERIODS.values()))
        record: dict[str, dict[str, Any]] = {}
        for name, length in STATS_PERIODS.items():
            since = max(now - length, bench.created_at)
            runs = run_record(e.status for e in finished if e.created_at >= now - length)
            record[name] = {"uptime": uptime(transitions, since, now), **runs.to_json()}
        return record

    async def _transitions(self, bench_id: str) -> list[Transition]:
        found: list[Transition] = []
        after: int | None = None
        while True:
            page = await self._benches.liveness_log(bench_id, 500, after)
            found += [_transition(entry) for entry in page.items]
            if page.next_after is None:
                return found
            after = int(page.next_after)

    async def _finished_runs(self, bench_id: str, since: datetime) -> list[Execution]:
        found: list[Execution] = []
        # A page key just before ``since``: "0" sorts before every id (no item need have it).
        after: str | None = f"{to_iso(since)}|0"
        while True:
            page = await self._store.executions.find(ExecutionQuery(bench_id=bench_id), 500, after)
            found += [e for e in page.items if e.status.is_terminal]
            if page.next_after is None:
                return found
            after = page.next_after


def _transition(entry: HistoryEntry) -> Transition:
    return Transition(at=entry.at, online=entry.action == "came_online")


def _pooled(periods: list[dict[str, Any]]) -> dict[str, Any]:
    """Peers' records as one: executions summed, uptime averaged over those monitored."""
    counts: dict[str, int] = {}
    for period in periods:
        for verdict, count in period["executions"].items():
            counts[verdict] = counts.get(verdict, 0) + count
    record = (RunRecord(counts) if counts else run_record([])).to_json()
    uptimes = [p["uptime"] for p in periods if p["uptime"] is not None]
    return {"uptime": round(sum(uptimes) / len(uptimes), 4) if uptimes else None, **record}
