"""The agent's loop: bench heartbeats, claims, one task at a time, its lease, its report.

One thread does all the talking to the service; each running command has a watcher
thread (its exit and its timeout) and the optional health check has one of its own, so a
slow or unreachable service never delays killing a command that ran out of time.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench_client import Client
from bench_client.agent.config import AgentConfig, HandlerConfig
from bench_client.agent.health import HealthMonitor
from bench_client.agent.runner import (
    MissingParam,
    Outcome,
    Run,
    TaskContext,
    become_subreaper,
    expand,
    groups_running_task,
    kill_orphan_group,
    process_start,
    same_process_alive,
    tail,
    task_env,
)
from bench_client.agent.state import InFlight, Report, State
from bench_client.errors import (
    ApiError,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    TransportFailure,
    Unauthorized,
    Unavailable,
)
from bench_client.models import TaskOut

log = logging.getLogger("bench_client.agent")

ERROR_LIMIT = 4000  # the API's maxLength for a task's error
REPORT_ON_STOP_S = 10.0  # how long a stopping agent keeps trying to deliver a report
DEFAULT_LEASE_S = 60.0
MAX_WAIT_S = 1.0  # the loop looks around at least this often


def agent_version() -> str:
    try:
        from importlib.metadata import version

        return f"bench-agent/{version('bench-orchestrator-client')}"
    except Exception:  # not installed as a distribution
        return "bench-agent/0"


class Backoff:
    """Exponential backoff with jitter: base, 2*base, 4*base ... up to cap, each drawn
    from its upper half."""

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2.0**self.failures)
        self.failures += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


def _transient(error: Exception) -> bool:
    """Whether trying again later may succeed: the network, an overloaded or restarting
    service, a token being rotated."""
    if isinstance(error, TransportFailure | Unavailable | RateLimited | Unauthorized):
        return True
    return isinstance(error, ApiError) and error.status >= 500


@dataclass
class Current:
    """The task being run."""

    task: TaskOut
    in_flight: InFlight
    run: Run
    timeout_s: float
    heartbeat_period_s: float
    heartbeat_at: float
    heartbeat_backoff: Backoff = field(default_factory=Backoff)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        once: bool = False,
        client_factory: Callable[[AgentConfig], Client] | None = None,
    ) -> None:
        self.config = config
        self.once = once
        self._client_factory = client_factory or _connect
        self.client = self._client_factory(config)
        self.version = config.agent_version or agent_version()
        self.state = State(config.work_dir / "state.json")
        self.wake = threading.Event()
        self.stopping: str | None = None
        self.hurry = False  # a second signal: kill now, one try at a report, exit
        self.stop_at = 0.0  # monotonic: when a running task's grace is over
        self.report_deadline: float | None = None
        self.current: Current | None = None
        self.pending: InFlight | None = None
        self.report_at = 0.0
        self.report_backoff = Backoff()
        self.claim_at = 0.0
        self.claim_backoff = Backoff()
        self.bench_heartbeat_at = 0.0
        self.bench_backoff = Backoff()
        self.heartbeat_interval_s = 30.0
        self.exit_status = 0
        self.health = (
            HealthMonitor(config.health, config.config_dir, self.wake)
            if config.health is not None
            else None
        )

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        become_subreaper()
        self._install_signals()
        log.info(
            "bench-agent %s for bench %s at %s (handlers: %s)",
            self.version,
            self.config.bench_id,
            self.config.url,
            ", ".join(sorted(self.config.tasks)) or "none",
        )
        if self.health is not None:
            self.health.start()
        try:
            self._recover()
            while True:
                self.wake.clear()
                now = time.monotonic()
                if self.stopping is not None and self.current is None:
                    if self.pending is None:
                        break
                    if self.report_deadline is None:  # one try at least, then some more
                        self.report_deadline = now + (0.0 if self.hurry else REPORT_ON_STOP_S)
                    elif now >= self.report_deadline:
                        log.warning(
                            "stopping with the report on task %s undelivered; it stays in %s "
                            "for the next start",
                            self.pending.task_id,
                            self.state.path,
                        )
                        break
                asked = self.health is not None and self.health.urgent()
                if now >= self.bench_heartbeat_at or asked:
                    self._bench_heartbeat()
                if self.current is not None:
                    self._tend(self.current)
                elif self.pending is not None:
                    if time.monotonic() >= self.report_at:
                        self._send_report(self.pending)
                elif self.stopping is None and time.monotonic() >= self.claim_at:
                    claimed = self._claim()
                    if not claimed and self.once:
                        log.info("idle: nothing to run (--once)")
                        break
                if self.current is not None and self.current.run.outcome is not None:
                    continue
                self.wake.wait(max(0.0, self._next_wakeup() - time.monotonic()))
        finally:
            if self.health is not None:
                self.health.stop()
            self.client.close()
        log.info("bench-agent stopped")
        return self.exit_status

    def _next_wakeup(self) -> float:
        now = time.monotonic()
        times = [self.bench_heartbeat_at, now + MAX_WAIT_S]
        if self.current is not None:
            times.append(self.current.heartbeat_at)
            if self.stopping is not None:
                times.append(self.stop_at)
        elif self.pending is not None:
            times.append(self.report_at)
            if self.report_deadline is not None:
                times.append(self.report_deadline)
        elif self.stopping is None:
            times.append(self.claim_at)
        return min(times)

    # --- signals ---------------------------------------------------------------------------

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stopping is None:
            self.stopping = name
            self.stop_at = time.monotonic() + self.config.grace_s
            running = (
                f"; task {self.current.task.task_id} gets {self.config.grace_s:g} s to finish"
                if self.current is not None
                else ""
            )
            log.info("%s: stopping, no more claims%s", name, running)
        else:
            log.info("%s again: stopping the running task now", name)
            self.hurry = True
            self.stop_at = time.monotonic()
            if self.report_deadline is not None:
                self.report_deadline = time.monotonic()
        self.wake.set()

    # --- the bench -------------------------------------------------------------------------

    def _bench_heartbeat(self) -> None:
        details: dict[str, Any] = {}
        check = 0
        if self.health is not None:
            report, check = self.health.report()
            details |= report
        if self.current is not None:
            details["task_id"] = self.current.task.task_id
        try:
            beat = self.client.post_heartbeat(self.config.bench_id, self.version, details)
        except (ApiError, TransportFailure) as error:
            delay = (
                min(self.bench_backoff.next(), self.heartbeat_interval_s)
                if _transient(error)
                else self.heartbeat_interval_s
            )
            self._refresh_on_unauthorized(error)
            log.warning("bench heartbeat failed (%s); again in %.1f s", error, delay)
            self.bench_heartbeat_at = time.monotonic() + delay
            return
        self.bench_backoff.reset()
        if self.health is not None:
            self.health.delivered(check)
            if beat.run_health_check:
                self.health.check_soon()
        self.heartbeat_interval_s = float(beat.heartbeat_interval_s)
        due_in = (beat.next_heartbeat_due_at - datetime.now(UTC)).total_seconds()
        # A little before it is due, so that the network's delay never makes it late.
        due_in -= min(2.0, 0.1 * self.heartbeat_interval_s)
        self.bench_heartbeat_at = time.monotonic() + min(max(due_in, 1.0), 3600.0)

    def _poll_interval(self) -> float:
        if self.config.poll_s is None:
            return self.heartbeat_interval_s
        return min(self.heartbeat_interval_s, self.config.poll_s)

    def _claim(self) -> bool:
        """Claim and start a task; False when there is none (idle)."""
        try:
            task = self.client.claim_task(self.config.bench_id)
        except (ApiError, TransportFailure) as error:
            self._refresh_on_unauthorized(error)
            if _transient(error):
                delay = min(self.claim_backoff.next(), self._poll_interval())
                log.warning("claim failed (%s); again in %.1f s", error, delay)
                self.claim_at = time.monotonic() + delay
                return True
            log.error("claim refused: %s", error)
            if self.once:
                self.exit_status = 1
            self.claim_at = time.monotonic() + self._poll_interval()
            return False
        self.claim_backoff.reset()
        if task is None:
            self.claim_at = time.monotonic() + self._poll_interval()
            return False
        self._start(task)
        return True

    # --- one task --------------------------------------------------------------------------

    def _start(self, task: TaskOut) -> None:
        claimed = time.monotonic()
        lease_s = DEFAULT_LEASE_S
        if task.lease_expires_at is not None:
            lease_s = (task.lease_expires_at - datetime.now(UTC)).total_seconds()
        period = max(lease_s / 3.0, 0.1)
        log.info(
            "claimed task %s (%s, attempt %d/%d, execution %s); lease %.1f s",
            task.task_id,
            task.type,
            task.attempts,
            task.max_attempts,
            task.execution_id,
            lease_s,
        )
        in_flight = InFlight(
            task_id=task.task_id,
            execution_id=task.execution_id,
            type=task.type,
            attempt=task.attempts,
            claimed_at=datetime.now(UTC).isoformat(),
        )
        self.state.save(in_flight)
        handler = self.config.tasks.get(task.type)
        if handler is None:
            known = ", ".join(sorted(self.config.tasks)) or "none"
            self._owe(
                in_flight,
                _fail(
                    f"bench agent of {self.config.bench_id} has no handler for task type "
                    f"{task.type!r} (it has: {known})",
                    retryable=True,
                ),
            )
            return
        try:
            commit_sha = self.client.get_execution(task.execution_id).commit_sha
        except (ApiError, TransportFailure) as error:
            self._owe(in_flight, _fail(f"could not read the execution: {error}", retryable=True))
            return
        work = self.config.work_dir / "tasks" / task.task_id
        work.mkdir(parents=True, exist_ok=True)
        log_path = work / f"attempt-{task.attempts}.log"
        context = TaskContext(
            task_id=task.task_id,
            execution_id=task.execution_id,
            commit_sha=commit_sha,
            task_type=task.type,
            attempt=task.attempts,
            params=task.params,
            config_dir=self.config.config_dir,
        )
        try:
            argv = expand(handler.command, context)
        except MissingParam as error:
            self._owe(in_flight, _fail(str(error), retryable=False))
            return
        timeout_s = self._timeout(handler, task, claimed)
        try:
            run = Run(
                argv,
                env=task_env(context, handler.env, work),
                cwd=work,
                log_path=log_path,
                timeout_s=timeout_s,
                kill_grace_s=self.config.kill_grace_s,
                on_exit=self.wake.set,
            )
        except OSError as error:
            reason = error.strerror or str(error)
            with log_path.open("a") as file:
                file.write(f"bench-agent: cannot run {argv[0]!r}: {reason}\n")
            self._owe(
                in_flight,
                _fail(f"cannot run {argv[0]!r}: {reason} (command {argv!r})", retryable=True),
            )
            return
        in_flight = in_flight.model_copy(
            update={
                "pid": run.pgid,
                "process_start": process_start(run.pgid),
                "log_path": str(log_path),
            }
        )
        self.state.save(in_flight)
        log.info("task %s: running %s (pgid %d), log %s", task.task_id, argv, run.pgid, log_path)
        self.current = Current(
            task=task,
            in_flight=in_flight,
            run=run,
            timeout_s=timeout_s,
            heartbeat_period_s=period,
            heartbeat_at=claimed + period,
        )

    def _timeout(self, handler: HandlerConfig, task: TaskOut, claimed: float) -> float:
        """The handler's timeout, else the task's; never past the attempt's own end on the
        server (its lease ends there), less a margin for the report to arrive first."""
        budget = task.timeout_s - min(1.0, 0.05 * task.timeout_s) - (time.monotonic() - claimed)
        if handler.timeout_s is not None:
            return max(0.1, min(handler.timeout_s, budget))
        return max(0.1, budget)

    def _tend(self, current: Current) -> None:
        outcome = current.run.outcome
        if outcome is not None:
            self._finished(current, outcome)
            return
        now = time.monotonic()
        if self.stopping is not None and now >= self.stop_at:
            log.info("task %s: grace over; killing process group", current.task.task_id)
            current.run.kill("stopping")
            return
        if now >= current.heartbeat_at:
            self._task_heartbeat(current)

    def _task_heartbeat(self, current: Current) -> None:
        task_id = current.task.task_id
        try:
            self.client.heartbeat_task(task_id)
        except (Conflict, NotFound, Forbidden) as error:
            log.warning("task %s: lease lost (%s); killing its process group", task_id, error)
            current.heartbeat_at = float("inf")  # nothing more to extend
            current.run.kill(
                "lease", grace_s=min(self.config.kill_grace_s, current.heartbeat_period_s / 2)
            )
            return
        except (ApiError, TransportFailure) as error:
            self._refresh_on_unauthorized(error)
            delay = min(current.heartbeat_backoff.next(), current.heartbeat_period_s)
            log.warning("task %s: heartbeat failed (%s); again in %.1f s", task_id, error, delay)
            current.heartbeat_at = time.monotonic() + delay
            return
        current.heartbeat_backoff.reset()
        current.heartbeat_at = time.monotonic() + current.heartbeat_period_s

    def _finished(self, current: Current, outcome: Outcome) -> None:
        self.current = None
        task = current.task
        if outcome.killed_for == "lease":
            log.warning("task %s: killed, its lease gone; nothing to report", task.task_id)
            self.state.clear()
            self.claim_at = time.monotonic()
            return
        self._owe(current.in_flight, self._report(current, outcome))

    def _report(self, current: Current, outcome: Outcome) -> Report:
        output = tail(current.run.log_path)
        took = f"after {outcome.duration_s:.3f} s"
        status = _exit_status(outcome.returncode)
        if outcome.killed_for == "timeout":
            return _fail(
                f"timed out: killed at its timeout of {current.timeout_s:g} s ({status})",
                retryable=True,
                output=output,
            )
        if outcome.killed_for == "stopping" or (self.stopping and outcome.returncode < 0):
            # A signal while the agent stops is the stop's, not the test's (a service
            # manager may have signalled the task's group along with the agent).
            return _fail(
                f"the agent was stopped ({self.stopping}) while the task ran; killed {took} "
                f"({status})",
                retryable=True,
                output=output,
            )
        if outcome.returncode == 0:
            return Report(
                kind="complete", result={"exit_code": 0, "duration_s": outcome.duration_s}
            )
        return _fail(f"{status} {took}", retryable=False, output=output)

    # --- reports ---------------------------------------------------------------------------

    def _owe(self, in_flight: InFlight, report: Report) -> None:
        """Record the report (so a restarted agent still sends it), then send it."""
        owed = in_flight.model_copy(update={"report": report})
        self.state.save(owed)
        self.pending = owed
        self.report_backoff.reset()
        self.report_at = time.monotonic()
        self.wake.set()

    def _send_report(self, owed: InFlight) -> None:
        report = owed.report
        assert report is not None
        try:
            if report.kind == "complete":
                self.client.complete_task(owed.task_id, report.result or {})
            else:
                self.client.fail_task(
                    owed.task_id, report.error or "failed", retryable=report.retryable
                )
        except (ApiError, TransportFailure) as error:
            self._refresh_on_unauthorized(error)
            if _transient(error):
                delay = self.report_backoff.next()
                log.warning(
                    "task %s: report not delivered (%s); again in %.1f s",
                    owed.task_id,
                    error,
                    delay,
                )
                self.report_at = time.monotonic() + delay
                return
            if isinstance(error, Conflict):
                log.warning("task %s: report dropped, the lease is gone (%s)", owed.task_id, error)
            else:
                log.error("task %s: report refused, dropped: %s", owed.task_id, error)
        else:
            outcome = "completed" if report.kind == "complete" else "failed"
            retry = " (retryable)" if report.kind == "fail" and report.retryable else ""
            log.info("task %s: reported %s%s", owed.task_id, outcome, retry)
        self.pending = None
        self.report_deadline = None
        self.state.clear()
        self.claim_at = time.monotonic()  # the next task is likely ready now

    def _refresh_on_unauthorized(self, error: Exception) -> None:
        """A 401: the token file may have been rotated; read it again."""
        if not isinstance(error, Unauthorized):
            return
        try:
            client = self._client_factory(self.config)
        except Exception as failure:
            log.error("cannot reconnect: %s", failure)
            return
        self.client.close()
        self.client = client

    # --- after a restart -------------------------------------------------------------------

    def _recover(self) -> None:
        """The task the previous agent held: send its recorded report, or report its
        attempt lost (killing its process if it outlived that agent)."""
        held = self.state.load()
        if held is None:
            return
        if held.report is not None:
            log.info("task %s: the report of the previous run is still owed", held.task_id)
            self._owe(held, held.report)
            return
        what = "before its command started"
        groups = groups_running_task(held.task_id)
        if held.pid is not None:
            what = f"while its command (pid {held.pid}) ran"
            if same_process_alive(held.pid, held.process_start):
                groups.add(held.pid)
        for pgid in sorted(groups):
            log.warning(
                "task %s: killing process group %d, left by the previous agent",
                held.task_id,
                pgid,
            )
            kill_orphan_group(pgid, self.config.kill_grace_s)
        output = tail(Path(held.log_path)) if held.log_path else ""
        self._owe(
            held,
            _fail(
                f"the bench agent restarted {what}; the attempt's outcome is lost",
                retryable=True,
                output=output,
            ),
        )


def _connect(config: AgentConfig) -> Client:
    return Client(config.url, config.token(), timeout=10.0, max_retries=2)


def _exit_status(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit code {returncode}"


def _fail(headline: str, *, retryable: bool, output: str = "") -> Report:
    """A failure report: the headline, then as much of the output's tail as fits."""
    error = headline
    if output:
        banner = "\n--- last output ---\n"
        room = ERROR_LIMIT - len(headline) - len(banner)
        if room > 0:
            error = headline + banner + output[-room:]
    return Report(kind="fail", error=error[:ERROR_LIMIT], retryable=retryable)
