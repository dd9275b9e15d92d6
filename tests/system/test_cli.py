"""The `orchestrator` command as scripts use it: real processes, settings from ORCH_*."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.system


def orchestrator(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_housekeeping_once_prints_what_it_did(tmp_path: Path) -> None:
    done = orchestrator("housekeeping", "--once", env={"ORCH_SQLITE_PATH": str(tmp_path / "o.db")})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {
        "leases_expired": 0,
        "executions_timed_out": 0,
        "reservations_completed": 0,
        "milestones_announced": 0,
        "reservations_advanced": 0,
        "no_shows_released": 0,
        "idle_holds_handled": 0,
        "liveness_changes_recorded": 0,
        "reservations_protected": 0,
        "health_checks_requested": 0,
        "expired_records_purged": 0,
    }


def test_create_tables_twice_is_fine(moto_endpoint: str) -> None:
    env = {
        "ORCH_STORE": "dynamodb",
        "ORCH_DYNAMODB_ENDPOINT_URL": moto_endpoint,
        "ORCH_TABLE_PREFIX": f"cli{uuid.uuid4().hex[:6]}-",
    }
    first = orchestrator("create-tables", env=env)
    second = orchestrator("create-tables", env=env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout
    assert f"table ready: {env['ORCH_TABLE_PREFIX']}Benches" in first.stdout


def test_dev_tokens_never_overwrites(tmp_path: Path) -> None:
    env = {"ORCH_TOKENS_FILE": str(tmp_path / "tokens.json")}
    made = orchestrator("dev-tokens", env=env)
    assert made.returncode == 0 and "ADMIN_TOKEN=" in made.stdout
    before = (tmp_path / "tokens.json").read_text()
    again = orchestrator("dev-tokens", env=env)
    assert "left as it is" in again.stdout
    assert (tmp_path / "tokens.json").read_text() == before
    assert oct((tmp_path / "dev-tokens.env").stat().st_mode & 0o777) == "0o600"
