"""Lists follow ``next_cursor`` across pages, lazily, with the filters on every page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from bench_client import Client

from tests.client.conftest import LiveApi


def test_lists_follow_next_cursor_across_pages(live_api: LiveApi) -> None:
    pages: list[httpx.Request] = []

    def count(request: httpx.Request) -> None:
        if request.method == "GET":
            pages.append(request)

    admin_token, user_token = live_api.tokens["ADMIN_TOKEN"], live_api.tokens["USER_TOKEN"]
    with Client(live_api.url, admin_token, page_size=2) as admin:
        made = [
            admin.create_bench(f"rig-{n}", f"rig {n}", "hil", capabilities=["can-bus"]).bench_id
            for n in range(7)
        ]
        admin.create_bench("other", "other", "flashing-station")
        admin._http.event_hooks["request"].append(count)

        listed = [bench.bench_id for bench in admin.list_benches(capabilities=["can-bus"])]
        assert sorted(listed) == sorted(made) and len(set(listed)) == 7
        assert len(pages) == 4  # 2 + 2 + 2 + 1
        assert all(request.url.params["limit"] == "2" for request in pages)
        assert all(request.url.params["capability"] == "can-bus" for request in pages)
        assert "cursor" not in pages[0].url.params and "cursor" in pages[1].url.params

        pages.clear()
        lazy = admin.list_benches()
        assert pages == []  # nothing is fetched before the first item is asked for
        assert next(lazy).bench_id in [*made, "other"]
        assert len(pages) == 1

    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    with Client(live_api.url, user_token, page_size=3) as user:
        booked = [
            user.create_reservation(
                start=start + timedelta(hours=n), end=start + timedelta(hours=n, minutes=30),
                bench_id="rig-0",
            ).reservation_id
            for n in range(5)
        ]  # fmt: skip
        assert [r.reservation_id for r in user.list_reservations(user_id="me")] == booked
        assert [r.reservation_id for r in user.bench_calendar("rig-0")] == booked
        history = list(user.reservation_history(booked[0]))
        assert [entry.version for entry in history] == [1]
