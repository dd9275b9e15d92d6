"""The dashboard's timeline with 200 benches and a week of reservations: how long the week
view takes to render, and how large it is.

A SQLite file store gets 200 benches and, on each, three bookings a day of 2-4 hours for
the next 7 days (booked through the reservation service, as the API would). The week view
(``GET /ui/timeline?view=week``, signed in as a user) is then rendered ``--runs`` times
in process (the app over httpx's ASGI transport: routing, the session, one calendar read
per bench, the template) and once over HTTP from a real ``orchestrator serve`` on the
same file. Reported: the median and the spread of the in-process renders, the HTTP one,
the page's size, benches and bars.

    python -m bench.timeline_render [--benches 200] [--runs 10] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from app.benches.service import NewBench
from app.deps import bench_service, reservation_service
from app.http.auth import token_digest
from app.identity import Actor, Principal, Role
from app.main import create_app
from app.reservations.domain import Window
from app.reservations.service import BookingRequest
from app.settings import Settings
from app.state import AppState
from tests.support.api_server import settings_env, spawn_api

USER_TOKEN = "bench-user-token"
ADMIN_TOKEN = "bench-admin-token"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _settings(folder: Path) -> Settings:
    tokens = folder / "tokens.json"
    tokens.write_text(
        json.dumps(
            [
                {"token_sha256": token_digest(ADMIN_TOKEN), "subject": "admin", "role": "admin"},
                {"token_sha256": token_digest(USER_TOKEN), "subject": "alice", "role": "user"},
            ]
        )
    )
    return Settings(
        store="sqlite",
        sqlite_path=str(folder / "orchestrator.db"),
        tokens_file=tokens,
        cursor_secret="bench-secret",
        housekeeping_interval_s=0,
        rate_limit_per_s=0,
        webhook_delivery=False,
        log_level="WARNING",
        log_format="json",
    )


async def _seed(state: AppState, benches: int, seed: int) -> int:
    """``benches`` benches, three bookings a day each for a week; how many bookings."""
    rng = random.Random(seed)
    admin = Actor(Principal("admin", Role.ADMIN), "bench")
    users = [Actor(Principal(f"user-{n:02d}", Role.USER), "bench") for n in range(20)]
    benches_ = bench_service(state.store, state.clock)
    booking = reservation_service(state.store, state.clock, state.settings)
    start = (state.clock.now() + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    made = 0
    for n in range(benches):
        bench_id = f"rig-{n:03d}"
        await benches_.create(
            NewBench(
                bench_id=bench_id,
                name=f"HIL rig {n:03d}",
                type="hil" if n % 4 else "manual",
                capabilities=frozenset({"can-bus"} if n % 2 else {"arm64", "usb"}),
                labels={"room": f"b{n % 5}"},
                heartbeat_interval_s=30,
            ),
            admin,
        )
        for day in range(7):
            moment = start + timedelta(days=day, hours=rng.randint(0, 2))
            for _ in range(3):
                hours = rng.randint(2, 4)
                window = Window(moment, moment + timedelta(hours=hours))
                await booking.book(
                    BookingRequest(window=window, purpose=f"test {made}", bench_id=bench_id),
                    rng.choice(users),
                    None,
                )
                made += 1
                moment = window.end + timedelta(hours=rng.randint(1, 3))
    return made


def _sign_in_sync(http: httpx.Client) -> None:
    form = http.get("/ui/sign-in")
    found = CSRF.search(form.text)
    assert found is not None
    answer = http.post("/ui/sign-in", data={"token": USER_TOKEN, "csrf": found.group(1)})
    assert answer.status_code == 303, answer.text


async def _sign_in(http: httpx.AsyncClient) -> None:
    form = await http.get("/ui/sign-in")
    found = CSRF.search(form.text)
    assert found is not None
    answer = await http.post("/ui/sign-in", data={"token": USER_TOKEN, "csrf": found.group(1)})
    assert answer.status_code == 303, answer.text


async def _in_process(settings: Settings, benches: int, runs: int) -> dict[str, Any]:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        state: AppState = app.state.orchestrator
        seeded = time.perf_counter()
        bookings = await _seed(state, benches, seed=7)
        seeded = time.perf_counter() - seeded
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            await _sign_in(http)
            timings: list[float] = []
            page = None
            for _ in range(runs + 1):  # the first one warms up (templates, caches)
                began = time.perf_counter()
                page = await http.get("/ui/timeline?view=week")
                timings.append(time.perf_counter() - began)
                assert page.status_code == 200, page.text[:500]
            assert page is not None
            body = page.text
    timings = timings[1:]
    return {
        "benches": body.count('class="t-row a-'),
        "bars": body.count('class="bar '),
        "bookings": bookings,
        "seed_s": round(seeded, 1),
        "runs": runs,
        "median_ms": round(statistics.median(timings) * 1000, 1),
        "min_ms": round(min(timings) * 1000, 1),
        "max_ms": round(max(timings) * 1000, 1),
        "page_kib": round(len(body.encode()) / 1024, 1),
    }


def _over_http(settings: Settings, folder: Path) -> float:
    server = spawn_api(settings_env(settings), folder / "api.log")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/readyz").status_code == 200
            _sign_in_sync(http)
            http.get("/ui/timeline?view=week")  # the process's first: imports, templates
            began = time.perf_counter()
            page = http.get("/ui/timeline?view=week")
            elapsed = time.perf_counter() - began
            assert page.status_code == 200
            return elapsed
    finally:
        server.kill()
        server.process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--benches", type=int, default=200)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="timeline-") as scratch:
        folder = Path(scratch)
        settings = _settings(folder)
        result = asyncio.run(_in_process(settings, args.benches, args.runs))
        result["http_ms"] = round(_over_http(settings, folder) * 1000, 1)
    result["at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"timeline, week view: {result['benches']} benches, {result['bars']} bars"
        f" ({result['bookings']} bookings): median {result['median_ms']} ms in process"
        f" (min {result['min_ms']}, max {result['max_ms']}, {result['runs']} runs),"
        f" {result['http_ms']} ms over HTTP, {result['page_kib']} KiB",
        flush=True,
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
