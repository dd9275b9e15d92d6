"""Checkpoints move by conditional write only: a stale exporter cannot advance one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from app.clock import ManualClock
from app.feed.archive import FileSink
from app.feed.checkpoints import Checkpoint, CheckpointConflict
from app.feed.events import ChangeEvent
from app.feed.exporter import Exporter
from app.feed.factory import FeedSource
from app.store.base import Store
from tests.feed.conftest import ADMIN, benches, new_bench


async def test_advance_is_conditioned_on_the_version_read(source: FeedSource) -> None:
    checkpoints = source.checkpoints
    fresh = await checkpoints.load("archive")
    assert fresh == Checkpoint("archive", 0, None)

    first = await checkpoints.advance(fresh, "10")
    assert first == Checkpoint("archive", 1, "10")
    assert await checkpoints.load("archive") == first

    # A second exporter that loaded before the first advanced: both its forms are refused.
    with pytest.raises(CheckpointConflict) as refused:
        await checkpoints.advance(fresh, "12")
    assert (refused.value.expected, refused.value.found) == (0, 1)
    second = await checkpoints.advance(first, "20")
    with pytest.raises(CheckpointConflict):
        await checkpoints.advance(first, "15")
    assert await checkpoints.load("archive") == second == Checkpoint("archive", 2, "20")
    # Names are independent.
    assert (await checkpoints.load("other")).version == 0


class InterleavingSink(FileSink):
    """Runs another exporter to completion while this one's batch is being written."""

    def __init__(self, root: Path, other: Exporter | None = None) -> None:
        super().__init__(root)
        self.other = other

    async def write(self, events: Sequence[ChangeEvent]) -> None:
        await super().write(events)
        if self.other is not None:
            other, self.other = self.other, None
            await other.run()


async def test_a_second_exporter_from_a_stale_checkpoint_stops(
    feed_store: Store, source: FeedSource, clock: ManualClock, tmp_path: Path
) -> None:
    await benches(feed_store, clock).create(new_bench("rig-1"), ADMIN)
    winner = Exporter(source.feed, source.checkpoints, FileSink(tmp_path / "a"), name="cp")
    sink = InterleavingSink(tmp_path / "b", other=winner)
    loser = Exporter(source.feed, source.checkpoints, sink, name="cp")

    # The loser loads version 0, reads, writes; meanwhile the winner exports and advances.
    with pytest.raises(CheckpointConflict, match="Another exporter"):
        await loser.run()

    stored = await source.checkpoints.load("cp")
    assert stored.version >= 1
    # The loser moved nothing: the checkpoint is where the winner left it.
    assert (await source.feed.read(stored.position, 10)).events == []
