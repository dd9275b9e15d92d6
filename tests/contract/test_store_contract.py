"""The store port's contract: one body of tests, run on every adapter (see conftest)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from app.benches.domain import AdminState, Bench, Heartbeat, Liveness
from app.history.domain import HistoryEntry
from app.store.base import (
    AlreadyExists,
    BenchQuery,
    BenchRetired,
    ItemNotFound,
    Store,
    VersionMismatch,
)
from tests.conftest import START
from tests.support.factories import entry_for, make_bench, next_version


async def test_create_then_get_returns_every_field(store: Store) -> None:
    bench = make_bench("rig-1", "can-bus", "arm64")
    await store.benches.create(bench, entry_for(bench))
    assert await store.benches.get("rig-1") == bench


async def test_get_unknown_is_none(store: Store) -> None:
    assert await store.benches.get("nope") is None


async def test_create_twice_refuses_and_keeps_the_first(store: Store) -> None:
    first = make_bench("rig-1", "can-bus")
    await store.benches.create(first, entry_for(first))
    second = replace(make_bench("rig-1", "usb"), name="impostor")
    with pytest.raises(AlreadyExists):
        await store.benches.create(second, entry_for(second))
    assert await store.benches.get("rig-1") == first
    page = await store.history.find("bench", "rig-1", 10, None, now=datetime.now(UTC))
    assert [e.version for e in page.items] == [1]
    found = await store.benches.find(BenchQuery(capabilities=frozenset({"usb"})), 10, None)
    assert found.items == []


async def test_update_at_expected_version_writes_bench_and_history(store: Store) -> None:
    bench = make_bench("rig-1", "can-bus")
    await store.benches.create(bench, entry_for(bench))
    updated = next_version(bench, name="Renamed", capabilities=frozenset({"usb", "jtag"}))
    await store.benches.update(bench, updated, entry_for(updated, "updated"))
    assert await store.benches.get("rig-1") == updated
    page = await store.history.find("bench", "rig-1", 10, None, now=datetime.now(UTC))
    assert [(e.version, e.action) for e in page.items] == [(1, "created"), (2, "updated")]
    assert page.items[1] == entry_for(updated, "updated")


async def test_stale_update_raises_with_current_and_writes_nothing(store: Store) -> None:
    bench = make_bench("rig-1", "can-bus")
    await store.benches.create(bench, entry_for(bench))
    v2 = next_version(bench, name="v2")
    await store.benches.update(bench, v2, entry_for(v2, "updated"))
    stale = next_version(bench, name="stale", capabilities=frozenset({"usb"}))
    with pytest.raises(VersionMismatch) as caught:
        await store.benches.update(bench, stale, entry_for(stale, "updated"))
    assert caught.value.current == v2
    assert await store.benches.get("rig-1") == v2
    page = await store.history.find("bench", "rig-1", 10, None, now=datetime.now(UTC))
    assert [e.version for e in page.items] == [1, 2]
    assert page.items[1].changes == entry_for(v2).changes
    by_usb = await store.benches.find(BenchQuery(capabilities=frozenset({"usb"})), 10, None)
    assert by_usb.items == []


async def test_update_unknown_raises_not_found(store: Store) -> None:
    ghost = next_version(make_bench("ghost"))
    with pytest.raises(ItemNotFound):
        await store.benches.update(make_bench("ghost"), ghost, entry_for(ghost, "updated"))
    assert (await store.history.find("bench", "ghost", 10, None, now=datetime.now(UTC))).items == []


async def test_heartbeat_is_not_configuration(store: Store) -> None:
    bench = make_bench("rig-1")
    await store.benches.create(bench, entry_for(bench))
    beat = Heartbeat(at=START + timedelta(minutes=1), agent_version="2.1", details={"temp": 41.5})
    stored = await store.benches.record_heartbeat("rig-1", beat)
    assert stored == replace(bench, last_heartbeat=beat)
    assert await store.benches.get("rig-1") == stored
    assert (
        len((await store.history.find("bench", "rig-1", 10, None, now=datetime.now(UTC))).items)
        == 1
    )


async def test_update_keeps_the_last_heartbeat(store: Store) -> None:
    bench = make_bench("rig-1")
    await store.benches.create(bench, entry_for(bench))
    beat = Heartbeat(at=START, agent_version="1", details={})
    await store.benches.record_heartbeat("rig-1", beat)
    v2 = next_version(bench, admin_state=AdminState.MAINTENANCE)
    await store.benches.update(bench, v2, entry_for(v2, "updated"))
    assert await store.benches.get("rig-1") == replace(v2, last_heartbeat=beat)


async def test_heartbeat_for_unknown_bench_raises(store: Store) -> None:
    with pytest.raises(ItemNotFound):
        await store.benches.record_heartbeat("nope", Heartbeat(START, "1", {}))


async def test_find_filters_by_all_capabilities_type_and_state(store: Store) -> None:
    specs = {
        "a1": ("can-bus", "arm64"),
        "a2": ("can-bus",),
        "a3": ("arm64", "can-bus", "usb"),
        "b1": (),
    }
    for bench_id, capabilities in specs.items():
        bench = make_bench(bench_id, *capabilities, type="scope" if bench_id == "a3" else "hil")
        await store.benches.create(bench, entry_for(bench))

    async def ids(query: BenchQuery) -> list[str]:
        return [b.bench_id for b in (await store.benches.find(query, 100, None)).items]

    assert await ids(BenchQuery()) == ["a1", "a2", "a3", "b1"]
    assert await ids(BenchQuery(capabilities=frozenset({"can-bus"}))) == ["a1", "a2", "a3"]
    both = frozenset({"can-bus", "arm64"})
    assert await ids(BenchQuery(capabilities=both)) == ["a1", "a3"]
    assert await ids(BenchQuery(capabilities=both, type="hil")) == ["a1"]
    assert await ids(BenchQuery(type="hil")) == ["a1", "a2", "b1"]
    assert await ids(BenchQuery(admin_state="maintenance")) == []
    assert await ids(BenchQuery(capabilities=frozenset({"nothing"}))) == []


@pytest.mark.parametrize("capabilities", [frozenset(), frozenset({"can-bus"})])
async def test_find_pages_through_everything_once(
    store: Store, capabilities: frozenset[str]
) -> None:
    expected = [f"rig-{n:02d}" for n in range(23)]
    for bench_id in reversed(expected):
        bench = make_bench(bench_id, "can-bus")
        await store.benches.create(bench, entry_for(bench))
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        page = await store.benches.find(BenchQuery(capabilities=capabilities), 5, after)
        assert len(page.items) <= 5
        seen += [b.bench_id for b in page.items]
        pages += 1
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == expected
    assert pages in (5, 6)  # a store may learn only on the next read that it is done


async def test_history_pages_oldest_first(store: Store) -> None:
    bench = make_bench("rig-1")
    await store.benches.create(bench, entry_for(bench))
    for _ in range(6):
        updated = next_version(bench, name=f"name {bench.version}")
        await store.benches.update(bench, updated, entry_for(updated, "updated"))
        bench = updated
    versions: list[int] = []
    after: int | None = None
    while True:
        page = await store.history.find("bench", "rig-1", 3, after, now=datetime.now(UTC))
        versions += [e.version for e in page.items]
        if page.next_after is None:
            break
        after = int(page.next_after)
    assert versions == [1, 2, 3, 4, 5, 6, 7]


async def test_concurrent_conditional_updates_have_one_winner(store: Store) -> None:
    bench = make_bench("rig-1", "can-bus")
    await store.benches.create(bench, entry_for(bench))

    async def attempt(n: int) -> str:
        candidate = next_version(bench, name=f"writer {n}")
        try:
            await store.benches.update(bench, candidate, entry_for(candidate, "updated"))
        except VersionMismatch:
            return "lost"
        return candidate.name

    outcomes = await asyncio.gather(*(attempt(n) for n in range(20)))
    winners = [o for o in outcomes if o != "lost"]
    assert len(winners) == 1
    stored = await store.benches.get("rig-1")
    assert stored is not None and stored.name == winners[0] and stored.version == 2
    history = (await store.history.find("bench", "rig-1", 10, None, now=datetime.now(UTC))).items
    assert [e.version for e in history] == [1, 2]


async def test_ping_answers(store: Store) -> None:
    await store.ping()


# --- liveness: a log of its own, conditioned on the transition count, not the version -----


def liveness_entry(
    bench: Bench, seq: int, liveness: Liveness, request_id: str = "hk"
) -> HistoryEntry:
    was = Liveness.OFFLINE if liveness is Liveness.ONLINE else Liveness.ONLINE
    return HistoryEntry(
        entity_type="bench_liveness",
        entity_id=bench.bench_id,
        version=seq,
        at=START + timedelta(minutes=seq),
        actor="housekeeping",
        request_id=request_id,
        action="came_online" if liveness is Liveness.ONLINE else "went_offline",
        changes={"liveness": {"from": was.value, "to": liveness.value}},
    )


async def liveness_log(store: Store, bench_id: str = "rig-1") -> list[HistoryEntry]:
    return (
        await store.history.find("bench_liveness", bench_id, 50, None, now=datetime.now(UTC))
    ).items


async def test_record_liveness_counts_and_logs_without_moving_the_version(store: Store) -> None:
    bench = make_bench("rig-1", "can-bus")
    await store.benches.create(bench, entry_for(bench))
    assert bench.liveness_changes == 0
    online = liveness_entry(bench, 1, Liveness.ONLINE)
    await store.benches.record_liveness(bench, Liveness.ONLINE, online)
    first = await store.benches.get("rig-1")
    assert first == replace(bench, recorded_liveness=Liveness.ONLINE, liveness_changes=1)
    offline = liveness_entry(first, 2, Liveness.OFFLINE)
    await store.benches.record_liveness(first, Liveness.OFFLINE, offline)
    second = await store.benches.get("rig-1")
    assert second == replace(bench, recorded_liveness=Liveness.OFFLINE, liveness_changes=2)
    assert second.version == 1 and second.updated_at == bench.updated_at
    assert await liveness_log(store) == [online, offline]
    history = await store.history.find("bench", "rig-1", 10, None, now=datetime.now(UTC))
    assert [e.version for e in history.items] == [1]


async def test_concurrent_record_liveness_from_one_read_have_one_winner(store: Store) -> None:
    bench = make_bench("rig-1", "can-bus")
    await store.benches.create(bench, entry_for(bench))

    async def attempt(n: int) -> str:
        entry = liveness_entry(bench, 1, Liveness.ONLINE, request_id=f"hk-{n}")
        try:
            await store.benches.record_liveness(bench, Liveness.ONLINE, entry)
        except VersionMismatch as mismatch:
            # The loser learns the stored bench, with the winner's count, to decide again.
            assert mismatch.current.liveness_changes == 1
            assert mismatch.current.recorded_liveness is Liveness.ONLINE
            return "lost"
        return entry.request_id

    outcomes = await asyncio.gather(attempt(1), attempt(2))
    winners = [o for o in outcomes if o != "lost"]
    assert len(winners) == 1 and outcomes.count("lost") == 1
    stored = await store.benches.get("rig-1")
    assert stored == replace(bench, recorded_liveness=Liveness.ONLINE, liveness_changes=1)
    log = await liveness_log(store)
    assert [(e.version, e.request_id) for e in log] == [(1, winners[0])]


async def test_record_liveness_from_a_stale_count_writes_nothing(store: Store) -> None:
    bench = make_bench("rig-1")
    await store.benches.create(bench, entry_for(bench))
    await store.benches.record_liveness(
        bench, Liveness.ONLINE, liveness_entry(bench, 1, Liveness.ONLINE)
    )
    with pytest.raises(VersionMismatch) as caught:
        await store.benches.record_liveness(
            bench, Liveness.ONLINE, liveness_entry(bench, 1, Liveness.ONLINE, "late")
        )
    assert caught.value.current == replace(
        bench, recorded_liveness=Liveness.ONLINE, liveness_changes=1
    )
    assert [e.request_id for e in await liveness_log(store)] == ["hk"]


async def test_record_liveness_of_an_unknown_bench_raises_not_found(store: Store) -> None:
    ghost = make_bench("ghost")
    with pytest.raises(ItemNotFound):
        await store.benches.record_liveness(
            ghost, Liveness.ONLINE, liveness_entry(ghost, 1, Liveness.ONLINE)
        )
    assert await store.benches.get("ghost") is None
    assert await liveness_log(store, "ghost") == []


async def test_update_from_a_read_before_a_transition_keeps_the_recorded_liveness(
    store: Store,
) -> None:
    bench = make_bench("rig-1", "can-bus")
    await store.benches.create(bench, entry_for(bench))
    # An admin read the bench; then housekeeping recorded a transition. The version did
    # not move, so the admin's update is accepted, and it must not undo the transition.
    await store.benches.record_liveness(
        bench, Liveness.ONLINE, liveness_entry(bench, 1, Liveness.ONLINE)
    )
    renamed = next_version(bench, name="Renamed", capabilities=frozenset({"usb"}))
    await store.benches.update(bench, renamed, entry_for(renamed, "updated"))
    stored = await store.benches.get("rig-1")
    assert stored == replace(renamed, recorded_liveness=Liveness.ONLINE, liveness_changes=1)
    # The count kept its place: the next transition is the second, not a second first.
    await store.benches.record_liveness(
        stored, Liveness.OFFLINE, liveness_entry(stored, 2, Liveness.OFFLINE)
    )
    after = await store.benches.get("rig-1")
    assert after == replace(renamed, recorded_liveness=Liveness.OFFLINE, liveness_changes=2)
    assert [e.version for e in await liveness_log(store)] == [1, 2]


async def test_update_writes_no_liveness_of_its_own(store: Store) -> None:
    bench = make_bench("rig-1")
    await store.benches.create(bench, entry_for(bench))
    # A caller's bench that claims liveness the store never recorded does not write it.
    claims = next_version(bench, recorded_liveness=Liveness.ONLINE, liveness_changes=7)
    await store.benches.update(bench, claims, entry_for(claims, "updated"))
    assert await store.benches.get("rig-1") == next_version(bench)


async def test_a_heartbeat_to_a_retired_bench_is_refused_and_changes_nothing(
    store: Store,
) -> None:
    bench = make_bench("rig-1")
    await store.benches.create(bench, entry_for(bench))
    beat = Heartbeat(at=START, agent_version="1", details={})
    await store.benches.record_heartbeat("rig-1", beat)
    retired = next_version(bench, admin_state=AdminState.RETIRED)
    await store.benches.update(bench, retired, entry_for(retired, "retired"))
    with pytest.raises(BenchRetired) as caught:
        await store.benches.record_heartbeat("rig-1", Heartbeat(START, "2", {"late": True}))
    assert caught.value.bench == replace(retired, last_heartbeat=beat)
    assert await store.benches.get("rig-1") == replace(retired, last_heartbeat=beat)
