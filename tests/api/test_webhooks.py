"""Webhooks on every store, driven step by step: subscriptions, signed deliveries that a
Standard Webhooks library verifies, retries, final failures, redelivery, disabling.

The relay and the sender are run here by the test (one pass at a time, on the test clock)
against a real receiver on loopback; tests/system/test_webhook_delivery.py runs them as
the service does, in its processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from standardwebhooks.webhooks import Webhook as Verifier

from app.clock import ManualClock
from app.main import create_app
from app.settings import Settings
from app.store.base import Store
from app.webhooks.relay import Relay
from app.webhooks.sender import Sender, http_client
from app.webhooks.targets import allowed_networks
from tests.api.test_benches import assert_problem
from tests.api.test_reservations import add_bench, book
from tests.conftest import ADMIN, AGENT1, ALICE, BOB
from tests.support.receiver import Receiver, receiving


@dataclass
class Lab:
    http: httpx.AsyncClient
    relay: Relay
    sender: Sender
    clock: ManualClock

    async def deliver(self) -> int:
        """One fan-out and one sending pass; the attempts made."""
        await self.relay.fan_out()
        return await self.sender.send_due()

    async def subscribe(
        self, url: str, headers: dict[str, str] = ALICE, **body: Any
    ) -> dict[str, Any]:
        answer = await self.http.post(
            "/v1/webhooks", json={"url": url, "events": ["reservation.*"], **body}, headers=headers
        )
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created

    async def deliveries(
        self, webhook_id: str, headers: dict[str, str] = ALICE
    ) -> list[dict[str, Any]]:
        answer = await self.http.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=headers)
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as running:
        yield running


@pytest.fixture
async def lab(settings: Settings, store: Store, clock: ManualClock) -> AsyncIterator[Lab]:
    allowed = settings.model_copy(update={"webhook_allow_networks": "127.0.0.0/8"})
    app = create_app(allowed, store=store, clock=clock)
    async with LifespanManager(app) as manager, http_client() as outbound:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            sender = Sender(store, clock, allowed_networks("127.0.0.0/8"), outbound)
            relay = Relay(store, clock)
            await relay.fan_out()  # its first pass, as at a process's start: from the newest
            yield Lab(http, relay, sender, clock)


def verified(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    """Every message checked as a receiver would, with the reference library."""
    verifier = Verifier(secret)
    checked = []
    for message in receiver.messages():
        verifier.verify(message.body, message.headers)
        assert message.headers["webhook-id"] == message.json["data"]["event_id"]
        checked.append(message.json)
    return checked


async def test_a_booking_and_its_cancel_arrive_signed_and_in_order(
    lab: Lab, receiver: Receiver
) -> None:
    hook = await lab.subscribe(receiver.url)
    await add_bench(lab.http)
    booked = (await book(lab.http)).json()
    await lab.http.post(f"/v1/reservations/{booked['reservation_id']}/cancel", headers=ALICE)
    lab.clock.advance(timedelta(seconds=5))
    while await lab.deliver():
        pass
    messages = verified(receiver, hook["secret"])
    assert [m["type"] for m in messages] == ["reservation.created", "reservation.cancelled"]
    assert [m["data"]["entity"]["version"] for m in messages] == [1, 2]
    assert messages[0]["data"]["data"]["reservation_id"] == booked["reservation_id"]
    listed = await lab.deliveries(hook["webhook_id"])
    assert [(d["event_type"], d["status"], len(d["attempts"])) for d in listed] == [
        ("reservation.created", "delivered", 1),
        ("reservation.cancelled", "delivered", 1),
    ]
    assert listed[0]["attempts"][0]["status_code"] == 200
    assert listed[0]["attempts"][0]["answer"] == '{"status": 200}'
    # Fan-out again (another replica, a restart): nothing is sent twice.
    await lab.relay.fan_out()
    assert await lab.sender.send_due() == 0
    assert len(receiver.messages()) == 2


async def test_failures_are_retried_with_backoff_until_one_succeeds(
    lab: Lab, receiver: Receiver
) -> None:
    hook = await lab.subscribe(receiver.url)
    receiver.script += [(500, {}), (503, {}), (429, {"Retry-After": "120"})]
    await add_bench(lab.http)
    await book(lab.http)
    lab.clock.advance(timedelta(seconds=1))
    assert await lab.deliver() == 1
    assert await lab.deliver() == 0  # not due yet: backing off
    for wait in (timedelta(seconds=5), timedelta(seconds=10)):
        lab.clock.advance(wait)
        assert await lab.deliver() == 1
    [delivery] = await lab.deliveries(hook["webhook_id"])
    assert delivery["status"] == "pending"
    # 429 with Retry-After: 120 s, whatever the backoff says.
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 429]
    lab.clock.advance(timedelta(seconds=100))
    assert await lab.deliver() == 0
    lab.clock.advance(timedelta(seconds=21))
    assert await lab.deliver() == 1
    [delivery] = await lab.deliveries(hook["webhook_id"])
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 429, 200]
    ids = {m.headers["webhook-id"] for m in receiver.messages()}
    assert len(ids) == 1 and len(receiver.messages()) == 4  # one event, four attempts


async def test_a_4xx_is_final_and_redeliver_sends_it_again(lab: Lab, receiver: Receiver) -> None:
    hook = await lab.subscribe(receiver.url)
    receiver.script.append((400, {}))
    await add_bench(lab.http)
    await book(lab.http)
    lab.clock.advance(timedelta(seconds=1))
    assert await lab.deliver() == 1
    lab.clock.advance(timedelta(hours=1))
    assert await lab.deliver() == 0
    [delivery] = await lab.deliveries(hook["webhook_id"])
    assert (delivery["status"], delivery["next_attempt_at"]) == ("failed", None)
    again = await lab.http.post(
        f"/v1/webhooks/{hook['webhook_id']}/deliveries/{delivery['delivery_id']}/redeliver",
        headers=ALICE,
    )
    assert again.status_code == 202, again.text
    assert await lab.deliver() == 1
    [delivery] = await lab.deliveries(hook["webhook_id"])
    assert delivery["status"] == "delivered" and len(delivery["attempts"]) == 2


async def test_a_day_of_failures_disables_the_subscription_and_says_so(
    lab: Lab, receiver: Receiver
) -> None:
    hook = await lab.subscribe(receiver.url)
    receiver.script += [(503, {})] * 200
    await add_bench(lab.http)
    await book(lab.http)
    lab.clock.advance(timedelta(seconds=1))
    await lab.deliver()
    for _ in range(40):
        lab.clock.advance(timedelta(hours=1))
        await lab.deliver()
    shown = (await lab.http.get(f"/v1/webhooks/{hook['webhook_id']}", headers=ALICE)).json()
    assert shown["state"] == "disabled"
    assert "failed since" in shown["disabled_reason"]
    [delivery] = await lab.deliveries(hook["webhook_id"])
    assert delivery["status"] == "failed"
    events = await lab.http.get(
        "/v1/events", params={"format": "json", "type": "webhook.*"}, headers=ALICE
    )
    [disabled] = events.json()["items"]
    assert (disabled["type"], disabled["user_id"]) == ("webhook.disabled", "alice")
    enabled = await lab.http.patch(
        f"/v1/webhooks/{hook['webhook_id']}",
        json={"state": "active"},
        headers={**ALICE, "If-Match": f'"{shown["version"]}"'},
    )
    assert enabled.status_code == 200, enabled.text
    assert (enabled.json()["state"], enabled.json()["failing_since"]) == ("active", None)


async def test_the_slack_format_posts_one_line_of_text(lab: Lab, receiver: Receiver) -> None:
    await lab.subscribe(receiver.url, format="slack")
    await add_bench(lab.http)
    await book(lab.http, purpose="bring-up")
    lab.clock.advance(timedelta(seconds=1))
    assert await lab.deliver() == 1
    [message] = receiver.messages()
    assert list(message.json) == ["text"]
    text = message.json["text"]
    assert text.startswith("[reservation.created] reservation of rig-1 by alice")
    assert "\n" not in text


async def test_ping_reaches_only_that_subscription(lab: Lab, receiver: Receiver) -> None:
    hook = await lab.subscribe(receiver.url)
    other = await lab.subscribe(receiver.url, BOB)
    pinged = await lab.http.post(f"/v1/webhooks/{hook['webhook_id']}/ping", headers=ALICE)
    assert pinged.status_code == 202, pinged.text
    assert await lab.deliver() == 1
    [message] = verified(receiver, hook["secret"])
    assert message["type"] == "webhook.ping"
    assert await lab.deliveries(other["webhook_id"], BOB) == []


async def test_the_secret_is_shown_once_and_rotates(lab: Lab, receiver: Receiver) -> None:
    hook = await lab.subscribe(receiver.url)
    assert hook["secret"].startswith("whsec_")
    url = f"/v1/webhooks/{hook['webhook_id']}"
    for answer in (
        await lab.http.get(url, headers=ALICE),
        await lab.http.get("/v1/webhooks", headers=ALICE),
        await lab.http.get("/v1/webhooks", headers=ADMIN),
        await lab.http.get("/v1/events", params={"format": "json"}, headers=ADMIN),
    ):
        assert answer.status_code == 200
        assert hook["secret"] not in answer.text and "secret" not in answer.json()
    rotated = await lab.http.post(f"{url}/rotate-secret", headers=ALICE)
    assert rotated.status_code == 200, rotated.text
    fresh = rotated.json()["secret"]
    assert fresh != hook["secret"] and rotated.json()["version"] == 2
    await lab.http.post(f"{url}/ping", headers=ALICE)
    await lab.deliver()
    assert verified(receiver, fresh)[0]["type"] == "webhook.ping"


async def test_who_may_manage_which_subscription(lab: Lab, receiver: Receiver) -> None:
    hook = await lab.subscribe(receiver.url)
    url = f"/v1/webhooks/{hook['webhook_id']}"
    assert_problem(await lab.http.get(url, headers=BOB), 404)
    assert (await lab.http.get(url, headers=ADMIN)).status_code == 200
    assert_problem(await lab.http.get("/v1/webhooks", headers=AGENT1), 403)
    mine = (await lab.http.get("/v1/webhooks", headers=BOB)).json()["items"]
    assert mine == []
    assert_problem(await lab.http.delete(url, headers=ALICE), 428)
    assert_problem(await lab.http.delete(url, headers={**ALICE, "If-Match": '"7"'}), 412)
    gone = await lab.http.delete(url, headers={**ALICE, "If-Match": '"1"'})
    assert gone.status_code == 204
    assert_problem(await lab.http.get(url, headers=ALICE), 404)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/hook", "only http and https"),
        ("http://10.1.2.3/hook", "private address"),
        ("http://169.254.169.254/latest", "metadata"),
        ("http://[::1]:9/hook", "loopback"),
    ],
)
async def test_refused_urls_are_422_with_the_reason(
    client: httpx.AsyncClient, url: str, reason: str
) -> None:
    answer = await client.post(
        "/v1/webhooks", json={"url": url, "events": ["bench.*"]}, headers=ALICE
    )
    problem = assert_problem(answer, 422)
    assert reason in problem["detail"]


async def test_loopback_is_refused_unless_allowed(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["bench.*"]},
        headers=ALICE,
    )
    assert "loopback" in assert_problem(answer, 422)["detail"]
