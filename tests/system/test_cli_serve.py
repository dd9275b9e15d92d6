"""`orchestrator serve` and `make run` as a new user meets them: real processes, real ports.

Each server runs in a temporary working directory, so its ``./var`` (store, tokens, cursor
key) is the test's own, with only the ORCH_* settings the test gives. Nothing sleeps: the
banner is printed once the port is bound, so a test polls the output for it, and a request
sent then waits in the socket's backlog until the application serves it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.settings import Settings

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
ORCHESTRATOR = Path(sys.executable).with_name("orchestrator")
DEADLINE_S = 30.0
BANNER = re.compile(r"^Bench Orchestrator on (http://127\.0\.0\.1:(\d+)) ", re.MULTILINE)


def child_env(**settings: str) -> dict[str, str]:
    """This process's environment without its ORCH_* variables, plus ``settings``."""
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("ORCH_")}
    return {**inherited, **settings}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    url: str = ""

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def wait_for_banner(self) -> str:
        """The URL the banner names, polled for until the deadline."""
        deadline = time.monotonic() + DEADLINE_S
        while (found := BANNER.search(self.stdout.read_text(errors="replace"))) is None:
            if self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no banner within {DEADLINE_S} s:\n{self.output()}")
            time.sleep(0.02)
        self.url = found.group(1)
        return self.url

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(DEADLINE_S)


@contextmanager
def serving(
    command: list[str], cwd: Path, env: dict[str, str], logs: Path, *, group: bool = False
) -> Iterator[Served]:
    """``command`` running; whatever the test did, nothing of it is left running after."""
    logs.mkdir(parents=True, exist_ok=True)
    stdout, stderr = logs / "stdout", logs / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=group
        )
    served = Served(process, stdout, stderr)
    try:
        yield served
    finally:
        if process.poll() is None:
            if group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
            process.wait(DEADLINE_S)


def serve(cwd: Path, logs: Path, *args: str, **settings: str) -> AbstractContextManager[Served]:
    return serving([str(ORCHESTRATOR), "serve", *args], cwd, child_env(**settings), logs)


def dev_tokens(cwd: Path) -> dict[str, str]:
    text = (cwd / "var" / "dev-tokens.env").read_text()
    return dict(re.findall(r"^export (\w+)=(\S+)$", text, re.MULTILINE))


def log_records(served: Served) -> list[dict[str, object]]:
    """stderr is a file, not a terminal: ORCH_LOG_FORMAT=auto writes JSON lines there."""
    return [json.loads(line) for line in served.stderr.read_text().splitlines()]


def test_a_port_in_use_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(ORCHESTRATOR), "serve", "--port", str(port)],
            cwd=tmp_path,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            check=False,
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f"orchestrator: 127.0.0.1:{port} is in use (another orchestrator serve?): stop it, "
        f"or choose another port with ORCH_PORT={port + 1} make run"
    ]
    assert done.stdout == ""  # no banner
    assert list(tmp_path.iterdir()) == []  # no store, no tokens: nothing started


def test_the_port_comes_from_orch_port_too(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(ORCHESTRATOR), "serve"],
            cwd=tmp_path,
            env=child_env(ORCH_PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            check=False,
        )
    assert done.returncode == 2 and f"127.0.0.1:{port} is in use" in done.stderr


def test_the_cursor_key_is_made_once_0600_and_cursors_survive_a_restart(tmp_path: Path) -> None:
    key_file = tmp_path / "var" / "cursor-secret"
    with serve(tmp_path, tmp_path / "logs-1", "--port", "0") as first:
        url = first.wait_for_banner()
        assert f"made the key that signs pagination cursors in var{os.sep}cursor-secret" in (
            first.stdout.read_text()
        )
        admin = {"Authorization": f"Bearer {dev_tokens(tmp_path)['ADMIN_TOKEN']}"}
        with httpx.Client(base_url=url, headers=admin, timeout=DEADLINE_S) as http:
            assert http.get("/readyz").status_code == 200
            for bench_id in ("rig-1", "rig-2"):
                body = {"bench_id": bench_id, "name": bench_id, "type": "hil"}
                created = http.post("/v1/benches", json=body)
                assert created.status_code == 201, created.text
            page = http.get("/v1/benches", params={"limit": 1}).json()
        assert [bench["bench_id"] for bench in page["items"]] == ["rig-1"]
        assert first.stop() == 0, first.output()
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    key = key_file.read_text()
    assert len(key.strip()) == 64

    with serve(tmp_path, tmp_path / "logs-2", "--port", "0") as second:
        url = second.wait_for_banner()
        assert "made the key" not in second.stdout.read_text()
        with httpx.Client(base_url=url, headers=admin, timeout=DEADLINE_S) as http:
            rest = http.get("/v1/benches", params={"limit": 1, "cursor": page["next_cursor"]})
        assert rest.status_code == 200, rest.text  # signed by the key of the first process
        assert [bench["bench_id"] for bench in rest.json()["items"]] == ["rig-2"]
        assert second.stop() == 0, second.output()
    assert key_file.read_text() == key
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"

    for served in (first, second):
        records = log_records(served)
        assert "store ready" in [record["message"] for record in records]
        assert [r for r in records if r["level"] == "WARNING"] == []
        assert "ORCH_CURSOR_SECRET" not in served.output()
        assert all("color_message" not in record for record in records)


def test_an_explicit_cursor_secret_makes_no_key_file(tmp_path: Path) -> None:
    with serve(tmp_path, tmp_path / "logs", "--port", "0", ORCH_CURSOR_SECRET="shared") as server:
        with httpx.Client(base_url=server.wait_for_banner(), timeout=DEADLINE_S) as http:
            assert http.get("/readyz").status_code == 200
        assert server.stop() == 0, server.output()
    assert not (tmp_path / "var" / "cursor-secret").exists()
    assert "ORCH_CURSOR_SECRET" not in server.output()


def test_without_the_embedded_store_no_key_is_made_and_the_warning_stays(
    tmp_path: Path, moto_endpoint: str
) -> None:
    # Replicas on DynamoDB each made a key of their own: they must share ORCH_CURSOR_SECRET.
    settings = {
        "ORCH_STORE": "dynamodb",
        "ORCH_DYNAMODB_ENDPOINT_URL": moto_endpoint,
        "ORCH_TABLE_PREFIX": f"serve{uuid.uuid4().hex[:6]}-",
        "ORCH_CREATE_TABLES": "true",
        "ORCH_HOUSEKEEPING_INTERVAL_S": "0",
    }
    with serve(tmp_path, tmp_path / "logs", "--port", "0", **settings) as server:
        with httpx.Client(base_url=server.wait_for_banner(), timeout=DEADLINE_S) as http:
            assert http.get("/readyz").status_code == 200
        assert server.stop() == 0, server.output()
    assert not (tmp_path / "var" / "cursor-secret").exists()
    warnings = [r["message"] for r in log_records(server) if r["level"] == "WARNING"]
    assert warnings == [
        "ORCH_CURSOR_SECRET is unset and var/cursor-secret holds no key: "
        "cursors work in this process only"
    ]


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_no_file_or_an_empty_one_holds_no_key(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "cursor-secret"
    if content is not None:
        path.write_text(content)
    assert Settings(cursor_secret_file=path).stored_cursor_secret() is None


def test_the_key_file_is_read_without_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "cursor-secret"
    path.write_text("k" * 64 + "\n")
    assert Settings(cursor_secret_file=path).stored_cursor_secret() == "k" * 64


# --- make run ----------------------------------------------------------------------------

# -o: take the install stamp as up to date (the test's venv is installed), so that make
# neither installs nor, with -n, prints the install steps.
MAKE = ["make", "--no-print-directory", "-o", ".venv/.runtime-installed"]


def make_run_dry(*args: str, **env: str) -> str:
    done = subprocess.run(
        [*MAKE, "-n", "run", *args],
        cwd=REPO,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=True,
    )
    return done.stdout.strip()


def test_make_run_leaves_host_and_port_to_orch_settings() -> None:
    # Nothing forced: ORCH_HOST / ORCH_PORT (or the settings' defaults) reach the server.
    assert make_run_dry(ORCH_PORT="8001", ORCH_HOST="0.0.0.0") == ".venv/bin/orchestrator serve"


def test_make_run_host_and_port_given_on_the_command_line_win() -> None:
    assert make_run_dry("PORT=8001", ORCH_PORT="9000") == ".venv/bin/orchestrator serve --port 8001"
    assert make_run_dry("HOST=0.0.0.0", "PORT=8001") == (
        ".venv/bin/orchestrator serve --host 0.0.0.0 --port 8001"
    )
    assert make_run_dry("HOST=", "PORT=") == ".venv/bin/orchestrator serve"


def test_make_run_ignores_host_and_port_from_the_environment() -> None:
    # tcsh and others export HOST as the machine's name; it must not become the address.
    assert make_run_dry(HOST="some-box", PORT="9000") == ".venv/bin/orchestrator serve"


def test_make_run_serves_on_orch_port(tmp_path: Path) -> None:
    if not ORCHESTRATOR.exists() or ORCHESTRATOR.parent != REPO / ".venv" / "bin":
        pytest.skip("make run serves from the repository's .venv")
    port = free_port()
    env = child_env(
        ORCH_PORT=str(port),
        ORCH_SQLITE_PATH=str(tmp_path / "orchestrator.db"),
        ORCH_TOKENS_FILE=str(tmp_path / "tokens.json"),
        ORCH_CURSOR_SECRET_FILE=str(tmp_path / "cursor-secret"),
    )
    with serving([*MAKE, "run"], REPO, env, tmp_path / "logs", group=True) as served:
        assert served.wait_for_banner() == f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=served.url, timeout=DEADLINE_S) as http:
            assert http.get("/readyz").status_code == 200
        # As Ctrl-C would, to make and the server both: make dies of it, the server stops.
        os.killpg(served.process.pid, signal.SIGTERM)
        assert served.process.wait(DEADLINE_S) in (0, -signal.SIGTERM)
        deadline = time.monotonic() + DEADLINE_S
        while group_alive(served.process.pid):
            assert time.monotonic() < deadline, "the server outlived make"
            time.sleep(0.02)
    assert "Finished server process" in served.stderr.read_text(), served.output()
    assert "Traceback" not in served.output()


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _children(pid: int) -> set[int]:
    return {int(n) for n in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _workers_serving(pid: int) -> set[int]:
    """The worker processes of ``pid`` that hold a listening socket (not a helper)."""
    return {
        child
        for child in _children(pid)
        if "--multiprocessing-fork" in Path(f"/proc/{child}/cmdline").read_text()
    }


def test_workers_serve_one_port_and_stop_together(tmp_path: Path) -> None:
    port = free_port()
    with serve(tmp_path, tmp_path / "logs", "--workers", "2", ORCH_PORT=str(port)) as served:
        url = served.wait_for_banner()
        token = dev_tokens(tmp_path)["ADMIN_TOKEN"]
        deadline = time.monotonic() + DEADLINE_S
        while len(workers := _workers_serving(served.process.pid)) < 2:
            assert time.monotonic() < deadline, served.output()
            time.sleep(0.02)
        # Every request is answered, whichever worker accepts it; both share one store.
        created = httpx.post(
            f"{url}/v1/benches",
            json={"bench_id": "rig-w", "name": "w", "type": "hil"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=DEADLINE_S,
        )
        assert created.status_code == 201, created.text
        for _ in range(20):
            with httpx.Client(timeout=DEADLINE_S) as fresh:  # a new connection each time
                read = fresh.get(
                    f"{url}/v1/benches/rig-w", headers={"Authorization": f"Bearer {token}"}
                )
            assert read.status_code == 200
        assert served.stop() == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
