"""The optional health check: ``[health] command`` every ``interval_s``, in a thread of its
own, and at once when the service asks (a window starts soon on the bench). Each result
goes into one bench heartbeat's ``details`` (the next one that gets through): the service
counts reports, so one check is one report, however many heartbeats it outlives."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from bench_client.agent.config import HealthConfig
from bench_client.agent.runner import kill_group, reap_group

log = logging.getLogger("bench_client.agent")

MESSAGE_LIMIT = 300


class HealthMonitor:
    def __init__(self, config: HealthConfig, config_dir: Path, changed: threading.Event) -> None:
        self._config = config
        self._command = [part.replace("{config_dir}", str(config_dir)) for part in config.command]
        self._changed = changed
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._details: dict[str, Any] = {"health": "failing", "health_message": "not checked yet"}
        # Checks made, and the last of them a heartbeat delivered.
        self._checks = 0
        self._reported = 0
        self._urgent = 0  # a check the service asked for: sent at once, not when due
        self._asked = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="health", daemon=True)

    def start(self) -> None:
        self.check()  # the first heartbeat already says how the bench is
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._asked.set()

    def details(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._details)

    def report(self) -> tuple[dict[str, Any], int]:
        """The result to send, if it is one no heartbeat delivered yet ({} otherwise), and
        the check it belongs to (for ``delivered``)."""
        with self._lock:
            if self._checks == self._reported:
                return {}, self._checks
            return dict(self._details), self._checks

    def delivered(self, check: int) -> None:
        with self._lock:
            self._reported = max(self._reported, check)

    def urgent(self) -> bool:
        """A check the service asked for is done and not delivered yet."""
        with self._lock:
            return self._urgent > self._reported

    def check_soon(self) -> None:
        """The service asked for a check now: the health thread runs one at once."""
        self._asked.set()

    def check(self) -> None:
        healthy, message = self._run()
        details = {"health": "ok" if healthy else "failing", "health_message": message}
        with self._lock:
            before = self._details
            self._details = details
            self._checks += 1
        if before.get("health") != details["health"]:
            log.log(
                logging.INFO if healthy else logging.WARNING,
                "health: %s (%s)",
                details["health"],
                message,
            )

    def _loop(self) -> None:
        while not self._stop.is_set():
            asked = self._asked.wait(self._config.interval_s)
            if self._stop.is_set():
                return
            if asked:
                self._asked.clear()
                log.info("health: checking now, as the service asked (a window starts soon)")
            self.check()
            if asked:
                with self._lock:
                    self._urgent = self._checks
            self._changed.set()  # wakes the agent's loop: the next heartbeat carries it

    def _run(self) -> tuple[bool, str]:
        timeout = self._config.effective_timeout_s
        try:
            process = subprocess.Popen(
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as error:
            return False, f"cannot run {self._command[0]!r}: {error.strerror or error}"
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:

            def gone(grace: float) -> bool:
                try:
                    process.wait(grace)
                except subprocess.TimeoutExpired:
                    return False
                return True

            kill_group(process.pid, 1.0, gone)
            process.communicate()
            reap_group(process.pid)
            return False, f"timed out after {timeout:g} s"
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever it left behind
        reap_group(process.pid)
        lines = [line.strip() for line in output.decode(errors="replace").splitlines()]
        last = next((line for line in reversed(lines) if line), "")
        if process.returncode == 0:
            return True, (last or "ok")[:MESSAGE_LIMIT]
        status = (
            f"exit code {process.returncode}"
            if process.returncode > 0
            else f"killed by signal {-process.returncode}"
        )
        return False, (f"{status}: {last}" if last else status)[:MESSAGE_LIMIT]
