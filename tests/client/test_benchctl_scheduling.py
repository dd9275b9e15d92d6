"""Scheduling from benchctl and the client, against a live service: an advancing booking
shows its estimate and moves up when the booking ahead is cancelled; check-in; an
extension's 409 names who holds the time after; quotas set with If-Match, and a booking
over one refused with the service's words and exit 4; usage per day.

The service's no-show grace is its default (15 min): a booking here that starts now is
released if nobody checks in within that, far longer than these tests run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from bench_client import (
    AsyncClient,
    Client,
    Conflict,
    Forbidden,
    InvalidTransition,
    PreconditionFailed,
    QuotaExceeded,
    Unavailable,
)
from bench_client.cli.timeparse import format_local
from bench_client.models import QuotaKind, ReservationOut

from tests.client.conftest import LiveApi, start_api
from tests.client.test_benchctl_support import Benchctl, poll, register

BERLIN = ZoneInfo("Europe/Berlin")
ESTIMATE = "(estimate: moves up if an earlier window frees)"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """Shared by the tests that set no quota (each books a bench of its own)."""
    service = start_api(tmp_path_factory.mktemp("benchctl-scheduling"))
    try:
        yield service
    finally:
        service.kill()


@pytest.fixture
def benchctl(api: LiveApi, tmp_path: Path) -> Benchctl:
    return Benchctl(api, tmp_path)


@pytest.fixture
def fresh(live_api: LiveApi, tmp_path: Path) -> Benchctl:
    """benchctl on a service of the test's own (quotas are per user: not shared)."""
    return Benchctl(live_api, tmp_path / "benchctl")


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _local(instant: datetime) -> str:
    return format_local(instant, BERLIN)


def _field(stdout: str, name: str) -> str:
    """A value of benchctl's ``name: value`` lines."""
    for line in stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    raise AssertionError(f"no {name!r} in:\n{stdout}")


# --- book --advance ------------------------------------------------------------------------


def test_book_advance_prints_the_estimate_then_moves_up_when_the_booking_ahead_goes(
    benchctl: Benchctl,
) -> None:
    register(benchctl.api, "rig-adv", ["adv-cap"])
    ahead = benchctl.json("book", "rig-adv", "--at", "in 10m", "--for", "2h", token="USER2_TOKEN")

    done = benchctl("book", "rig-adv", "--advance", "--for", "1h", "--purpose", "soak test")
    assert done.returncode == 0, done.stderr
    rid = _field(done.stdout, "reservation")
    with benchctl.client() as alice:
        mine = alice.get_reservation(rid)
    # Nothing an hour long is free before bob's booking: the estimate is right after it.
    assert mine.advance is True and mine.bench_id == "rig-adv"
    assert mine.start == _instant(ahead["end"])
    assert mine.end - mine.start == timedelta(hours=1)
    assert done.stdout.splitlines()[0] == f"booked rig-adv from {_local(mine.start)} {ESTIMATE}"
    assert _field(done.stdout, "start") == f"{_local(mine.start)} (estimate)"
    assert _field(done.stdout, "priority") == "50"

    # None that starts within 5 minutes: refused, naming the earliest window (after mine).
    late = benchctl("book", "-c", "adv-cap", "--advance", "--for", "1h", "--latest-start", "in 5m")
    assert late.returncode == 4, late.stdout + late.stderr
    assert "Traceback" not in late.stderr
    assert f"earliest free: rig-adv from {_local(mine.end)}" in late.stderr

    # The booking ahead is cancelled: mine moves up by itself (now: no earlier than now).
    before = datetime.now(UTC)
    cancelled = benchctl("cancel", ahead["reservation_id"], token="USER2_TOKEN")
    assert cancelled.returncode == 0, cancelled.stderr
    with benchctl.client() as alice:

        def moved_up() -> ReservationOut | None:
            current = alice.get_reservation(rid)
            return current if current.start < mine.start else None

        moved = poll("the advancing booking to move up", moved_up)
        assert moved.bench_id == "rig-adv"
        assert before - timedelta(seconds=5) <= moved.start <= datetime.now(UTC)
        assert moved.end - moved.start == timedelta(hours=1)
        assert moved.version > mine.version
        assert "advanced" in [entry.action for entry in alice.reservation_history(rid)]
    listed = benchctl("reservations")
    assert rid in listed.stdout and _local(moved.start) in listed.stdout


def test_book_advance_usage_errors_and_a_booking_free_now_is_no_estimate(
    benchctl: Benchctl,
) -> None:
    register(benchctl.api, "rig-adv-now", ["adv-now"])
    for args, says in [
        (["--advance", "--at", "now"], "--advance finds the window itself"),
        (["--advance", "--earliest"], "--advance finds the window itself"),
        (["--priority", "10", "--at", "now"], "go with --advance"),
        (["--latest-start", "in 1h", "--at", "now"], "go with --advance"),
    ]:
        refused = benchctl("book", "rig-adv-now", "--for", "1h", *args)
        assert refused.returncode == 4, args
        assert says in refused.stderr, refused.stderr

    # Users may ask for a priority up to 50 only: the service's 403, one line, exit 4.
    too_high = benchctl("book", "rig-adv-now", "--for", "1h", "--advance", "--priority", "80")
    assert too_high.returncode == 4
    assert "at most 50" in too_high.stderr and "Traceback" not in too_high.stderr

    # CI may; and a bench free now is booked from now, which is no estimate.
    done = benchctl(
        "book", "-c", "adv-now", "--for", "1h", "--advance", "--priority", "80", token="CI_TOKEN"
    )
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("booked rig-adv-now from ")
    assert first.endswith("(free now: it has begun)")
    later = benchctl(
        "-o", "json", "book", "-c", "adv-now", "--for", "1h", "--advance",
        "--not-before", "tomorrow 09:00", "--priority", "70", token="CI_TOKEN",
    )  # fmt: skip
    assert later.returncode == 0, later.stderr
    as_json = json.loads(later.stdout)
    tomorrow = datetime.now(BERLIN).date() + timedelta(days=1)
    nine = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 9, tzinfo=BERLIN)
    assert as_json["advance"] is True and as_json["priority"] == 70
    assert _instant(as_json["not_before"]) == nine and _instant(as_json["start"]) == nine


# --- checkin -------------------------------------------------------------------------------


def test_checkin_an_active_reservation_and_refused_before_it_begins(benchctl: Benchctl) -> None:
    register(benchctl.api, "rig-checkin")
    now_booking = benchctl.json("book", "rig-checkin", "--at", "now", "--for", "1h")
    rid = now_booking["reservation_id"]
    assert now_booking.get("checked_in_at") is None

    done = benchctl("checkin", rid)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"checked in to reservation {rid} on rig-checkin at ")
    with benchctl.client() as alice:
        checked = alice.get_reservation(rid)
    assert checked.checked_in_at is not None
    assert f"(until {_local(checked.end)})" in done.stdout
    again = benchctl.json("checkin", rid)  # saying it twice is fine
    assert again["checked_in_at"] is not None

    later = benchctl.json("book", "rig-checkin", "--at", "in 3h", "--for", "1h")
    refused = benchctl("checkin", later["reservation_id"])
    assert refused.returncode == 4
    assert "Traceback" not in refused.stderr
    assert "it is confirmed; allowed now:" in refused.stderr

    not_mine = benchctl("checkin", rid, token="USER2_TOKEN")
    assert not_mine.returncode == 4 and "Forbidden" in not_mine.stderr


# --- move --extend -------------------------------------------------------------------------


def test_move_extend_uses_extend_and_its_409_names_the_holder_after(benchctl: Benchctl) -> None:
    register(benchctl.api, "rig-ext")
    mine = benchctl.json("book", "rig-ext", "--at", "in 1h", "--for", "1h")
    rid = mine["reservation_id"]
    bobs = benchctl.json("book", "rig-ext", "--at", mine["end"], "--for", "1h", token="USER2_TOKEN")

    refused = benchctl("move", rid, "--extend", "30m")
    assert refused.returncode == 4
    assert "Traceback" not in refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert "the time after is held: bob" in lines[0], refused.stderr
    bob_start, bob_end = _local(_instant(bobs["start"])), _local(_instant(bobs["end"]))
    assert lines[1].strip() == (
        f"in the way: reservation {bobs['reservation_id']} of bob ({bob_start} to {bob_end})"
    )
    with benchctl.client() as alice:
        assert alice.get_reservation(rid).end == _instant(mine["end"])  # unchanged

    # Bob's has room after it: extended in place, said in the local zone.
    longer = benchctl("move", bobs["reservation_id"], "--extend", "45m", token="USER2_TOKEN")
    assert longer.returncode == 0, longer.stderr
    new_end = _instant(bobs["end"]) + timedelta(minutes=45)
    assert longer.stdout.splitlines()[0] == (
        f"extended {bobs['reservation_id']} to {_local(new_end)}"
    )
    assert _field(longer.stdout, "length") == "1h45m"
    with benchctl.client("USER2_TOKEN") as bob:
        history = [entry.action for entry in bob.reservation_history(bobs["reservation_id"])]
    assert history[-1] == "extended"

    # The other flags still move and resize through the change of the window.
    moved = benchctl.json("move", rid, "--for", "30m", "--extend", "15m")
    assert _instant(moved["end"]) - _instant(moved["start"]) == timedelta(minutes=45)


# --- quotas and usage ------------------------------------------------------------------------


def test_quota_set_then_a_booking_over_it_fails_with_the_detail_and_exit_4(
    fresh: Benchctl,
) -> None:
    for bench in ("rig-q", "rig-q2", "rig-q3"):
        register(fresh.api, bench, ["q-cap"])
    shown = fresh("quota", "show")
    assert shown.returncode == 0, shown.stderr
    assert _field(shown.stdout, "quota") == "user alice"
    assert _field(shown.stdout, "max booked hours in 7 days") == "none"
    assert _field(shown.stdout, "set") == "never: the service's defaults apply"

    # Only admins set quotas; everyone reads only their own.
    denied = fresh("quota", "set", "--user", "alice", "--max-concurrent", "5")
    assert denied.returncode == 4 and "Forbidden" in denied.stderr
    assert fresh("quota", "show", "--user", "bob").returncode == 4
    assert fresh("quota", "set", "--max-concurrent", "5", token="ADMIN_TOKEN").returncode == 4
    assert fresh("quota", "set", "--user", "alice", token="ADMIN_TOKEN").returncode == 4
    bad = fresh("quota", "set", "--user", "alice", "--max-concurrent", "0", token="ADMIN_TOKEN")
    assert bad.returncode == 4 and "--max-concurrent" in bad.stderr

    done = fresh(
        "quota", "set", "--user", "alice", "--max-booked-hours-7d", "3",
        "--max-window-hours", "2.5", token="ADMIN_TOKEN",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "quota of user alice set"
    assert _field(done.stdout, "max booked hours in 7 days") == "3 h"
    assert _field(done.stdout, "max window hours") == "2.5 h"
    # A limit not named stays; none clears one.
    for option, value in [("--max-concurrent", "2"), ("--max-window-hours", "none")]:
        changed = fresh("quota", "set", "--user", "alice", option, value, token="ADMIN_TOKEN")
        assert changed.returncode == 0, changed.stderr
    quota = fresh.json("quota", "show")
    assert (quota["max_booked_hours_7d"], quota["max_concurrent"]) == (3, 2)
    assert quota["max_window_hours"] is None and quota["version"] == 3
    assert fresh.json("quota", "show", "--user", "alice", token="ADMIN_TOKEN") == quota

    first = fresh.json("book", "rig-q", "--at", "tomorrow 09:00", "--for", "2h")
    over = fresh("book", "rig-q", "--at", "tomorrow 14:00", "--for", "2h")
    assert over.returncode == 4
    assert "Traceback" not in over.stderr
    problem = json.loads(
        fresh("-o", "json", "book", "rig-q", "--at", "tomorrow 14:00", "--for", "2h").stdout
    )
    assert problem["status"] == 403 and problem["limit"] == "max_booked_hours_7d"
    assert "requested 2 h + 2 h booked" in problem["detail"]
    lines = over.stderr.strip().splitlines()
    assert lines[0] == f"error: {problem['detail']}"  # plainly: the service's words
    frees = _instant(first["end"]) + timedelta(days=7)
    assert lines[1].strip() == f"room frees on {_local(frees)}"
    assert lines[-1].strip() == "see: benchctl usage, benchctl quota show"

    # Two at once is the limit too, on any benches.
    cleared = fresh(
        "quota", "set", "--user", "alice", "--max-booked-hours-7d", "none", token="ADMIN_TOKEN"
    )
    assert cleared.returncode == 0, cleared.stderr
    second = fresh.json("book", "-c", "q-cap", "--at", "tomorrow 09:30", "--for", "1h")
    assert second["bench_id"] != "rig-q"
    third = fresh("book", "-c", "q-cap", "--at", "tomorrow 10:00", "--for", "1h")
    assert third.returncode == 4
    assert "+ this one > 2 at once" in third.stderr.splitlines()[0], third.stderr


def test_usage_prints_the_days_with_something_the_totals_and_the_quota(fresh: Benchctl) -> None:
    register(fresh.api, "rig-u")
    nothing = fresh("usage")
    assert nothing.returncode == 0, nothing.stderr
    assert "nothing booked in the last 30 days" in nothing.stdout
    assert nothing.stdout.strip().splitlines()[-1] == "quota: no limits"

    # Begun 40 s ago (the service allows a minute of skew): booked time so far.
    began = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=40)
    fresh.json("book", "rig-u", "--at", began.isoformat(), "--for", "1h")
    with Client(fresh.api.url, fresh.api.tokens["ADMIN_TOKEN"]) as admin:
        admin.put_quota(admin.get_quota("user", "alice"), max_concurrent=3, max_window_hours=8)

    done = fresh("usage")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "usage of user alice, last 30 days (UTC days):"
    assert lines[1].split() == ["DAY", "BOOKED", "USED"]
    days = [line.split() for line in lines[2:] if line[:4].isdigit()]
    assert 1 <= len(days) <= 2  # one day (two across UTC midnight); empty ones hidden
    assert days[0][0] == began.date().isoformat() and days[0][2] != "0"  # booked
    assert days[0][3] == "0"  # used: no run yet
    total = next(line.split() for line in lines if line.startswith("total"))
    assert total[1] != "0" and total[2] == "0"
    assert "used 0% of the booked time" in lines
    assert lines[-1] == "quota: at most 3 at once, 8 h a window"

    as_json = fresh.json("usage", "--user", "me")
    assert as_json["user_id"] == "alice" and as_json["booked_hours"] > 0
    assert len(as_json["days"]) == 30 and as_json["quota"]["max_concurrent"] == 3

    # Someone else's: admins only.
    refused = fresh("usage", "--user", "alice", token="USER2_TOKEN")
    assert refused.returncode == 4 and "Forbidden" in refused.stderr
    theirs = fresh("usage", "--user", "bob", token="ADMIN_TOKEN")
    assert theirs.returncode == 0 and "usage of user bob" in theirs.stdout
    team = fresh("usage", "--team", "hil-lab", token="ADMIN_TOKEN")
    assert team.returncode == 0 and "usage of team hil-lab" in team.stdout
    assert fresh("usage", "--user", "a", "--team", "b").returncode == 4


# --- the client's methods ------------------------------------------------------------------


def test_client_scheduling_and_quota_methods(live_api: LiveApi) -> None:
    register(live_api, "rig-cm", ["cm"])
    tokens = live_api.tokens
    now = datetime.now(UTC).replace(microsecond=0)
    with (
        Client(live_api.url, tokens["USER_TOKEN"]) as alice,
        Client(live_api.url, tokens["USER2_TOKEN"]) as bob,
        Client(live_api.url, tokens["ADMIN_TOKEN"]) as admin,
    ):
        ahead = bob.create_reservation(
            start=now + timedelta(minutes=10), duration=timedelta(hours=2), bench_id="rig-cm"
        )
        assert ahead.end - ahead.start == timedelta(hours=2) and ahead.advance is False
        later = bob.create_reservation(
            start=now + timedelta(days=2), duration=timedelta(hours=1), bench_id="rig-cm"
        )
        waiting = alice.create_reservation(
            duration=timedelta(hours=1), capabilities=["cm"], advance=True, priority=10
        )
        assert (waiting.advance, waiting.priority, waiting.start) == (True, 10, ahead.end)
        with pytest.raises(Conflict) as none_soon:
            alice.create_reservation(
                duration=timedelta(hours=1),
                bench_id="rig-cm",
                advance=True,
                latest_start=now + timedelta(minutes=5),
            )
        assert none_soon.value.earliest_bench_id == "rig-cm"
        assert none_soon.value.earliest_start == waiting.end

        with pytest.raises(Conflict) as held:
            bob.extend_reservation(ahead.reservation_id, timedelta(minutes=30))
        assert held.value.holders == {waiting.reservation_id: "alice"}
        assert [c.reservation_id for c in held.value.conflicts] == [waiting.reservation_id]

        longer = alice.extend_reservation(
            waiting.reservation_id, timedelta(minutes=30), version=waiting.version
        )
        assert longer.end == waiting.end + timedelta(minutes=30)
        with pytest.raises(PreconditionFailed):
            alice.extend_reservation(
                waiting.reservation_id, timedelta(minutes=30), version=waiting.version
            )
        with pytest.raises(InvalidTransition):
            alice.checkin_reservation(waiting.reservation_id)

        quota = admin.get_quota(QuotaKind.user, "bob")
        assert (quota.version, quota.max_window_hours) == (0, None)
        limited = admin.put_quota(quota, max_window_hours=1.5)
        assert limited.version == 1 and limited.max_window_hours is not None
        assert limited.max_window_hours.root == 1.5 and limited.max_concurrent is None
        with pytest.raises(PreconditionFailed):
            admin.put_quota(quota, max_window_hours=3)  # read before the change
        with pytest.raises(Forbidden):
            bob.put_quota(limited, max_window_hours=3)
        with pytest.raises(QuotaExceeded) as over:
            bob.create_reservation(
                start=now + timedelta(days=1), duration=timedelta(hours=2), bench_id="rig-cm"
            )
        assert (over.value.limit, over.value.quota, over.value.status) == (
            "max_window_hours",
            1.5,
            403,
        )
        with pytest.raises(QuotaExceeded):  # an extension is checked too
            bob.extend_reservation(later.reservation_id, timedelta(hours=1))
        assert bob.get_quota("user", "bob") == limited
        assert bob.get_usage().user_id == "bob"
        assert bob.get_usage(user_id="me").quota == limited


async def test_async_client_scheduling_and_quota_methods(live_api: LiveApi) -> None:
    register(live_api, "rig-am")
    tokens = live_api.tokens
    async with (
        AsyncClient(live_api.url, tokens["USER_TOKEN"]) as alice,
        AsyncClient(live_api.url, tokens["ADMIN_TOKEN"]) as admin,
    ):
        booked = await alice.create_reservation(
            start=datetime.now(UTC), duration=timedelta(hours=1), bench_id="rig-am"
        )
        checked = await alice.checkin_reservation(booked.reservation_id, version=booked.version)
        assert checked.checked_in_at is not None
        longer = await alice.extend_reservation(booked.reservation_id, timedelta(minutes=15))
        assert longer.end == booked.end + timedelta(minutes=15)
        quota = await admin.get_quota("user", "alice")
        limited = await admin.put_quota(quota, max_booked_hours_7d=10, max_concurrent=4)
        assert limited.version == 1 and limited.max_concurrent is not None
        assert limited.max_concurrent.root == 4
        usage = await alice.get_usage()
        assert usage.user_id == "alice" and usage.quota == limited
        assert (await admin.get_usage(user_id="alice")).user_id == "alice"


def test_extend_is_repeated_after_a_503_only_when_it_names_the_version() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        body = {"title": "Service Unavailable", "detail": "store down"}
        return httpx.Response(503, headers={"Retry-After": "0"}, json=body)

    transport = httpx.MockTransport(handler)
    with Client(
        "http://svc.test", "t", transport=transport, max_retries=2, backoff_base=0.001
    ) as client:
        with pytest.raises(Unavailable):
            client.extend_reservation("r-1", timedelta(minutes=30))
        assert len(calls) == 1  # a repeat could extend twice
        with pytest.raises(Unavailable):
            client.extend_reservation("r-1", timedelta(minutes=30), version=4)
        assert len(calls) == 4
    assert calls[-1].headers["If-Match"] == '"4"'
    assert json.loads(calls[-1].content) == {"by": "PT1800S"}
    assert calls[-1].url.path == "/v1/reservations/r-1/extend"
