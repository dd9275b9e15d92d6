"""Running one task's command: its argv and environment, a process group of its own,
output to a log file, a timeout, and killing the whole group (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_client.agent.config import PLACEHOLDER

TAIL_BYTES = 4096


class MissingParam(Exception):
    """The command names ``{params.NAME}`` and the task has no such parameter."""


@dataclass(frozen=True)
class TaskContext:
    """What a command's placeholders and environment variables are made of."""

    task_id: str
    execution_id: str
    commit_sha: str
    task_type: str
    attempt: int
    params: Mapping[str, Any]
    config_dir: Path


def param_text(value: Any) -> str:
    """A parameter as text: strings as they are, anything else as JSON (true, 3, [1])."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def expand(command: list[str], context: TaskContext) -> list[str]:
    """``command`` with its placeholders filled in; MissingParam for an absent param."""
    fixed = {
        "task_id": context.task_id,
        "execution_id": context.execution_id,
        "commit_sha": context.commit_sha,
        "task_type": context.task_type,
        "attempt": str(context.attempt),
        "config_dir": str(context.config_dir),
    }

    def fill(match: re.Match[str]) -> str:
        name = match.group(2)
        if name is None:
            return fixed[match.group(1)]
        if name not in context.params:
            raise MissingParam(f"the task has no parameter {name!r} (its command needs it)")
        return param_text(context.params[name])

    return [PLACEHOLDER.sub(fill, part) for part in command]


def env_name(param: str) -> str:
    return "BENCH_PARAM_" + re.sub(r"[^A-Z0-9_]", "_", param.upper())


def task_env(context: TaskContext, extra: Mapping[str, str], work: Path) -> dict[str, str]:
    """The agent's environment, the handler's ``env``, then the task's ids and params."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("BENCH_")}
    env |= extra
    env |= {
        "BENCH_TASK_ID": context.task_id,
        "BENCH_EXECUTION_ID": context.execution_id,
        "BENCH_COMMIT_SHA": context.commit_sha,
        "BENCH_TASK_TYPE": context.task_type,
        "BENCH_ATTEMPT": str(context.attempt),
        "BENCH_TASK_DIR": str(work),
    }
    env |= {env_name(name): param_text(value) for name, value in context.params.items()}
    return env


# --- process groups ------------------------------------------------------------------------


def become_subreaper() -> None:
    """Linux: orphans of our handlers are re-parented to the agent, which reaps them, so a
    killed group really is gone even where PID 1 reaps nothing (a bare container)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to the group; False once there is no such group."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_group(pgid: int) -> None:
    """Reap the group's members that were re-parented to us (never the leader: the
    ``Popen`` that started it reaps it first)."""
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is in the group."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is not None and stat[2] == pgid and stat[0] != "Z":
            return True
    return False


def _stat(pid: int) -> tuple[str, int, int, str] | None:
    """(state, ppid, pgid, start time) from /proc/<pid>/stat, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), fields[19]


def process_start(pid: int) -> str | None:
    """An identity for ``pid`` that a reused pid does not share (Linux: its start time)."""
    stat = _stat(pid)
    return None if stat is None else stat[3]


def same_process_alive(pid: int, start: str | None) -> bool:
    stat = _stat(pid)
    if stat is None:
        if Path("/proc").is_dir():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat[0] != "Z" and (start is None or stat[3] == start)


def groups_running_task(task_id: str) -> set[int]:
    """Linux: the process groups holding a process whose environment names ``task_id``
    (``BENCH_TASK_ID``): what a command started for it left running, even if its agent
    died before it could record the pid."""
    marker = f"BENCH_TASK_ID={task_id}".encode()
    groups: set[int] = set()
    proc = Path("/proc")
    if not proc.is_dir():
        return groups
    mine = os.getpgrp()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            stat = _stat(int(entry.name))
            if stat is not None and stat[0] != "Z" and stat[2] != mine:
                groups.add(stat[2])
    return groups


def kill_group(pgid: int, grace_s: float, leader_gone: Callable[[float], bool]) -> None:
    """SIGTERM to the group; SIGKILL to whatever is left once the leader has gone or
    ``grace_s`` has passed. ``leader_gone(timeout)`` waits for the leader."""
    if _signal_group(pgid, signal.SIGTERM):
        leader_gone(grace_s)
    _signal_group(pgid, signal.SIGKILL)


def kill_orphan_group(pgid: int, grace_s: float) -> None:
    """Kill a group that is not our child (left behind by an agent that died)."""
    deadline = time.monotonic() + grace_s

    def gone(_: float) -> bool:
        while group_alive(pgid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    kill_group(pgid, grace_s, gone)
    kill_deadline = time.monotonic() + 5.0
    while group_alive(pgid) and time.monotonic() < kill_deadline:
        time.sleep(0.05)


# --- one run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How a run ended. ``killed_for``: why the agent killed it ("timeout", "lease",
    "stopping"), None if it exited on its own."""

    returncode: int
    duration_s: float
    killed_for: str | None


class Run:
    """One command, running in its own session (so its own process group), its stdout
    and stderr appended to ``log_path``; killed after ``timeout_s``. ``on_exit`` is called
    (from the watcher thread) once it has ended and its group is gone."""

    def __init__(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        timeout_s: float,
        kill_grace_s: float,
        on_exit: Callable[[], None],
    ) -> None:
        self._timeout_s = timeout_s
        self._kill_grace_s = kill_grace_s
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._killed_for: str | None = None
        self._done = threading.Event()
        self._outcome: Outcome | None = None
        self.log_path = log_path
        self.started = time.monotonic()
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
            )
        self.pgid = self.process.pid
        self._watcher = threading.Thread(target=self._watch, name="task-watcher", daemon=True)
        self._watcher.start()

    @property
    def outcome(self) -> Outcome | None:
        return self._outcome

    def kill(self, reason: str, grace_s: float | None = None) -> None:
        """Kill the group (once; the first reason given is the one reported)."""
        with self._lock:
            if self._killed_for is None and self._outcome is None:
                self._killed_for = reason
        grace = self._kill_grace_s if grace_s is None else grace_s
        kill_group(self.pgid, grace, self._leader_gone)

    def wait(self, timeout: float | None = None) -> Outcome | None:
        self._done.wait(timeout)
        return self._outcome

    def _leader_gone(self, timeout: float) -> bool:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _watch(self) -> None:
        try:
            self.process.wait(self._timeout_s)
        except subprocess.TimeoutExpired:
            self.kill("timeout")
        returncode = self.process.wait()
        duration = time.monotonic() - self.started
        # Whatever the command left behind in its group goes with it.
        deadline = time.monotonic() + 5.0
        if _signal_group(self.pgid, signal.SIGTERM):
            time.sleep(0.01)
            _signal_group(self.pgid, signal.SIGKILL)
        while True:
            reap_group(self.pgid)
            if not group_alive(self.pgid) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        reap_group(self.pgid)
        with self._lock:
            self._outcome = Outcome(returncode, round(duration, 3), self._killed_for)
        self._done.set()
        self._on_exit()


def tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of ``path`` as text ('' when there is none)."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - limit))
            data = log.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")
