"""The tokens file reloads when it changes, at most once a second, and survives bad edits.

Time is a counter the test moves; the file is a real one in tmp_path.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from app.http.token_file import TokenFile, token_digest
from app.identity import Principal, Role


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(token: str, subject: str, role: str = "user", **extra: Any) -> dict[str, Any]:
    return {"token_sha256": token_digest(token), "subject": subject, "role": role, **extra}


def write(path: Path, *records: dict[str, Any]) -> None:
    path.write_text(json.dumps(list(records)))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    file = tmp_path / "tokens.json"
    write(file, record("alice-secret", "alice"))
    return file


def test_an_added_user_is_picked_up_once_the_second_is_over(path: Path) -> None:
    ticks = Ticks()
    tokens = TokenFile.load(path, tick=ticks)
    assert tokens.authenticate("carol-secret") is None
    write(path, record("alice-secret", "alice"), record("carol-secret", "carol", team="hw"))
    ticks.now += 0.5
    assert tokens.authenticate("carol-secret") is None  # not looked at yet: no stat
    ticks.now += 0.5
    assert tokens.authenticate("carol-secret") == Principal("carol", Role.USER, None, "hw")
    assert tokens.authenticate("alice-secret") == Principal("alice", Role.USER)


def test_a_removed_user_is_refused_after_the_reload(path: Path) -> None:
    ticks = Ticks()
    tokens = TokenFile.load(path, tick=ticks)
    write(path, record("bob-secret", "bob"))
    ticks.now += 1
    assert tokens.authenticate("alice-secret") is None
    assert tokens.authenticate("bob-secret") is not None


@pytest.mark.parametrize(
    "content",
    [
        '[{"token_sha256": "ab", "subject": "x"',  # cut short mid-write
        '[{"token_sha256": "ab", "subject": "x", "role": "wizard"}]',
        '[{"token_sha256": "ab", "subject": "x", "role": "agent"}]',  # agent without bench
        '{"not": "a list"}',
    ],
    ids=["truncated", "unknown-role", "agent-without-bench", "not-a-list"],
)
def test_a_broken_file_keeps_the_old_tokens_and_logs_an_error(
    path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    ticks = Ticks()
    tokens = TokenFile.load(path, tick=ticks)
    path.write_text(content)
    ticks.now += 1
    with caplog.at_level(logging.ERROR, logger="app.http.auth"):
        assert tokens.authenticate("alice-secret") == Principal("alice", Role.USER)
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "keeping the 1 tokens loaded before" in caplog.text
    assert '"ab"' not in caplog.text and "wizard" not in caplog.text  # no input values
    # Reported once, not on every later check; fixed, it loads.
    ticks.now += 1
    tokens.authenticate("alice-secret")
    assert len(caplog.records) == 1
    write(path, record("dave-secret", "dave"))
    ticks.now += 1
    assert tokens.authenticate("dave-secret") is not None


def test_a_deleted_file_keeps_the_old_tokens(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ticks = Ticks()
    tokens = TokenFile.load(path, tick=ticks)
    path.unlink()
    ticks.now += 1
    with caplog.at_level(logging.ERROR, logger="app.http.auth"):
        assert tokens.authenticate("alice-secret") is not None
    assert "cannot be read" in caplog.text


def test_reload_reads_at_once_whatever_the_clock(path: Path) -> None:
    tokens = TokenFile.load(path, tick=Ticks())
    write(path, record("erin-secret", "erin", "agent", bench_id="rig-9"))
    assert tokens.reload() is True
    assert tokens.authenticate("erin-secret") == Principal("erin", Role.AGENT, "rig-9")
    path.write_text("nonsense")
    assert tokens.reload() is False
    assert tokens.authenticate("erin-secret") is not None


def test_an_atomic_replace_of_the_same_size_is_seen(path: Path, tmp_path: Path) -> None:
    ticks = Ticks()
    tokens = TokenFile.load(path, tick=ticks)
    replacement = tmp_path / "tokens.json.new"
    write(replacement, record("alice-secreT", "alice"))  # same length, other token
    replacement.replace(path)  # a new inode, as editors and config managers write
    ticks.now += 1
    assert tokens.authenticate("alice-secret") is None
    assert tokens.authenticate("alice-secreT") is not None


def test_start_up_refuses_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "tokens.json"
    broken.write_text('[{"token_sha256": "ab"}]')
    with pytest.raises(RuntimeError, match="not valid"):
        TokenFile.load(broken)
    with pytest.raises(RuntimeError, match="does not exist"):
        TokenFile.load(tmp_path / "missing.json")
