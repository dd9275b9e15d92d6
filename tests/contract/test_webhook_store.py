"""Webhook subscriptions, their deliveries and the relay's checkpoint in the store port:
the same tests on every adapter."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from app.store.base import AlreadyExists, ItemNotFound, Store, VersionMismatch
from app.webhooks.domain import (
    Attempt,
    Delivery,
    WebhookState,
    after_attempt,
    claim,
    new_delivery,
    redeliver,
)
from tests.conftest import START
from tests.support.factories import (
    make_event,
    make_webhook,
    next_webhook,
    webhook_entry,
)


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def answered(delivery: Delivery, status: int, now_s: float) -> Delivery:
    """``delivery`` after an attempt that got ``status`` back ``now_s`` after START."""
    now = START + seconds(now_s)
    return after_attempt(
        delivery, Attempt(at=now, status_code=status, latency_ms=12.5, answer="ok"), now
    )


# --- subscriptions -----------------------------------------------------------------------


async def test_create_get_update_delete_with_versions(store: Store) -> None:
    webhook = make_webhook()
    await store.webhooks.create(webhook, webhook_entry(webhook))
    assert await store.webhooks.get("wh-1") == webhook
    assert await store.webhooks.get("nope") is None
    with pytest.raises(AlreadyExists):
        await store.webhooks.create(webhook, webhook_entry(webhook))

    retargeted = next_webhook(
        webhook,
        url="https://other.example.com/in",
        events=("bench.*",),
        bench_id="rig-1",
        user_id=None,
    )
    await store.webhooks.update(webhook, retargeted, webhook_entry(retargeted, "updated"))
    assert await store.webhooks.get("wh-1") == retargeted

    stale = next_webhook(webhook, url="https://stale.example.com/")
    with pytest.raises(VersionMismatch) as caught:
        await store.webhooks.update(webhook, stale, webhook_entry(stale, "updated"))
    assert caught.value.current == retargeted
    with pytest.raises(VersionMismatch) as caught:
        await store.webhooks.delete(webhook, webhook_entry(stale, "deleted"))
    assert caught.value.current == retargeted

    disabled = next_webhook(
        retargeted, state=WebhookState.DISABLED, disabled_reason="failing", secret="whsec_new"
    )
    await store.webhooks.update(retargeted, disabled, webhook_entry(disabled, "updated"))
    assert await store.webhooks.get("wh-1") == disabled

    gone = next_webhook(disabled)
    await store.webhooks.delete(disabled, webhook_entry(gone, "deleted"))
    assert await store.webhooks.get("wh-1") is None
    with pytest.raises(ItemNotFound):
        await store.webhooks.delete(disabled, webhook_entry(next_webhook(gone), "deleted"))
    with pytest.raises(ItemNotFound):
        await store.webhooks.update(disabled, gone, webhook_entry(next_webhook(gone), "updated"))

    history = await store.history.find("webhook", "wh-1", 10, None, now=START)
    assert [(entry.version, entry.action) for entry in history.items] == [
        (1, "created"),
        (2, "updated"),
        (3, "updated"),
        (4, "deleted"),
    ]


async def test_record_failing_moves_no_version_and_an_update_keeps_it(store: Store) -> None:
    webhook = make_webhook()
    await store.webhooks.create(webhook, webhook_entry(webhook))
    since = START + timedelta(hours=1)
    await store.webhooks.record_failing("wh-1", since)
    failing = await store.webhooks.get("wh-1")
    assert failing is not None
    assert failing.failing_since == since
    assert (failing.version, failing.updated_at) == (webhook.version, webhook.updated_at)

    # An update made from a copy without the failure run leaves the stored one.
    renamed = next_webhook(webhook, url="https://renamed.example.com/")
    await store.webhooks.update(webhook, renamed, webhook_entry(renamed, "updated"))
    stored = await store.webhooks.get("wh-1")
    assert stored is not None and stored.failing_since == since and stored.url == renamed.url

    await store.webhooks.record_failing("wh-1", None)
    stored = await store.webhooks.get("wh-1")
    assert stored is not None and stored.failing_since is None and stored.version == 2
    await store.webhooks.record_failing("nope", since)  # nothing to record it on
    assert await store.webhooks.get("nope") is None


async def test_find_by_owner_and_all_in_id_order_with_paging(store: Store) -> None:
    for n in (3, 1, 5, 2, 4):
        webhook = make_webhook(f"wh-{n}", owner="alice" if n % 2 else "bob")
        await store.webhooks.create(webhook, webhook_entry(webhook))

    async def all_pages(owner: str | None, limit: int) -> list[list[str]]:
        pages, after = [], None
        while True:
            page = await store.webhooks.find(owner, limit, after)
            pages.append([webhook.webhook_id for webhook in page.items])
            if page.next_after is None:
                return pages
            after = page.next_after

    assert await all_pages(None, 2) == [["wh-1", "wh-2"], ["wh-3", "wh-4"], ["wh-5"]]
    assert await all_pages(None, 5) == [["wh-1", "wh-2", "wh-3", "wh-4", "wh-5"]]
    assert await all_pages("alice", 2) == [["wh-1", "wh-3"], ["wh-5"]]
    assert await all_pages("bob", 1) == [["wh-2"], ["wh-4"]]
    assert await all_pages("carol", 3) == [[]]
    page = await store.webhooks.find("bob", 10, None)
    assert page.items[0] == make_webhook("wh-2", owner="bob")


# --- deliveries --------------------------------------------------------------------------


async def test_adding_deliveries_is_idempotent_and_counts_the_new_ones(store: Store) -> None:
    events = [make_event(seconds=n, entity_id=f"res-{n % 2}") for n in range(3)]
    deliveries = [new_delivery("wh-1", event, START + seconds(10)) for event in events]
    assert await store.deliveries.add(deliveries[:2]) == 2
    assert await store.deliveries.add(deliveries) == 1
    assert await store.deliveries.add(deliveries) == 0
    assert await store.deliveries.add([]) == 0
    assert await store.deliveries.get("wh-1", events[0].event_id) == deliveries[0]
    assert await store.deliveries.get("wh-2", events[0].event_id) is None
    assert await store.deliveries.get("wh-1", "nope") is None

    # Adding again leaves a delivery that moved on as it is.
    claimed = claim(deliveries[0], "sender-1", START + seconds(11))
    await store.deliveries.update(deliveries[0], claimed)
    assert await store.deliveries.add(deliveries[:1]) == 0
    assert await store.deliveries.get("wh-1", events[0].event_id) == claimed

    first = await store.deliveries.find("wh-1", 2, None)
    assert first.items == [claimed, deliveries[1]] and first.next_after is not None
    rest = await store.deliveries.find("wh-1", 2, first.next_after)
    assert rest.items == [deliveries[2]] and rest.next_after is None
    assert (await store.deliveries.find("wh-2", 2, None)).items == []


async def test_updating_a_delivery_is_conditioned_on_its_version(store: Store) -> None:
    delivery = new_delivery("wh-1", make_event(), START)
    await store.deliveries.add([delivery])
    mine = claim(delivery, "sender-1", START + seconds(1))
    await store.deliveries.update(delivery, mine)
    with pytest.raises(VersionMismatch) as caught:
        await store.deliveries.update(delivery, claim(delivery, "sender-2", START + seconds(1)))
    assert caught.value.current == mine
    done = answered(mine, 200, 2)
    await store.deliveries.update(mine, done)
    assert await store.deliveries.get("wh-1", delivery.delivery_id) == done
    missing = new_delivery("wh-9", make_event(seconds=5), START)
    with pytest.raises(ItemNotFound):
        await store.deliveries.update(missing, claim(missing, "sender-1", START))


async def test_due_deliveries_soonest_first_and_a_lapsed_claim_is_due_again(
    store: Store,
) -> None:
    events = [make_event(seconds=n, entity_id=f"res-{n}") for n in range(3)]
    later, sooner, last = (
        new_delivery("wh-1", events[0], START + seconds(20)),
        new_delivery("wh-2", events[1], START + seconds(10)),
        new_delivery("wh-1", events[2], START + seconds(30)),
    )
    await store.deliveries.add([later, sooner, last])

    assert await store.deliveries.find_due(START + seconds(5), 10) == []
    assert await store.deliveries.find_due(START + seconds(25), 10) == [sooner, later]
    assert await store.deliveries.find_due(START + seconds(25), 1) == [sooner]

    # Claimed: not due while its sender's lease runs, due again once it ran out.
    claimed = claim(sooner, "sender-1", START + seconds(25))
    await store.deliveries.update(sooner, claimed)
    assert await store.deliveries.find_due(START + seconds(25), 10) == [later]
    assert claimed.due_at is not None
    lapsed = claimed.due_at + seconds(1)
    assert await store.deliveries.find_due(lapsed, 10) == [later, last, claimed]

    # Delivered or failed for good: never due again.
    await store.deliveries.update(later, answered(later, 200, 60))
    await store.deliveries.update(claimed, answered(claimed, 404, 60))
    assert await store.deliveries.find_due(START + timedelta(days=1), 10) == [last]


async def test_first_open_is_the_oldest_open_delivery_per_entity(store: Store) -> None:
    one, two = make_event(seconds=0, entity_id="res-1"), make_event(seconds=1, entity_id="res-1")
    other = make_event(seconds=2, entity_id="res-2")
    mine = [new_delivery("wh-1", event, START) for event in (one, two, other)]
    theirs = new_delivery("wh-2", two, START)
    await store.deliveries.add([*mine, theirs])
    key = one.entity_key

    assert await store.deliveries.first_open("wh-1", key) == one.event_id
    assert await store.deliveries.first_open("wh-1", other.entity_key) == other.event_id
    assert await store.deliveries.first_open("wh-2", key) == two.event_id
    assert await store.deliveries.first_open("wh-1", "reservation:nope") is None

    # Delivered: the next one of the entity is first; failed for good: none is open.
    claimed = claim(mine[0], "sender-1", START + seconds(1))
    await store.deliveries.update(mine[0], claimed)
    assert await store.deliveries.first_open("wh-1", key) == one.event_id  # sending is open
    await store.deliveries.update(claimed, answered(claimed, 200, 2))
    assert await store.deliveries.first_open("wh-1", key) == two.event_id
    failed = answered(mine[1], 410, 3)
    await store.deliveries.update(mine[1], failed)
    assert await store.deliveries.first_open("wh-1", key) is None
    # Redelivered by hand, it is open again.
    await store.deliveries.update(failed, redeliver(failed, START + seconds(4)))
    assert await store.deliveries.first_open("wh-1", key) == two.event_id


# --- the relay's checkpoint --------------------------------------------------------------


async def test_the_relay_checkpoint_moves_only_from_the_version_read(store: Store) -> None:
    assert await store.deliveries.relay_position() == (0, None)
    outcomes = await asyncio.gather(
        store.deliveries.advance_relay(0, "position-a"),
        store.deliveries.advance_relay(0, "position-b"),
    )
    assert sorted(outcomes) == [False, True]
    winner = "position-a" if outcomes[0] else "position-b"
    assert await store.deliveries.relay_position() == (1, winner)

    assert await store.deliveries.advance_relay(0, "position-c") is False
    assert await store.deliveries.advance_relay(1, "position-c") is True
    assert await store.deliveries.advance_relay(1, "position-d") is False
    assert await store.deliveries.relay_position() == (2, "position-c")
