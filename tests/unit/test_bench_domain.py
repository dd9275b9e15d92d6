from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.benches.domain import (
    AdminState,
    Bench,
    BenchChanges,
    Heartbeat,
    Liveness,
    apply_changes,
    is_valid_bench_id,
    new_bench,
    retire,
)
from app.errors import Conflict
from app.history.domain import diff

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def bench() -> Bench:
    return new_bench(
        bench_id="rig-1",
        name="Rig",
        type="hil",
        capabilities=frozenset({"can-bus"}),
        labels={},
        heartbeat_interval_s=10,
        now=NOW,
    )


@pytest.mark.parametrize("value", ["rig-1", "a", "0.b_c-d", "x" * 63])
def test_valid_bench_ids(value: str) -> None:
    assert is_valid_bench_id(value)


@pytest.mark.parametrize("value", ["", "Rig", "-rig", "rig 1", "x" * 64, "rig/1", "ri\ng"])
def test_invalid_bench_ids(value: str) -> None:
    assert not is_valid_bench_id(value)


def test_change_bumps_version_once_and_no_change_keeps_it() -> None:
    original = bench()
    later = NOW + timedelta(minutes=1)
    changed = apply_changes(original, BenchChanges(name="New"), later)
    assert (changed.version, changed.updated_at, changed.name) == (2, later, "New")
    assert apply_changes(original, BenchChanges(name="Rig"), later) is original


@pytest.mark.parametrize(
    ("start", "target", "allowed"),
    [
        (AdminState.ACTIVE, AdminState.MAINTENANCE, True),
        (AdminState.MAINTENANCE, AdminState.ACTIVE, True),
        (AdminState.ACTIVE, AdminState.RETIRED, True),
        (AdminState.MAINTENANCE, AdminState.RETIRED, True),
    ],
)
def test_admin_transitions(start: AdminState, target: AdminState, allowed: bool) -> None:
    current = apply_changes(bench(), BenchChanges(admin_state=start), NOW)
    assert apply_changes(current, BenchChanges(admin_state=target), NOW).admin_state is target


def test_retired_is_final() -> None:
    retired = retire(bench(), NOW)
    with pytest.raises(Conflict) as caught:
        apply_changes(retired, BenchChanges(admin_state=AdminState.ACTIVE), NOW)
    assert caught.value.extensions["allowed_transitions"] == []
    with pytest.raises(Conflict):
        apply_changes(retired, BenchChanges(name="zombie"), NOW)


def test_liveness_is_three_intervals() -> None:
    beat = Heartbeat(at=NOW, agent_version="1", details={})
    alive = new_bench(
        bench_id="r",
        name="r",
        type="t",
        capabilities=frozenset(),
        labels={},
        heartbeat_interval_s=10,
        now=NOW,
    )
    assert alive.liveness(NOW) is Liveness.UNMONITORED  # never heard from: hand-operated
    from dataclasses import replace

    alive = replace(alive, last_heartbeat=beat)
    assert alive.liveness(NOW + timedelta(seconds=29, microseconds=999999)) is Liveness.ONLINE
    assert alive.liveness(NOW + timedelta(seconds=30)) is Liveness.OFFLINE
    assert alive.next_heartbeat_due() == NOW + timedelta(seconds=10)


def test_diff_names_only_changed_fields() -> None:
    assert diff({"a": 1, "b": [1]}, {"a": 1, "b": [2], "c": None}) == {
        "b": {"from": [1], "to": [2]}
    }
