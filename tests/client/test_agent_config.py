"""The agent's configuration: clear one-line errors, the example that ships, the health
check's result in the bench heartbeat."""

from __future__ import annotations

import sqlite3
import subprocess
import tomllib
from pathlib import Path

import pytest
from bench_client.agent.config import ConfigError, load_config

from tests.client.conftest import REPO
from tests.client.test_agent_support import PYTHON, poll, rig, script

EXAMPLES = REPO / "examples"
GOOD = """
url = "http://127.0.0.1:8000"
token_file = "token"
bench_id = "rig-1"
work_dir = "work"
[tasks.flash]
command = ["{config_dir}/flash.sh", "{params.image}"]
timeout_s = 60
env = { PORT = "/dev/ttyUSB0" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_a_good_config_resolves_paths_from_its_own_directory(tmp_path: Path) -> None:
    tmp_path = tmp_path.resolve()
    config = load_config(write(tmp_path, GOOD))
    assert config.token_file == tmp_path / "token"
    assert config.work_dir == tmp_path / "work"
    assert config.grace_s == 30
    assert config.tasks["flash"].timeout_s == 60
    assert config.tasks["flash"].env == {"PORT": "/dev/ttyUSB0"}
    assert config.health is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace('bench_id = "rig-1"', ""), "bench_id: Field required"),
        (GOOD.replace('"rig-1"', '"Rig 1"'), "bench_id: String should match pattern"),
        (GOOD.replace("timeout_s = 60", "timeout_s = -1"), "tasks.flash.timeout_s:"),
        (
            GOOD.replace('command = ["{config_dir}/flash.sh", "{params.image}"]', "command = []"),
            "tasks.flash.command: List should have at least 1 item",
        ),
        (GOOD + "colour = 1\n", "colour: Extra inputs are not permitted"),
        (GOOD.replace("http://", "ftp://"), "url: String should match pattern"),
        (
            GOOD + '[health]\ncommand = ["check", "{task_id}"]\n',
            "health.command: {task_id} has no value here",
        ),
        ("url = ", "not valid TOML"),
    ],
)
def test_a_bad_config_is_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith(f"{path}: ")
    assert message in str(raised.value)


def test_the_command_line_says_what_is_wrong_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    agent = [str(PYTHON), "-m", "bench_client.agent.main", "--config", str(path)]
    missing = subprocess.run([*agent, "--check-config"], capture_output=True, text=True)
    assert missing.returncode == 2
    assert (
        missing.stderr
        == f"bench-agent: token_file {tmp_path / 'token'}: No such file or directory\n"
    )

    (tmp_path / "token").write_text("secret\n")
    checked = subprocess.run([*agent, "--check-config"], capture_output=True, text=True)
    assert (checked.returncode, checked.stdout) == (
        0,
        f"bench-agent: {path}: ok (1 task handlers)\n",
    )

    nowhere = subprocess.run(
        [*agent[:-1], str(tmp_path / "nope.toml")], capture_output=True, text=True
    )
    assert nowhere.returncode == 2
    assert nowhere.stderr == f"bench-agent: {tmp_path / 'nope.toml'}: No such file or directory\n"


def test_the_example_config_is_valid() -> None:
    config = load_config(EXAMPLES / "agent.toml")
    assert config.bench_id == "rig-1"
    assert config.token_file == REPO / "var" / "agent-token"
    assert sorted(config.tasks) == ["fail", "flash", "test"]


@pytest.mark.system
def test_the_example_handlers_pass_and_fail_and_health_reaches_the_heartbeat(
    tmp_path: Path,
) -> None:
    example = tomllib.loads((EXAMPLES / "agent.toml").read_text())
    tasks = {
        task_type: {
            key: [part.replace("{config_dir}", str(EXAMPLES)) for part in value]
            if key == "command"
            else value
            for key, value in handler.items()
        }
        for task_type, handler in example["tasks"].items()
    }
    health = script(tmp_path, "health.sh", 'echo "warming up"\necho "fan stalled"\nexit 1')
    with rig(tmp_path) as bench:
        config = bench.config(tasks, health={"command": [str(health)], "interval_s": 60})
        passing = bench.execution(
            {"type": "flash", "params": {"image": "fw.bin"}}, {"type": "test"}
        )
        failing = bench.execution({"type": "fail"})
        bench.run_once(config)

        assert bench.finished(passing.execution_id).status == "passed"
        assert bench.finished(failing.execution_id).status == "failed"
        error = bench.task(failing).error
        assert error is not None
        assert error.startswith("exit code 1 after ")
        assert "boot_time: FAILED" in error
        flash_log = bench.work_dir / "tasks" / bench.task(passing).task_id / "attempt-1.log"
        assert "flashing fw.bin onto the bench for commit 9fceb02d0ae5" in flash_log.read_text()

        def kept_health() -> tuple[object, ...] | None:
            with sqlite3.connect(bench.api.workdir / "var" / "orchestrator.db") as db:
                row: tuple[object, ...] | None = db.execute(
                    "SELECT health_status, health_message, health_failures FROM benches"
                    " WHERE bench_id = 'rig-1'"
                ).fetchone()
            return row if row and row[0] else None

        # One check, one report: the bench keeps it, however many heartbeats follow.
        got = poll(kept_health, bool, timeout=10, what="a heartbeat with a health report")
        assert got == ("failing", "exit code 1: fan stalled", 1)
