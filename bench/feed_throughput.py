"""Change-feed exporter on SQLite into the file sink: throughput, and lag under load.

Every figure comes with a baseline measured in the same run, on the same events, because
the machines are shared and noisy:

- exporter events/s (read outbox -> write sink -> conditional checkpoint) against the raw
  sink write rate and the raw outbox read rate of the very same events;
- store writes/s with the outbox triggers against the same writes with them dropped
  (what the outbox costs the control plane);
- lag, commit to in-sink, of a steady write load with the exporter following, at two poll
  intervals (the poll interval bounds the lag).

Run: ``python -m bench.feed_throughput`` (``make bench`` runs it with the others).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.benches.domain import Bench, Heartbeat, new_bench
from app.feed.archive import FileSink
from app.feed.checkpoints import SqliteCheckpoints
from app.feed.events import ChangeEvent
from app.feed.exporter import Exporter
from app.feed.sqlite_outbox import SqliteOutboxFeed
from app.history.domain import HistoryEntry
from app.store.sqlite.database import SqliteDatabase
from app.store.sqlite.outbox import FEED_TABLES
from app.store.sqlite.store import SqliteStore

START = datetime(2026, 1, 1, tzinfo=UTC)


def _bench(number: int) -> tuple[Bench, HistoryEntry]:
    bench = new_bench(
        bench_id=f"b-{number:05d}",
        name=f"Bench {number}",
        type="hil",
        capabilities=frozenset({"can-bus"}),
        labels={"room": "b2"},
        heartbeat_interval_s=30,
        now=START,
    )
    entry = HistoryEntry(
        entity_type="bench",
        entity_id=bench.bench_id,
        version=1,
        at=START,
        actor="bench",
        request_id=f"r-{number}",
        action="created",
    )
    return bench, entry


async def _write_load(store: SqliteStore, benches: int, heartbeats: int) -> float:
    """Creates (bench + history: 2 events each) then heartbeats (1 event each); writes/s."""
    started = time.perf_counter()
    for number in range(benches):
        await store.benches.create(*_bench(number))
    for number in range(heartbeats):
        heartbeat = Heartbeat(
            at=START + timedelta(seconds=number), agent_version="1.0", details={"n": number}
        )
        await store.benches.record_heartbeat(f"b-{number % benches:05d}", heartbeat)
    return (benches + heartbeats) / (time.perf_counter() - started)


async def _drop_triggers(db: SqliteDatabase) -> None:
    async with db.write() as connection:
        for table in FEED_TABLES:
            for kind in ("insert", "update", "delete"):
                await connection.execute(f"DROP TRIGGER IF EXISTS outbox_{table}_{kind}")


async def write_cost(folder: Path, benches: int, heartbeats: int) -> dict[str, float]:
    rates: dict[str, list[float]] = {"with": [], "without": []}
    # Alternate, twice each, on fresh files, so drift on a shared machine hits both alike.
    for round_ in range(2):
        for name in ("without", "with"):
            db = await SqliteDatabase.open(str(folder / f"write-{name}-{round_}.db"))
            if name == "without":
                await _drop_triggers(db)
            try:
                rates[name].append(await _write_load(SqliteStore(db), benches, heartbeats))
            finally:
                await db.close()
    best_with, best_without = max(rates["with"]), max(rates["without"])
    return {
        "writes_per_s_with_outbox": round(best_with, 1),
        "writes_per_s_without_outbox": round(best_without, 1),
        "outbox_write_cost_pct": round(100 * (1 - best_with / best_without), 1),
    }


async def throughput(folder: Path, benches: int, heartbeats: int, batch: int) -> dict[str, Any]:
    path = str(folder / f"throughput-{batch}.db")
    store = await SqliteStore.open(path)
    try:
        await _write_load(store, benches, heartbeats)
    finally:
        await store.close()
    db = await SqliteDatabase.open(path)
    feed = SqliteOutboxFeed(db)
    try:
        # Baseline 1: reading the outbox alone.
        started = time.perf_counter()
        batches: list[list[ChangeEvent]] = []
        position: str | None = None
        while True:
            read = await feed.read(position, batch)
            if not read.events:
                break
            batches.append(read.events)
            position = read.position
        read_s = time.perf_counter() - started
        events = sum(len(events) for events in batches)
        # Baseline 2: the sink alone, writing the same batches.
        sink = FileSink(folder / f"raw-{batch}")
        started = time.perf_counter()
        for events_in_batch in batches:
            await sink.write(events_in_batch)
        sink_s = time.perf_counter() - started
        # The exporter: read, write, checkpoint conditionally, for the same events.
        exporter = Exporter(
            feed,
            SqliteCheckpoints(db),
            FileSink(folder / f"export-{batch}"),
            name=f"bench-{batch}",
            batch_size=batch,
        )
        stats = await exporter.run()
        assert stats.events == events, (stats.events, events)
    finally:
        await db.close()
    exporter_rate = stats.events_per_s
    sink_rate = events / sink_s
    return {
        "batch": batch,
        "events": events,
        "exporter_events_per_s": round(exporter_rate, 1),
        "baseline_sink_write_events_per_s": round(sink_rate, 1),
        "baseline_outbox_read_events_per_s": round(events / read_s, 1),
        "exporter_vs_sink_write": round(exporter_rate / sink_rate, 3),
    }


@dataclass
class _Recorder:
    """The file sink, noting when each event was safely written (wall clock)."""

    inner: FileSink
    expected: int
    lags_s: list[float] = field(default_factory=list)
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    async def write(self, events: Sequence[ChangeEvent]) -> None:
        await self.inner.write(events)
        done = time.time()
        # ``at`` is the commit time the outbox trigger stamped (SQLite's clock, ms).
        self.lags_s += [done - event.at.timestamp() for event in events]
        if len(self.lags_s) >= self.expected:
            self.drained.set()

    async def close(self) -> None:
        return None


async def lag(folder: Path, rate: float, seconds: float, poll_s: float) -> dict[str, Any]:
    path = str(folder / f"lag-{poll_s}.db")
    store = await SqliteStore.open(path)
    db = await SqliteDatabase.open(path)
    try:
        benches = 50
        for number in range(benches):
            await store.benches.create(*_bench(number))
        writes = int(rate * seconds)
        recorder = _Recorder(FileSink(folder / f"lag-{poll_s}"), expected=writes)
        checkpoints = SqliteCheckpoints(db)
        feed = SqliteOutboxFeed(db)
        # Start after the set-up changes: lag is about the steady load only.
        skip = await feed.read(None, 10_000)
        assert skip.position is not None
        await checkpoints.advance(await checkpoints.load("lag"), skip.position)
        exporter = Exporter(feed, checkpoints, recorder, name="lag", batch_size=500)
        stop = asyncio.Event()
        following = asyncio.create_task(
            exporter.run(follow=True, poll_interval_s=poll_s, stop=stop)
        )
        started = time.perf_counter()
        for number in range(writes):
            # A steady schedule, not back to back: sleep until this write's slot.
            delay = started + number / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            heartbeat = Heartbeat(at=datetime.now(UTC), agent_version="1.0", details={"n": number})
            await store.benches.record_heartbeat(f"b-{number % benches:05d}", heartbeat)
        achieved = writes / (time.perf_counter() - started)
        # Let the follower deliver what is committed, then stop it.
        await asyncio.wait_for(recorder.drained.wait(), timeout=60 + 10 * poll_s)
        stop.set()
        await following
    finally:
        await store.close()
        await db.close()
    lags = sorted(recorder.lags_s)
    return {
        "poll_interval_s": poll_s,
        "target_writes_per_s": rate,
        "achieved_writes_per_s": round(achieved, 1),
        "events": len(lags),
        "lag_ms_p50": round(1000 * statistics.median(lags), 1),
        "lag_ms_p95": round(1000 * lags[int(0.95 * (len(lags) - 1))], 1),
        "lag_ms_max": round(1000 * lags[-1], 1),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="feed-bench-") as name:
        folder = Path(name)
        results: dict[str, Any] = {
            "store": "sqlite (file, WAL)",
            "sink": "file:// (fsync per object)",
            "write_path": await write_cost(folder, args.benches, args.heartbeats),
            "throughput": [
                await throughput(folder, args.benches, args.heartbeats, batch)
                for batch in args.batch
            ],
            "lag": [
                await lag(folder, args.rate, args.seconds, poll) for poll in args.poll_interval
            ],
        }
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benches", type=int, default=500)
    parser.add_argument("--heartbeats", type=int, default=4000)
    parser.add_argument("--batch", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--rate", type=float, default=200.0, help="writes/s under lag test")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--poll-interval", type=float, nargs="+", default=[0.05, 1.0])
    results = asyncio.run(main_async(parser.parse_args(argv)))
    print(json.dumps({"feed_throughput": results}, indent=2))


if __name__ == "__main__":
    main()
