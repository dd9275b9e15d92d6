"""The agent when things go wrong: the service restarts, the network is gone when the
task ends, the agent itself is killed or stopped, the execution is cancelled."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.client.test_agent_support import group_alive, poll, rig, script

pytestmark = pytest.mark.system

# A handler that says it started (its pgid: it leads its own group), then waits for a
# "go" file (or for ever), then passes.
WAIT_FOR_GO = """
echo $$ > "$DIR/pgid"
echo "started attempt $BENCH_ATTEMPT"
while [ ! -e "$DIR/go" ]; do sleep 0.05; done
echo done
"""


def handler(directory: Path, body: str = WAIT_FOR_GO) -> list[str]:
    return ["sh", str(script(directory, "handler.sh", body)), str(directory)]


def _pgid(directory: Path) -> int:
    path = directory / "pgid"
    poll(path.exists, bool, timeout=20, what="the handler to start")
    text = poll(path.read_text, lambda text: text.endswith("\n"), timeout=5, what="its pgid")
    return int(text)


def with_dir(command: list[str]) -> dict[str, object]:
    return {"command": command, "env": {"DIR": command[-1]}}


def test_a_service_restart_mid_task_still_ends_in_a_verdict(tmp_path: Path) -> None:
    with rig(tmp_path) as bench:
        config = bench.config({"test": with_dir(handler(tmp_path))})
        run = bench.execution({"type": "test", "max_attempts": 3})
        agent = bench.start_agent(config)
        _pgid(tmp_path)

        bench.api.restart()
        (tmp_path / "go").touch()

        assert bench.finished(run.execution_id).status == "passed"
        agent.signal(signal.SIGTERM)
        assert agent.wait(15) == 0


def test_a_report_is_kept_while_the_service_is_down_and_delivered_after(tmp_path: Path) -> None:
    # A long lease: the lease outlives the outage, so the first attempt's report counts.
    with rig(tmp_path, task_lease_s="30") as bench:
        config = bench.config({"test": with_dir(handler(tmp_path))})
        run = bench.execution({"type": "test"})
        agent = bench.start_agent(config)
        _pgid(tmp_path)

        bench.api.stop()
        (tmp_path / "go").touch()
        held = poll(
            bench.state,
            lambda held: held is not None and held["report"] is not None,
            timeout=20,
            what="the report to be recorded",
        )
        assert held is not None
        assert held["report"]["kind"] == "complete"
        # The agent has tried and failed to send it before the service comes back (the
        # report is saved before the first try, so the state alone does not say that).
        poll(
            agent.log,
            lambda log: "report not delivered" in log,
            timeout=20,
            what="a failed delivery while the service is down",
        )
        bench.api.restart()

        assert bench.finished(run.execution_id).status == "passed"
        assert bench.task(run).attempts == 1
        poll(bench.state, lambda held: held is None, timeout=10, what="the state to clear")


def test_a_recorded_report_is_sent_by_the_next_agent(tmp_path: Path) -> None:
    with rig(tmp_path, task_lease_s="30") as bench:
        config = bench.config({"test": with_dir(handler(tmp_path))})
        run = bench.execution({"type": "test"})
        first = bench.start_agent(config)
        _pgid(tmp_path)

        bench.api.stop()
        (tmp_path / "go").touch()
        poll(
            bench.state,
            lambda held: held is not None and held["report"] is not None,
            timeout=20,
            what="the report to be recorded",
        )
        first.signal(signal.SIGTERM)
        poll(first.log, lambda log: "stopping, no more claims" in log, timeout=10, what="stop")
        first.signal(signal.SIGTERM)  # again: do not wait to deliver it
        assert first.wait(15) == 0
        assert bench.state() is not None

        bench.api.restart()
        bench.start_agent(config)
        assert bench.finished(run.execution_id).status == "passed"
        assert bench.task(run).attempts == 1


def test_an_agent_killed_mid_task_leaves_a_lease_that_expires_and_a_retry_that_runs(
    tmp_path: Path,
) -> None:
    body = """
echo $$ > "$DIR/pgid.$BENCH_ATTEMPT"
[ "$BENCH_ATTEMPT" -gt 1 ] && exit 0
echo $$ > "$DIR/pgid"
exec sleep 60
"""
    with rig(tmp_path) as bench:
        config = bench.config({"test": with_dir(handler(tmp_path, body))})
        run = bench.execution({"type": "test", "max_attempts": 3})
        first = bench.start_agent(config)
        orphan = _pgid(tmp_path)

        first.process.kill()
        first.wait(10)
        task = poll(
            lambda: bench.task(run),
            lambda task: task.status == "pending",
            timeout=15,
            what="the lease to expire",
        )
        assert (task.attempts, task.error) == (1, "lease expired")
        assert group_alive(orphan)  # the command outlived its agent

        second = bench.start_agent(config)
        assert bench.finished(run.execution_id).status == "passed"
        assert bench.task(run).attempts == 2
        # The restarted agent found the command its predecessor left and killed it.
        poll(lambda: group_alive(orphan), lambda alive: not alive, timeout=10, what="orphan")
        assert f"killing process group {orphan}" in second.log()


def test_an_agent_restarted_before_the_lease_expires_reports_the_attempt_lost(
    tmp_path: Path,
) -> None:
    body = """
echo $$ > "$DIR/pgid"
[ "$BENCH_ATTEMPT" -gt 1 ] && exit 0
exec sleep 60
"""
    with rig(tmp_path, task_lease_s="30") as bench:
        config = bench.config({"test": with_dir(handler(tmp_path, body))})
        run = bench.execution({"type": "test", "max_attempts": 3})
        first = bench.start_agent(config)
        _pgid(tmp_path)
        first.process.kill()
        first.wait(10)

        bench.start_agent(config)
        assert bench.finished(run.execution_id).status == "passed"
        history = [entry.action for entry in bench.ci.task_history(bench.task(run).task_id)]
        assert history.count("claimed") == 2
        assert "expired" not in history
        assert bench.task(run).attempts == 2


def test_cancelling_the_execution_kills_the_task_within_a_heartbeat_period(
    tmp_path: Path,
) -> None:
    body = """
echo $$ > "$DIR/pgid"
sleep 60 &
exec sleep 60
"""
    with rig(tmp_path) as bench:  # lease 3 s: a task heartbeat every second
        config = bench.config({"test": with_dir(handler(tmp_path, body))})
        run = bench.execution({"type": "test"})
        agent = bench.start_agent(config)
        pgid = _pgid(tmp_path)
        os.killpg(pgid, 0)  # running

        bench.ci.cancel_execution(run.execution_id)
        cancelled = time.monotonic()

        def gone() -> bool:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return True
            return False

        poll(gone, bool, timeout=5, what="the process group to go")
        assert time.monotonic() - cancelled < 1.0 + 0.5  # one heartbeat period, and slack
        assert bench.ci.get_execution(run.execution_id).status == "cancelled"
        assert "lease lost" in agent.log()


def test_sigterm_gives_the_running_task_its_grace_then_kills_it_and_exits_0(
    tmp_path: Path,
) -> None:
    with rig(tmp_path) as bench:
        config = bench.config({"test": with_dir(handler(tmp_path))}, grace_s=0.5)
        run = bench.execution({"type": "test", "max_attempts": 2})
        agent = bench.start_agent(config)
        pgid = _pgid(tmp_path)

        agent.signal(signal.SIGTERM)
        assert agent.wait(15) == 0
        assert not group_alive(pgid)
        task = bench.task(run)
        assert (task.status, task.attempts) == ("pending", 1)  # retryable: it runs again
        assert task.error is not None
        assert task.error.startswith("the agent was stopped (SIGTERM) while the task ran")
        assert bench.state() is None


def test_sigterm_lets_a_task_that_ends_within_its_grace_report_and_claims_no_more(
    tmp_path: Path,
) -> None:
    with rig(tmp_path) as bench:
        config = bench.config({"test": with_dir(handler(tmp_path))}, grace_s=20)
        run = bench.execution({"type": "test"}, {"type": "test"})
        agent = bench.start_agent(config)
        _pgid(tmp_path)

        agent.signal(signal.SIGINT)
        (tmp_path / "go").touch()
        assert agent.wait(15) == 0
        assert [bench.task(run, i).status for i in (0, 1)] == ["succeeded", "pending"]
