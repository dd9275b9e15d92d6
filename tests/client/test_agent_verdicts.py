"""The agent (a real ``bench-agent --once`` process) runs shell-script handlers against a
real service: each kind of outcome ends in its verdict."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.test_agent_support import Rig, rig, script

# One service for the module: its tests share a worker under pytest-xdist.
pytestmark = [pytest.mark.system, pytest.mark.xdist_group("agent-verdicts")]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with rig(tmp_path_factory.mktemp("agent-verdicts")) as made:
        yield made


@pytest.fixture
def handlers(tmp_path: Path) -> Path:
    script(tmp_path, "pass.sh", 'echo "flashing $1"\necho "verify: ok"')
    script(tmp_path, "fail.sh", 'echo "boot_time: FAILED" >&2\necho "1 failed"\nexit 3')
    script(tmp_path, "hang.sh", "echo started\nexec sleep 60")
    env = 'env | grep "^BENCH_\\|^EXTRA=" | sort > "$1"\nprintf "%s\\n" "$@" > "$1.args"'
    script(tmp_path, "env.sh", env)
    (tmp_path / "not-executable.sh").write_text("#!/bin/sh\necho never\n")
    return tmp_path


def test_a_passing_command_completes_the_task_with_its_exit_code_and_duration(
    bench: Rig, handlers: Path
) -> None:
    config = bench.config({"flash": {"command": [str(handlers / "pass.sh"), "{params.image}"]}})
    run = bench.execution({"type": "flash", "params": {"image": "fw.bin"}})
    bench.run_once(config)

    assert bench.finished(run.execution_id).status == "passed"
    task = bench.task(run)
    assert task.result is not None
    assert task.result["exit_code"] == 0
    assert 0 <= task.result["duration_s"] < 10
    log = bench.work_dir / "tasks" / task.task_id / "attempt-1.log"
    assert log.read_text() == "flashing fw.bin\nverify: ok\n"
    assert bench.state() is None


def test_a_failing_command_fails_the_task_for_good_with_its_output(
    bench: Rig, handlers: Path
) -> None:
    config = bench.config({"test": {"command": ["sh", str(handlers / "fail.sh")]}})
    run = bench.execution({"type": "test", "max_attempts": 3})
    bench.run_once(config)

    assert bench.finished(run.execution_id).status == "failed"
    task = bench.task(run)
    assert task.status == "failed"
    assert task.attempts == 1  # a test that failed is not retried
    assert task.error is not None
    assert task.error.startswith("exit code 3 after ")
    assert "boot_time: FAILED\n1 failed" in task.error


def test_a_command_past_its_timeout_is_killed_and_retried_until_the_run_errors(
    bench: Rig, handlers: Path
) -> None:
    config = bench.config({"test": {"command": [str(handlers / "hang.sh")], "timeout_s": 0.5}})
    run = bench.execution({"type": "test", "max_attempts": 2, "timeout_s": 30})
    bench.run_once(config)

    assert bench.finished(run.execution_id).status == "errored"
    task = bench.task(run)
    assert (task.status, task.attempts) == ("dead", 2)
    assert task.error is not None
    assert task.error.startswith("timed out: killed at its timeout of 0.5 s (killed by SIGTERM)")
    assert "started" in task.error


@pytest.mark.parametrize("command", ["/nonexistent/flash-tool", "not-executable.sh"])
def test_a_command_that_cannot_run_is_a_retryable_failure(
    bench: Rig, handlers: Path, command: str
) -> None:
    path = command if command.startswith("/") else str(handlers / command)
    config = bench.config({"flash": {"command": [path, "--now"]}})
    run = bench.execution({"type": "flash", "max_attempts": 2})
    bench.run_once(config)

    assert bench.finished(run.execution_id).status == "errored"
    task = bench.task(run)
    assert (task.status, task.attempts) == ("dead", 2)
    assert task.error is not None
    assert task.error.startswith(f"cannot run {path!r}: ")


def test_a_task_type_without_a_handler_is_a_retryable_failure(bench: Rig, handlers: Path) -> None:
    config = bench.config({"flash": {"command": [str(handlers / "pass.sh")]}})
    run = bench.execution({"type": "soak", "max_attempts": 2})
    bench.run_once(config)

    assert bench.finished(run.execution_id).status == "errored"
    task = bench.task(run)
    assert (task.status, task.attempts) == ("dead", 2)
    assert task.error == "bench agent of rig-1 has no handler for task type 'soak' (it has: flash)"


def test_a_missing_parameter_fails_the_task(bench: Rig, handlers: Path) -> None:
    config = bench.config({"flash": {"command": [str(handlers / "pass.sh"), "{params.image}"]}})
    run = bench.execution({"type": "flash", "max_attempts": 3})
    bench.run_once(config)

    assert bench.finished(run.execution_id).status == "failed"
    assert bench.task(run).error == "the task has no parameter 'image' (its command needs it)"


def test_placeholders_and_environment_carry_the_ids_and_params(
    bench: Rig, handlers: Path, tmp_path: Path
) -> None:
    out = tmp_path / "env.txt"
    command = [
        str(handlers / "env.sh"),
        str(out),
        "{task_id}",
        "{execution_id}",
        "{commit_sha}",
        "{params.image}",
        "{params.retries}",
        '{"literal": {braces}}',
    ]
    config = bench.config({"flash": {"command": command, "env": {"EXTRA": "yes"}}})
    params = {"image": "fw.bin", "retries": 2, "board-rev": {"a": [1]}}
    run = bench.execution({"type": "flash", "params": params})
    bench.run_once(config)

    assert bench.finished(run.execution_id).status == "passed"
    task = bench.task(run)
    args = (tmp_path / "env.txt.args").read_text().splitlines()
    assert args == [
        str(out),
        task.task_id,
        run.execution_id,
        "9fceb02d0ae5",
        "fw.bin",
        "2",
        '{"literal": {braces}}',
    ]
    env = dict(line.split("=", 1) for line in out.read_text().splitlines())
    work = bench.work_dir / "tasks" / task.task_id
    assert env == {
        "BENCH_ATTEMPT": "1",
        "BENCH_COMMIT_SHA": "9fceb02d0ae5",
        "BENCH_EXECUTION_ID": run.execution_id,
        "BENCH_PARAM_BOARD_REV": json.dumps({"a": [1]}, separators=(",", ":")),
        "BENCH_PARAM_IMAGE": "fw.bin",
        "BENCH_PARAM_RETRIES": "2",
        "BENCH_TASK_DIR": str(work),
        "BENCH_TASK_ID": task.task_id,
        "BENCH_TASK_TYPE": "flash",
        "EXTRA": "yes",
    }


def test_tasks_of_a_run_go_in_order_and_the_run_passes(bench: Rig, handlers: Path) -> None:
    pass_sh = [str(handlers / "pass.sh"), "{task_type}"]
    config = bench.config({"flash": {"command": pass_sh}, "test": {"command": pass_sh}})
    run = bench.execution({"type": "flash"}, {"type": "test"})
    agent = bench.run_once(config)

    assert bench.finished(run.execution_id).status == "passed"
    assert [bench.task(run, i).status for i in (0, 1)] == ["succeeded", "succeeded"]
    assert agent.log().count("reported completed") == 2
