"""A scripted CI pipeline and bench agent against a running orchestrator.

    . var/dev-tokens.env
    .venv/bin/python examples/ci_and_agent.py http://127.0.0.1:8000

Uses a reservation of rig-1 that is active now, or books the next half hour (registering
rig-1 first if needed), then:
1. CI creates an execution of two tasks; the agent claims, heartbeats and completes each:
   the execution ends `passed`.
2. CI creates another; the agent claims its first task and "dies" (stops heartbeating).
   Housekeeping expires the lease and retries it; after the last attempt the task is dead
   and the execution `errored`. Start the server with a short lease to watch it quickly:
   ORCH_TASK_LEASE_S=2 ORCH_HOUSEKEEPING_INTERVAL_S=1 make run
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx


def main(base: str) -> None:
    ci = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {os.environ['CI_TOKEN']}"})
    admin = httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {os.environ['ADMIN_TOKEN']}"}
    )
    agent = httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {os.environ['AGENT_TOKEN']}"}
    )
    bench = admin.get("/v1/benches/rig-1")
    if bench.status_code == 404:
        admin.post(
            "/v1/benches", json={"bench_id": "rig-1", "name": "HIL rig 1", "type": "hil"}
        ).raise_for_status()
    active = ci.get("/v1/reservations", params={"bench_id": "rig-1", "status": "active"})
    active.raise_for_status()
    if active.json()["items"]:
        reservation_id = active.json()["items"][0]["reservation_id"]
        print("using the active reservation of rig-1:", reservation_id)
    else:
        now = datetime.now(UTC)
        booking = ci.post(
            "/v1/reservations",
            json={
                "bench_id": "rig-1",
                "start": now.isoformat(),
                "end": (now + timedelta(minutes=30)).isoformat(),
                "purpose": "example pipeline",
            },
        )
        booking.raise_for_status()
        reservation_id = booking.json()["reservation_id"]
        print("reserved rig-1:", reservation_id)

    def create_run(max_attempts: int) -> dict[str, Any]:
        response = ci.post(
            "/v1/executions",
            json={
                "reservation_id": reservation_id,
                "commit_sha": "9fceb02d0ae598e95dc970b74767f19372d61af8",
                "tasks": [
                    {"type": "flash", "params": {"image": "fw.bin"}, "max_attempts": max_attempts},
                    {"type": "test", "params": {"suite": "smoke"}, "max_attempts": max_attempts},
                ],
            },
            # A CI job that is retried sends the same key and gets the same run back.
            headers={"Idempotency-Key": f"pipeline-{uuid.uuid4()}"},
        )
        response.raise_for_status()
        run: dict[str, Any] = response.json()
        print("created execution", run["execution_id"], "status", run["status"])
        return run

    # 1. The happy path.
    run = create_run(max_attempts=3)
    while (claimed := agent.post("/v1/benches/rig-1/tasks/claim")).status_code == 200:
        task = claimed.json()
        print(f"  agent claimed {task['type']} (attempt {task['attempts']})")
        agent.post(f"/v1/tasks/{task['task_id']}/heartbeat").raise_for_status()
        agent.post(
            f"/v1/tasks/{task['task_id']}/complete", json={"result": {"ok": True}}
        ).raise_for_status()
    final = ci.get(f"/v1/executions/{run['execution_id']}").json()
    print("execution", final["status"], f"in {final['duration_s']} s")

    # 2. The agent dies mid-task, every time.
    run = create_run(max_attempts=2)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        claimed = agent.post("/v1/benches/rig-1/tasks/claim")
        if claimed.status_code == 200:
            task = claimed.json()
            print(f"  agent claimed {task['type']} (attempt {task['attempts']}) and died")
        status = ci.get(f"/v1/executions/{run['execution_id']}").json()["status"]
        if status != "running" and status != "queued":
            break
        time.sleep(1)  # an agent's poll interval
    final = ci.get(f"/v1/executions/{run['execution_id']}").json()
    print("execution", final["status"], [(t["type"], t["status"]) for t in final["tasks"]])
    history = ci.get(f"/v1/executions/{run['execution_id']}/history").json()["items"]
    print("history:", [(e["version"], e["action"], e["actor"]) for e in history])


def _problem(response: httpx.Response) -> str:
    """A Problem Details answer in one or two lines: title, detail, what was in the way."""
    try:
        problem = response.json()
    except ValueError:
        return f"{response.status_code} {response.reason_phrase}"
    line = f"{problem.get('status')} {problem.get('title')}: {problem.get('detail')}"
    for conflict in problem.get("conflicts") or []:
        line += (
            f"\n  in the way: {conflict['reservation_id']} {conflict['start']}..{conflict['end']}"
        )
    return line


if __name__ == "__main__":
    base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    missing = [
        name for name in ("CI_TOKEN", "ADMIN_TOKEN", "AGENT_TOKEN") if name not in os.environ
    ]
    if missing:
        sys.exit(f"set {', '.join(missing)} first: . var/dev-tokens.env")
    try:
        main(base)
    except httpx.HTTPStatusError as error:
        request = error.request
        sys.exit(f"{request.method} {request.url.path}: {_problem(error.response)}")
    except httpx.TransportError as error:
        sys.exit(f"cannot reach {base} ({error}): is `make run` running?")
