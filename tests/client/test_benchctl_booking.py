"""benchctl against a live service: login and profiles, benches, booking in the user's
terms, the 409 that names the reservation in the way, --earliest under a race."""

from __future__ import annotations

import json
import threading
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.client.conftest import LiveApi, start_api
from tests.client.test_benchctl_support import Benchctl, register

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    service = start_api(tmp_path_factory.mktemp("benchctl-booking"))
    try:
        register(service, "rig-1")
        yield service
    finally:
        service.kill()


@pytest.fixture
def benchctl(api: LiveApi, tmp_path: Path) -> Benchctl:
    return Benchctl(api, tmp_path)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_book_at_a_local_time_then_a_409_names_the_reservation_in_the_way(
    benchctl: Benchctl,
) -> None:
    register(benchctl.api, "rig-book", ["book-cap"])
    mine = benchctl.json(
        "book", "rig-book", "--at", "tomorrow 09:00", "--for", "2h", "--purpose", "CAN bring-up"
    )
    tomorrow = datetime.now(BERLIN).date() + timedelta(days=1)
    nine = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 9, tzinfo=BERLIN)
    assert _instant(mine["start"]) == nine
    assert _instant(mine["end"]) == nine + timedelta(hours=2)
    assert mine["bench_id"] == "rig-book"
    assert mine["purpose"] == "CAN bring-up"
    assert mine["status"] == "confirmed"

    # Another user, overlapping: exit 4, one or two lines naming the reservation.
    clash = benchctl(
        "book", "rig-book", "--at", "tomorrow 10:00", "--for", "3h", token="USER2_TOKEN"
    )
    assert clash.returncode == 4
    assert "Traceback" not in clash.stderr
    lines = clash.stderr.strip().splitlines()
    assert len(lines) == 2, clash.stderr
    assert "Conflict" in lines[0] and "already reserved" in lines[0]
    assert mine["reservation_id"] in lines[1]
    assert f"{tomorrow.isoformat()} 09:00 CE" in lines[1]  # its times in the local zone

    # The table, in the local zone; and -o json after the command prints the problem.
    listed = benchctl("reservations")
    assert listed.returncode == 0, listed.stderr
    assert mine["reservation_id"] in listed.stdout
    assert f"{tomorrow.isoformat()} 09:00 CE" in listed.stdout
    as_json = benchctl(
        "book",
        "rig-book",
        "--at",
        "tomorrow 10:00",
        "--for",
        "1h",
        "-o",
        "json",
        token="USER2_TOKEN",
    )
    assert as_json.returncode == 4
    assert json.loads(as_json.stdout)["conflicts"][0]["reservation_id"] == mine["reservation_id"]

    # Capabilities instead of a bench: the 409 lists each candidate and what holds it.
    any_bench = benchctl(
        "book", "-c", "book-cap", "--at", "tomorrow 10:00", "--for", "1h", token="USER2_TOKEN"
    )
    assert any_bench.returncode == 4
    assert f"rig-book: {mine['reservation_id']}" in any_bench.stderr


def test_move_extend_cancel_and_release(benchctl: Benchctl) -> None:
    register(benchctl.api, "rig-move", ["move-cap"])
    booked = benchctl.json("book", "rig-move", "--at", "in 1d", "--for", "1h")
    rid = booked["reservation_id"]
    moved = benchctl.json("move", rid, "--to", "2099-01-02 10:00")
    assert _instant(moved["start"]) == datetime(2099, 1, 2, 9, 0, tzinfo=UTC)  # CET
    assert _instant(moved["end"]) == datetime(2099, 1, 2, 10, 0, tzinfo=UTC)
    longer = benchctl.json("move", rid, "--extend", "30m")
    assert _instant(longer["end"]) == datetime(2099, 1, 2, 10, 30, tzinfo=UTC)
    assert longer["version"] == booked["version"] + 2

    cancelled = benchctl("cancel", rid)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled" in cancelled.stdout
    assert rid not in benchctl("reservations").stdout  # upcoming and active only
    assert rid in benchctl("reservations", "--all").stdout

    now = benchctl.json("book", "rig-move", "--at", "now", "--for", "1h")
    assert now["status"] == "active"
    released = benchctl.json("release", now["reservation_id"])
    assert released["status"] == "released"
    refused = benchctl("move", rid, "--extend", "1h")  # cancelled: the state refuses it
    assert refused.returncode == 4
    assert "cancelled" in refused.stderr


def test_benches_bench_show_history_and_free(benchctl: Benchctl) -> None:
    register(benchctl.api, "rig-show", ["show-cap", "arm64"])
    held = benchctl.json("book", "rig-show", "--at", "now", "--for", "1h", "--purpose", "debug")
    later = benchctl.json("book", "rig-show", "--at", "in 2h", "--for", "30m")

    listing = benchctl("benches", "--capability", "show-cap")
    assert listing.returncode == 0, listing.stderr
    assert "rig-show" in listing.stdout and "rig-1" not in listing.stdout
    online = benchctl.json("benches", "--status", "online")
    assert online == []  # no heartbeats yet

    shown = benchctl("bench", "show", "rig-show")
    assert shown.returncode == 0, shown.stderr
    assert "unmonitored" in shown.stdout  # never heard from: hand-operated
    assert "alice until" in shown.stdout and held["reservation_id"] in shown.stdout
    assert later["reservation_id"] in shown.stdout  # next bookings
    as_json = benchctl.json("bench", "show", "rig-show")
    assert as_json["current"]["reservation_id"] == held["reservation_id"]
    assert [r["reservation_id"] for r in as_json["upcoming"]] == [later["reservation_id"]]

    history = benchctl.json("bench", "history", "rig-show")
    assert [entry["action"] for entry in history] == ["created"]

    free = benchctl.json("free", "-c", "show-cap", "--for", "2h")
    assert free[0]["bench_id"] == "rig-show"
    assert _instant(free[0]["start"]) == _instant(later["end"])  # the 1h gap is too short
    table = benchctl("free", "--capability", "show-cap", "--for", "2h")
    assert "rig-show" in table.stdout and "CE" in table.stdout


def test_login_writes_a_profile_that_later_commands_use(benchctl: Benchctl) -> None:
    token_file = benchctl.home / "token"
    token_file.write_text(benchctl.api.tokens["USER2_TOKEN"] + "\n")
    bad_file = benchctl.home / "bad-token"
    bad_file.write_text("not-a-token\n")
    config = benchctl.home / "xdg" / "bench-orchestrator" / "config.toml"

    refused = benchctl(
        "login", "--url", benchctl.api.url, "--token-file", str(bad_file), token=None
    )
    assert refused.returncode == 4
    assert "Unauthorized" in refused.stderr
    assert not config.exists()

    done = benchctl(
        "login",
        "--url",
        benchctl.api.url,
        "--token-file",
        str(token_file),
        "--profile",
        "lab",
        token=None,
    )
    assert done.returncode == 0, done.stderr
    saved = tomllib.loads(config.read_text())
    assert saved == {
        "default_profile": "lab",
        "profiles": {"lab": {"url": benchctl.api.url, "token_file": str(token_file)}},
    }
    # No BENCH_URL / BENCH_TOKEN: the profile is what connects (as USER2, i.e. bob).
    register(benchctl.api, "rig-login", ["login-cap"])
    booked = benchctl.json("book", "rig-login", "--at", "in 2h", "--for", "1h", token=None)
    assert booked["user_id"] == "bob"
    named = benchctl("--profile", "lab", "reservations", token=None)
    assert booked["reservation_id"] in named.stdout
    unknown = benchctl("--profile", "nope", "reservations", token=None)
    assert unknown.returncode == 4
    assert "nope" in unknown.stderr and "Traceback" not in unknown.stderr


class _RacingProxy(ThreadingHTTPServer):
    """Forwards to the service; on the first availability answer, books its first window
    as another user before handing the answer back: the booker always loses that race."""

    def __init__(self, upstream: str, rival_token: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.rival_token = rival_token
        self.stolen: dict[str, str] | None = None
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _RacingProxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        keep = {"authorization", "content-type", "idempotency-key", "if-match", "x-request-id"}
        headers = {k: v for k, v in self.headers.items() if k.lower() in keep}
        answer = httpx.request(
            self.command, self.server.upstream + self.path, headers=headers, content=body
        )
        if self.path.startswith("/v1/availability") and answer.status_code == 200:
            with self.server.lock:
                windows = answer.json()["items"]
                if self.server.stolen is None and windows:
                    first = windows[0]
                    start = _instant(first["start"])
                    rival = httpx.post(
                        f"{self.server.upstream}/v1/reservations",
                        headers={"Authorization": f"Bearer {self.server.rival_token}"},
                        json={
                            "bench_id": first["bench_id"],
                            "start": start.isoformat(),
                            "end": (start + timedelta(hours=1)).isoformat(),
                        },
                    )
                    assert rival.status_code == 201, rival.text
                    self.server.stolen = rival.json()
        self.send_response(answer.status_code)
        for name in ("content-type", "etag", "location", "retry-after", "x-request-id"):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_PATCH = do_DELETE = _forward


def test_earliest_takes_the_next_window_when_someone_books_in_between(
    benchctl: Benchctl,
) -> None:
    register(benchctl.api, "rig-race", ["race-cap"])
    proxy = _RacingProxy(benchctl.api.url, benchctl.api.tokens["USER2_TOKEN"])
    serving = threading.Thread(target=proxy.serve_forever, daemon=True)
    serving.start()
    try:
        done = benchctl(
            "-o",
            "json",
            "book",
            "--capability",
            "race-cap",
            "--for",
            "1h",
            "--earliest",
            BENCH_URL=proxy.url,
        )
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert done.returncode == 0, done.stderr
    assert proxy.stolen is not None
    assert "was just taken" in done.stderr
    mine = json.loads(done.stdout)
    assert mine["bench_id"] == "rig-race"
    assert _instant(mine["start"]) == _instant(proxy.stolen["end"])  # the next free window
    assert mine["user_id"] == "alice" and proxy.stolen["user_id"] == "bob"


def test_two_earliest_bookers_at_once_each_get_a_window(benchctl: Benchctl) -> None:
    register(benchctl.api, "rig-pair", ["pair-cap"])
    args = ("-o", "json", "book", "-c", "pair-cap", "--for", "2h", "--earliest")
    first = benchctl.start(*args, token="USER_TOKEN")
    second = benchctl.start(*args, token="USER2_TOKEN")
    results = [process.communicate(timeout=60) for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, results
    windows = sorted(
        (_instant(r["start"]), _instant(r["end"]), r["user_id"])
        for r in (json.loads(out) for out, _ in results)
    )
    assert {user for _, _, user in windows} == {"alice", "bob"}
    (start_a, end_a, _), (start_b, end_b, _) = windows
    assert end_a - start_a == timedelta(hours=2) == end_b - start_b
    assert end_a <= start_b  # exactly one of them holds each window
    assert start_b - end_a < timedelta(minutes=1)  # the loser took the very next one
