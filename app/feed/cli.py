"""``orchestrator export``: the exporter as a command (argument parsing stays in app/cli.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

from app.feed.checkpoints import CheckpointConflict
from app.feed.exporter import DEFAULT_BATCH, FAULT_ENV, Exporter
from app.feed.factory import open_feed
from app.feed.sinks import open_sink, sink_label
from app.settings import Settings
from app.store.base import StoreUnavailable

# Exit status when another exporter moved the checkpoint (2 is argparse's usage error).
EXIT_CONFLICT = 3


@dataclass(frozen=True, slots=True)
class ExportOptions:
    sink: str
    follow: bool = False
    batch: int = DEFAULT_BATCH
    # Default: the sink URL without credentials, so each sink keeps its own progress.
    name: str | None = None
    poll_interval_s: float = 1.0
    s3_endpoint_url: str | None = None
    # Serve Prometheus metrics (events exported, lag) on this port while exporting.
    metrics_port: int | None = None


def _serve_metrics(port: int, name: str) -> Callable[[int, float], None]:
    """The exporter's own /metrics: it is a separate process from the API."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

    registry = CollectorRegistry()
    exported = Counter(
        "orchestrator_feed_events_exported",
        "Events delivered to the sink",
        ["name"],
        registry=registry,
    )
    lag = Gauge(
        "orchestrator_feed_lag_seconds",
        "How long the newest exported change waited to reach the sink (0: caught up)",
        ["name"],
        registry=registry,
    )
    start_http_server(port, addr="127.0.0.1", registry=registry)

    def observe(events: int, lag_s: float) -> None:
        exported.labels(name).inc(events)
        lag.labels(name).set(lag_s)

    return observe


def run_export(settings: Settings, options: ExportOptions) -> int:
    from asyncpg import PostgresError
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return asyncio.run(_export(settings, options))
    except CheckpointConflict as conflict:
        print(f"export stopped: {conflict}", file=sys.stderr)
        return EXIT_CONFLICT
    except (
        ClientError,
        BotoCoreError,
        PostgresError,
        OSError,
        StoreUnavailable,
        ValueError,
    ) as error:
        # What an operator can fix (a missing bucket, an unreachable database, a bad URL):
        # say it in one line; nothing was checkpointed past what reached the sink.
        print(f"export failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


async def _export(settings: Settings, options: ExportOptions) -> int:
    name = options.name or sink_label(options.sink)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Finish the batch in hand, then stop: a kill at any instant is safe too, this is
        # only quicker to resume from.
        loop.add_signal_handler(signum, stop.set)
    async with (
        open_feed(settings) as source,
        open_sink(
            options.sink,
            aws_region=settings.aws_region,
            s3_endpoint_url=options.s3_endpoint_url,
        ) as sink,
    ):
        exporter = Exporter(
            source.feed,
            source.checkpoints,
            sink,
            name=name,
            batch_size=options.batch,
            fault=os.environ.get(FAULT_ENV),
            on_batch=None
            if options.metrics_port is None
            else _serve_metrics(options.metrics_port, name),
        )
        stats = await exporter.run(
            follow=options.follow, poll_interval_s=options.poll_interval_s, stop=stop
        )
    summary = {
        "checkpoint": name,
        "checkpoint_version": stats.checkpoint_version,
        "sink": sink_label(options.sink),
        "batches": stats.batches,
        "events": stats.events,
        "seconds": round(stats.seconds, 3),
        "events_per_s": round(stats.events_per_s, 1),
    }
    print(json.dumps(summary))
    return 0
