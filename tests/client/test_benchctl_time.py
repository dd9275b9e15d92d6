"""benchctl's times and durations in the user's terms, with a fixed "now" and zone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from bench_client.cli.main import _hoist_output
from bench_client.cli.profiles import dumps
from bench_client.cli.runs import parse_task, verdict_code
from bench_client.cli.timeparse import format_duration, format_local, parse_duration, parse_when

BERLIN = ZoneInfo("Europe/Berlin")
# Saturday 2026-03-28 12:00 UTC (13:00 CET); CEST begins the next night at 02:00.
NOW = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("NOW", NOW),
        ("in 2h", NOW + timedelta(hours=2)),
        ("in 1h30m", NOW + timedelta(minutes=90)),
        ("in PT45M", NOW + timedelta(minutes=45)),
        ("today 14:30", datetime(2026, 3, 28, 14, 30, tzinfo=BERLIN)),
        ("today", datetime(2026, 3, 28, 0, 0, tzinfo=BERLIN)),
        ("14:30", datetime(2026, 3, 28, 14, 30, tzinfo=BERLIN)),
        # tomorrow is summer time: 09:00 CEST is 07:00 UTC, not 08:00.
        ("tomorrow 09:00", datetime(2026, 3, 29, 7, 0, tzinfo=UTC)),
        ("Tomorrow  9:00", datetime(2026, 3, 29, 7, 0, tzinfo=UTC)),
        ("2026-12-03 09:00", datetime(2026, 12, 3, 8, 0, tzinfo=UTC)),
        ("2026-12-03T09:00:30", datetime(2026, 12, 3, 8, 0, 30, tzinfo=UTC)),
        ("2026-12-03", datetime(2026, 12, 2, 23, 0, tzinfo=UTC)),
        ("2026-12-03T09:00:00+05:30", datetime(2026, 12, 3, 3, 30, tzinfo=UTC)),
        ("2026-12-03T09:00:00Z", datetime(2026, 12, 3, 9, 0, tzinfo=UTC)),
    ],
)
def test_instants_are_read_in_the_users_zone(text: str, expected: datetime) -> None:
    parsed = parse_when(text, now=NOW, tz=BERLIN)
    assert parsed == expected
    assert parsed.tzinfo is not None


def test_today_is_the_local_date_not_the_utc_one() -> None:
    late = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)  # already Sunday in Berlin
    assert parse_when("today 10:00", now=late, tz=BERLIN) == datetime(2026, 3, 29, 8, 0, tzinfo=UTC)
    tokyo = timezone(timedelta(hours=9))
    assert parse_when("tomorrow 09:00", now=NOW, tz=tokyo) == datetime(
        2026, 3, 29, 0, 0, tzinfo=UTC
    )


@pytest.fixture
def tz_new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("tz_new_york")
def test_without_a_zone_the_TZ_environment_decides() -> None:
    # New York moves to summer time on 2026-03-08: each day gets its own offset.
    winter = datetime(2026, 3, 6, 15, 0, tzinfo=UTC)
    assert parse_when("tomorrow 09:00", now=winter) == datetime(2026, 3, 7, 14, 0, tzinfo=UTC)
    assert parse_when("2026-03-09 09:00", now=winter) == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)
    assert format_local(datetime(2026, 3, 9, 13, 0, tzinfo=UTC)) == "2026-03-09 09:00 EDT"


@pytest.mark.parametrize(
    "text", ["", "yesterday", "tomorrow 25:00", "next week", "in soon", "12/03/2026", "9"]
)
def test_what_is_not_a_time_says_what_is(text: str) -> None:
    with pytest.raises(ValueError, match=r"tomorrow 09:00|HH:MM|not a duration"):
        parse_when(text, now=NOW, tz=BERLIN)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", timedelta(hours=2)),
        ("90m", timedelta(minutes=90)),
        ("1h30m", timedelta(minutes=90)),
        ("1h 30m", timedelta(minutes=90)),
        ("1.5h", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("1d", timedelta(days=1)),
        ("PT2H", timedelta(hours=2)),
        ("PT1H30M", timedelta(minutes=90)),
        ("pt90m", timedelta(minutes=90)),
        ("P1DT2H", timedelta(hours=26)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "2", "2x", "h", "PT", "P", "0m", "-1h", "2h-30m", "1hh"])
def test_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_times_and_lengths_are_printed_for_people() -> None:
    assert format_local(NOW, BERLIN) == "2026-03-28 13:00 CET"
    assert format_local(NOW + timedelta(days=1, seconds=5), BERLIN) == "2026-03-29 14:00:05 CEST"
    assert format_local(None, BERLIN) == "-"
    assert format_duration(timedelta(minutes=90)) == "1h30m"
    assert format_duration(timedelta(days=1, hours=2, seconds=3)) == "1d2h3s"
    assert format_duration(timedelta(0)) == "0s"


def test_task_specs() -> None:
    assert parse_task("flash") == {"type": "flash", "params": {}}
    assert parse_task("test:suite=smoke,board=b2", timeout_s=600, max_attempts=1) == {
        "type": "test",
        "params": {"suite": "smoke", "board": "b2"},
        "timeout_s": 600,
        "max_attempts": 1,
    }
    for bad in (":x=1", "test:suite", "test:=1"):
        with pytest.raises(ValueError):
            parse_task(bad)
    assert [verdict_code(s) for s in ("passed", "failed", "errored", "timed_out", "cancelled")] == [
        0,
        1,
        2,
        2,
        3,
    ]


def test_output_option_may_follow_the_command() -> None:
    assert _hoist_output(["book", "rig-1", "-o", "json", "--for", "2h"]) == [
        "-o",
        "json",
        "book",
        "rig-1",
        "--for",
        "2h",
    ]
    assert _hoist_output(["benches", "--output=json"]) == ["--output=json", "benches"]


def test_the_config_writer_writes_toml_that_reads_back() -> None:
    import tomllib

    document = {
        "default_profile": "lab",
        "profiles": {
            "lab": {"url": "http://x", "token_file": '/tmp/a "b"\\c'},
            "with space": {"url": "http://y", "retries": 3, "verify": True},
        },
    }
    assert tomllib.loads(dumps(document)) == document
