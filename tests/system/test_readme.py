"""README.md is a test: its ```sh blocks run in order, in one ``sh -eu``, against a fresh
server on a free port, exactly as a new user would paste them.

Every curl is checked: a status of 400 or more fails the run unless the comment line above
the call says ``→ <status>``, and then that status is the only one accepted. The server is
started as the README says for the example (short leases), in a scratch directory that
looks like a checkout (``.venv``, ``examples``, ``tests``, ``docs`` linked in), so nothing
is written into the repository's own ``var/``.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
EXPECTATION = re.compile(r"^\s*#.*→ (\d{3})\b")
START_DEADLINE_S = 30.0
RUN_DEADLINE_S = 240.0

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("readme")]

# Checks each call's status; the README's own commands stay plain curl.
PREAMBLE = r"""
_expect=
expect() { _expect=$1; }
curl() {
  _wanted=$_expect
  _expect=
  _out=$(command curl -w '\n%{http_code}' "$@") || {
    echo "README: curl failed ($?): $*" >&2; return 1
  }
  _status=$(printf '%s\n' "$_out" | tail -n 1)
  printf '%s\n' "$_out" | sed '$d'
  if [ -n "$_wanted" ]; then
    [ "$_status" = "$_wanted" ] || {
      echo "README: expected $_wanted, got $_status: curl $*" >&2; return 1
    }
  elif [ "$_status" -ge 400 ]; then
    echo "README: status $_status: curl $*" >&2; return 1
  fi
}
"""


def shell_blocks(text: str) -> list[str]:
    """The ```sh blocks, in order (```console blocks are shown, not run)."""
    return re.findall(r"^```sh\n(.*?)^```$", text, flags=re.S | re.M)


def with_expectations(block: str) -> str:
    """Each ``→ NNN`` comment becomes ``expect NNN`` before the next call, a plain curl."""
    lines: list[str] = []
    pending: str | None = None
    for line in block.splitlines():
        found = EXPECTATION.match(line)
        if found:
            pending = found.group(1)
        elif pending is not None and line.strip() and not line.lstrip().startswith("#"):
            assert line.lstrip().startswith("curl "), f"→ {pending} is not above a curl: {line}"
            lines.append(f"expect {pending}")
            pending = None
        lines.append(line)
    assert pending is None, f"→ {pending} at the end of a block"
    return "\n".join(lines)


def test_the_walkthrough_is_shell_that_the_checks_understand() -> None:
    blocks = shell_blocks(README.read_text())
    assert len(blocks) >= 5
    script = "\n".join(with_expectations(block) for block in blocks)
    # The expected failures the README shows, each checked for its exact status.
    assert [int(code) for code in re.findall(r"^expect (\d{3})$", script, re.M)] == [
        428,
        412,
        409,
        403,
        204,
    ]
    # POSIX shell: no bash-only words a dash user would trip on.
    for bashism in ("source ", "<(", "[[", "date -d", "function "):
        assert bashism not in script, bashism


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    for name in (".venv", "examples", "tests", "docs"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


@pytest.fixture
def server(checkout: Path) -> Iterator[str]:
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORCH_")}
    env |= {
        "ORCH_TASK_LEASE_S": "2",
        "ORCH_HOUSEKEEPING_INTERVAL_S": "1",
        "ORCH_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
    }
    log = (checkout / "server.log").open("wb")
    process = subprocess.Popen(
        [str(REPO / ".venv/bin/orchestrator"), "serve", "--port", str(port)],
        cwd=checkout,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_DEADLINE_S
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert process.poll() is None, (checkout / "server.log").read_text()
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_the_readme_runs_top_to_bottom(checkout: Path, server: str) -> None:
    blocks = shell_blocks(README.read_text())
    script = PREAMBLE + "\n".join(with_expectations(block) for block in blocks)
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORCH_")}
    env |= {
        "API": server,
        "MOTO": f"http://127.0.0.1:{_free_port()}",
        "DYNAMO_API": f"http://127.0.0.1:{_free_port()}",
        "HOOK_PORT": str(_free_port()),
        "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",
    }
    done = subprocess.run(
        ["sh", "-eu"],
        input=script,
        text=True,
        cwd=checkout,
        env=env,
        capture_output=True,
        timeout=RUN_DEADLINE_S,
    )
    output = f"--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-4000:]}"
    assert done.returncode == 0, output
    # What the walkthrough promises, seen in what it printed.
    assert "execution passed" in done.stdout, output  # the example's happy path
    assert "execution errored" in done.stdout, output  # and its agent that died
    assert '"status":"passed"' in done.stdout or "\npassed\n" in done.stdout, output
    assert list((checkout / "var/archive").rglob("*.jsonl.gz")), output
