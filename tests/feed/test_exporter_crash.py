"""Killing the exporter between its sink write and its checkpoint loses no event.

The exporter runs as ``python -m app.cli export`` in a child process; the fault point
(ORCH_EXPORT_FAULT=after-write) sends it SIGKILL right after a batch reached the sink and
before the checkpoint moved, the worst instant to die. Run again, it delivers every event.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aioboto3
import pytest

from app.clock import ManualClock
from app.feed.archive import decode
from app.feed.exporter import FAULT_AFTER_WRITE, FAULT_ENV
from app.feed.factory import FeedSource
from app.settings import Settings
from app.store.base import Store
from tests.feed.conftest import ADMIN, benches, new_bench, read_all

REPO = Path(__file__).resolve().parents[2]
# Start-up (imports, store open) and a few batches; far more than it takes.
_RUN_TIMEOUT_S = 120
_BATCH = 4
_CHECKPOINT = "crash-test"


def _env(settings: Settings, fault: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORCH_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"ORCH_{name.upper()}"] = str(value)
    if fault is not None:
        env[FAULT_ENV] = fault
    return env


def _export(settings: Settings, sink: list[str], fault: str | None = None) -> int:
    options = ["--batch", str(_BATCH), "--name", _CHECKPOINT]
    completed = subprocess.run(
        [sys.executable, "-m", "app.cli", "export", *sink, *options],
        cwd=REPO,
        env=_env(settings, fault),
        capture_output=True,
        text=True,
        timeout=_RUN_TIMEOUT_S,
    )
    if completed.returncode == 0:
        summary = json.loads(completed.stdout.strip().splitlines()[-1])
        assert summary["checkpoint"] == _CHECKPOINT
    elif completed.returncode != -signal.SIGKILL:
        pytest.fail(f"exporter failed ({completed.returncode}):\n{completed.stderr}")
    return completed.returncode


async def _delivered(
    settings: Settings, tmp_path: Path, moto: str | None, bucket: str
) -> list[str]:
    if settings.store == "sqlite":
        objects = [path.read_bytes() for path in (tmp_path / "archive").rglob("*.jsonl.gz")]
    else:
        session = aioboto3.Session(
            aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
        )
        objects = []
        async with session.client("s3", endpoint_url=moto) as s3:
            listed = await s3.list_objects_v2(Bucket=bucket, Prefix="crash/")
            for entry in listed.get("Contents", []):
                body = await s3.get_object(Bucket=bucket, Key=entry["Key"])
                objects.append(await body["Body"].read())
    return [event.event_id for data in objects for event in decode(data)]


async def test_a_kill_between_sink_write_and_checkpoint_loses_nothing(
    feed_settings: Settings,
    feed_store: Store,
    source: FeedSource,
    clock: ManualClock,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    moto: str | None = None
    bucket = f"crash-{uuid.uuid4().hex[:12]}"
    if feed_settings.store == "sqlite":
        sink = ["--sink", f"file://{tmp_path / 'archive'}"]
    else:
        moto = request.getfixturevalue("moto_endpoint")
        session = aioboto3.Session(
            aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
        )
        s3: Any
        async with session.client("s3", endpoint_url=moto) as s3:
            await s3.create_bucket(Bucket=bucket)
        sink = ["--sink", f"s3://{bucket}/crash", "--s3-endpoint-url", moto]
    service = benches(feed_store, clock)

    # Killed on its very first batch: the objects are written, the checkpoint never made.
    for number in range(3):
        await service.create(new_bench(f"rig-{number}"), ADMIN)
    assert _export(feed_settings, sink, fault=FAULT_AFTER_WRITE) == -signal.SIGKILL
    assert await _delivered(feed_settings, tmp_path, moto, bucket)
    assert (await source.checkpoints.load(_CHECKPOINT)).version == 0

    # A clean run, more changes, then killed again mid-way, with a checkpoint behind it.
    assert _export(feed_settings, sink) == 0
    done = await source.checkpoints.load(_CHECKPOINT)
    assert done.version >= 1
    for number in range(3, 7):
        await service.create(new_bench(f"rig-{number}"), ADMIN)
    assert _export(feed_settings, sink, fault=FAULT_AFTER_WRITE) == -signal.SIGKILL
    assert await source.checkpoints.load(_CHECKPOINT) == done

    assert _export(feed_settings, sink) == 0

    everything, _ = await read_all(source.feed)
    delivered = await _delivered(feed_settings, tmp_path, moto, bucket)
    assert {event.event_id for event in everything} <= set(delivered)
    assert len(everything) >= 14
