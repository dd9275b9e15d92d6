"""AsyncClient: the same operations as coroutines, lists as async iterators, same errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from bench_client import AsyncClient, Conflict, NotFound, PreconditionFailed, Unavailable
from bench_client.models import BenchOut, ReservationStatus

from tests.client.conftest import LiveApi


async def test_async_client_against_the_service(live_api: LiveApi) -> None:
    tokens = live_api.tokens
    async with (
        AsyncClient(live_api.url, tokens["ADMIN_TOKEN"], page_size=1) as admin,
        AsyncClient(live_api.url, tokens["USER_TOKEN"]) as user,
        AsyncClient(live_api.url, tokens["AGENT_TOKEN"]) as agent,
    ):
        bench = await admin.create_bench("rig-1", "HIL rig 1", "hil", capabilities=["can-bus"])
        await admin.create_bench("rig-2", "HIL rig 2", "hil", capabilities=["can-bus"])
        assert (await user.get_bench("rig-1")).version == 1
        assert [b.bench_id async for b in admin.list_benches(capabilities=["can-bus"])] == [
            "rig-1",
            "rig-2",
        ]
        beat = await agent.post_heartbeat("rig-1", "1.0.0")
        assert beat.next_heartbeat_due_at.tzinfo is not None

        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        booked = await user.create_reservation(
            start=start, end=start + timedelta(hours=1), bench_id="rig-1"
        )
        assert booked.status is ReservationStatus.confirmed
        with pytest.raises(Conflict) as caught:
            await user.create_reservation(
                start=start, end=start + timedelta(hours=1), bench_id="rig-1"
            )
        assert [c.reservation_id for c in caught.value.conflicts] == [booked.reservation_id]
        with pytest.raises(NotFound):
            await user.get_bench("nope")

        windows = await user.find_availability(timedelta(hours=1), bench_id="rig-1")
        assert windows and windows[0].bench_id == "rig-1"

        await admin.update_bench(bench, name="changed")
        with pytest.raises(PreconditionFailed) as stale:
            await admin.update_bench(bench, name="late")
        assert stale.value.current_etag == '"2"'

        attempts: list[int] = []

        async def change(current: BenchOut) -> BenchOut:
            attempts.append(current.version)
            if len(attempts) == 1:
                await admin.update_bench(await admin.get_bench("rig-1"), labels={"a": "b"})
            return await admin.update_bench(current, name="mine")

        async def read() -> BenchOut:
            return await admin.get_bench("rig-1")

        result = await admin.update(read, change)
        assert attempts == [2, 3] and (result.version, result.name) == (4, "mine")
        assert [e.version async for e in admin.bench_history("rig-1")] == [1, 2, 3, 4]


async def test_async_client_retries_503_with_retry_after() -> None:
    calls: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        body = {"title": "Service Unavailable", "detail": "store down"}
        return httpx.Response(503, headers={"Retry-After": "0"}, json=body)

    transport = httpx.MockTransport(handler)
    async with AsyncClient("http://svc.test", "t", transport=transport, max_retries=2,
                           backoff_base=0.001) as client:  # fmt: skip
        with pytest.raises(Unavailable) as caught:
            await client.get_bench("rig-1")
    assert len(calls) == 3
    assert str(caught.value) == "503 Service Unavailable: store down"
