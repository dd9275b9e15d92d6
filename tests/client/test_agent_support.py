"""What the bench agent's tests share (this module holds no tests): a service with rig-1
registered and booked, the agent as a real subprocess, handler scripts, polling."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from bench_client import Client
from bench_client.models import ExecutionOut, TaskOut

from tests.client.conftest import REPO, LiveApi, start_api

T = TypeVar("T")
PYTHON = REPO / ".venv" / "bin" / "python"
TERMINAL = {"passed", "failed", "errored", "timed_out", "cancelled"}


def poll(read: Callable[[], T], done: Callable[[T], bool], *, timeout: float, what: str) -> T:
    """``read()`` until ``done`` says yes; AssertionError with the last value at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last: {value!r}"
        time.sleep(0.05)


def script(directory: Path, name: str, body: str) -> Path:
    """An executable POSIX shell script."""
    path = directory / name
    path.write_text("#!/bin/sh\n" + body.strip() + "\n")
    path.chmod(0o755)
    return path


@dataclass
class AgentProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the agent did not exit:\n{self.log()}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Rig:
    """A service (short leases) where rig-1 is registered and booked for the next hour."""

    api: LiveApi
    root: Path
    admin: Client
    ci: Client
    reservation_id: str
    agents: list[AgentProcess] = field(default_factory=list)
    executions: list[str] = field(default_factory=list)

    @property
    def work_dir(self) -> Path:
        return self.root / "agent-work"

    @property
    def state_path(self) -> Path:
        return self.work_dir / "state.json"

    def config(self, tasks: dict[str, dict[str, Any]], **settings: Any) -> Path:
        """An agent.toml for rig-1: ``tasks`` are the ``[tasks.<type>]`` tables."""
        token_file = self.root / "agent-token"
        token_file.write_text(self.api.tokens["AGENT_TOKEN"] + "\n")
        top: dict[str, Any] = {
            "url": self.api.url,
            "token_file": str(token_file),
            "bench_id": "rig-1",
            "work_dir": str(self.work_dir),
            "poll_s": 0.2,
            "grace_s": 5,
            "kill_grace_s": 1,
        } | settings
        lines = [f"{key} = {_toml(value)}" for key, value in top.items() if key != "health"]
        if "health" in top:
            lines.append("[health]")
            lines += [f"{key} = {_toml(value)}" for key, value in top["health"].items()]
        for task_type, handler in tasks.items():
            lines.append(f"[tasks.{task_type}]")
            lines += [f"{key} = {_toml(value)}" for key, value in handler.items()]
        path = self.root / "agent.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_agent(self, config: Path, *args: str) -> AgentProcess:
        log_path = self.root / f"agent-{len(self.agents)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(PYTHON), "-m", "bench_client.agent.main", "--config", str(config), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )
        agent = AgentProcess(process, log_path)
        self.agents.append(agent)
        return agent

    def run_once(self, config: Path, timeout: float = 60.0) -> AgentProcess:
        """``bench-agent --once`` to the end: every task claimable now is run."""
        agent = self.start_agent(config, "--once")
        assert agent.wait(timeout) == 0, agent.log()
        return agent

    def execution(self, *tasks: dict[str, Any]) -> ExecutionOut:
        run = self.ci.create_execution(self.reservation_id, "9fceb02d0ae5", list(tasks))
        self.executions.append(run.execution_id)
        return run

    def finished(self, execution_id: str, timeout: float = 30.0) -> ExecutionOut:
        return poll(
            lambda: self.ci.get_execution(execution_id),
            lambda run: run.status in TERMINAL,
            timeout=timeout,
            what=f"execution {execution_id} to finish ({self.agent_logs()})",
        )

    def task(self, run: ExecutionOut, index: int = 0) -> TaskOut:
        tasks = self.ci.get_execution(run.execution_id).tasks
        assert tasks is not None
        return tasks[index]

    def state(self) -> dict[str, Any] | None:
        try:
            held: dict[str, Any] | None = json.loads(self.state_path.read_text())["task"]
        except FileNotFoundError:
            return None
        return held

    def agent_logs(self) -> str:
        return "\n".join(f"--- {a.log_path.name}\n{a.log()}" for a in self.agents)


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # strings and lists of strings: JSON is valid TOML here


@contextmanager
def rig(root: Path, **settings: str) -> Iterator[Rig]:
    """A fresh service (task_lease_s 3, housekeeping every second unless ``settings`` say
    otherwise) with rig-1 registered and an active reservation of it."""
    root.mkdir(parents=True, exist_ok=True)
    api = start_api(
        root / "svc", **({"task_lease_s": "3", "housekeeping_interval_s": "1"} | settings)
    )
    admin = Client(api.url, api.tokens["ADMIN_TOKEN"])
    user = Client(api.url, api.tokens["USER_TOKEN"])
    ci = Client(api.url, api.tokens["CI_TOKEN"])
    bench = Rig(api, root, admin, ci, "")
    try:
        admin.create_bench("rig-1", "HIL rig 1", "hil", heartbeat_interval_s=5)
        now = datetime.now(UTC)
        booking = user.create_reservation(
            start=now, end=now + timedelta(hours=1), bench_id="rig-1", purpose="agent tests"
        )
        bench.reservation_id = booking.reservation_id
        yield bench
    finally:
        for agent in bench.agents:
            agent.stop()
        for execution_id in bench.executions:
            if ci.get_execution(execution_id).status not in TERMINAL:
                ci.cancel_execution(execution_id)
        for client in (admin, user, ci):
            client.close()
        api.kill()


def group_alive(pgid: int) -> bool:
    """Whether a live process (not a zombie) is in the group. Orphans re-parented to a
    PID 1 that never reaps stay zombies; ``os.killpg(pgid, 0)`` would count those."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            state, _ppid, group = text[text.rindex(")") + 2 :].split()[:3]
            if int(group) == pgid and state != "Z":
                return True
    return False
