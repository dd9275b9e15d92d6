"""The exporter: read a batch after the checkpoint, write it to the sink, then advance the
checkpoint, conditionally.

A crash anywhere in between loses nothing: the next run reads the same batch again from
the old checkpoint and delivers it again. Delivery is at least once, and event ids are
stable, so a consumer drops what it has already seen. If the checkpoint moved meanwhile,
another exporter owns it: this one stops (CheckpointConflict) rather than fight over it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime

from app.feed.checkpoints import Checkpoint, CheckpointStore
from app.feed.events import ChangeFeed
from app.feed.public import public_event
from app.feed.sinks import Sink

# A test hook, read once by the CLI: "after-write" kills the process with SIGKILL right
# after a batch reached the sink and before its checkpoint is stored, the worst instant.
# "term-after-write" sends SIGTERM at that instant instead: the batch in hand must still
# be checkpointed before the exporter stops (and exits 0).
FAULT_ENV = "ORCH_EXPORT_FAULT"
FAULT_AFTER_WRITE = "after-write"
FAULT_TERM_AFTER_WRITE = "term-after-write"
_FAULT_SIGNALS = {FAULT_AFTER_WRITE: signal.SIGKILL, FAULT_TERM_AFTER_WRITE: signal.SIGTERM}
DEFAULT_BATCH = 500


@dataclass(slots=True)
class ExportStats:
    batches: int = 0
    events: int = 0
    seconds: float = 0.0
    checkpoint_version: int = 0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class Exporter:
    def __init__(
        self,
        feed: ChangeFeed,
        checkpoints: CheckpointStore,
        sink: Sink,
        *,
        name: str,
        batch_size: int = DEFAULT_BATCH,
        fault: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        if fault not in (None, "", *_FAULT_SIGNALS):
            raise ValueError(f"unknown fault point {fault!r}")
        self.name = name
        self._feed = feed
        self._checkpoints = checkpoints
        self._sink = sink
        self._batch_size = batch_size
        self._fault = fault or None
        self._monotonic = monotonic
        # Told (events delivered, lag in seconds) after each checkpointed batch: the lag is
        # how long the newest change of the batch waited to reach the sink (0 when idle).
        self._on_batch = on_batch

    async def run(
        self,
        *,
        follow: bool = False,
        poll_interval_s: float = 1.0,
        stop: asyncio.Event | None = None,
    ) -> ExportStats:
        """Export until the feed is drained, or with ``follow`` until ``stop`` is set."""
        stop = stop or asyncio.Event()
        stats = ExportStats()
        started = self._monotonic()
        checkpoint = await self._checkpoints.load(self.name)
        stats.checkpoint_version = checkpoint.version
        try:
            while not stop.is_set():
                checkpoint, delivered, moved = await self._step(checkpoint)
                stats.checkpoint_version = checkpoint.version
                if delivered:
                    stats.batches += 1
                    stats.events += delivered
                elif not moved:  # nothing new: caught up
                    if self._on_batch is not None:
                        self._on_batch(0, 0.0)
                    if not follow:
                        break
                    with suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), poll_interval_s)
        finally:
            stats.seconds = self._monotonic() - started
        return stats

    async def _step(self, checkpoint: Checkpoint) -> tuple[Checkpoint, int, bool]:
        """One batch: (checkpoint after it, events delivered, whether the position moved)."""
        batch = await self._feed.read(checkpoint.position, self._batch_size)
        if batch.events:
            await self._sink.write([public_event(event) for event in batch.events])
            if self._fault is not None:
                os.kill(os.getpid(), _FAULT_SIGNALS[self._fault])
        if batch.position is None or batch.position == checkpoint.position:
            return checkpoint, len(batch.events), False
        advanced = await self._checkpoints.advance(checkpoint, batch.position)
        if self._on_batch is not None:
            newest = max((event.at for event in batch.events), default=None)
            lag = 0.0 if newest is None else (datetime.now(UTC) - newest).total_seconds()
            self._on_batch(len(batch.events), max(lag, 0.0))
        return advanced, len(batch.events), True
