"""Webhook subscriptions and deliveries as DynamoDB items (see codec.py for the rules:
fixed-width instants, free-form JSON as JSON strings, absent rather than NULL)."""

from __future__ import annotations

import json
from datetime import datetime

from app.events.domain import DomainEvent
from app.store.dynamodb.codec import Item, n, s
from app.store.dynamodb.tables import DUE_PK, WEBHOOK_LIST_PK
from app.timeutil import from_iso, to_iso
from app.webhooks.domain import (
    Attempt,
    Delivery,
    DeliveryStatus,
    Webhook,
    WebhookFormat,
    WebhookState,
)


def _put_text(item: Item, name: str, value: str | None) -> None:
    # Absent rather than NULL: the item stays small and a sparse index stays sparse.
    if value is not None:
        item[name] = s(value)


def _text(item: Item, name: str) -> str | None:
    value = item.get(name)
    return None if value is None else str(value["S"])


def _time(item: Item, name: str) -> datetime | None:
    text = _text(item, name)
    return None if text is None else from_iso(text)


# --- subscriptions -----------------------------------------------------------------------


def webhook_key(webhook_id: str) -> Item:
    return {"webhook_id": s(webhook_id)}


def webhook_settings(webhook: Webhook) -> Item:
    """What an update replaces: everything but the key, the creation time and the failure
    run (``failing_since`` is not configuration: record_failing alone moves it). Optional
    fields are absent when None."""
    item: Item = {
        "owner": s(webhook.owner),
        "url": s(webhook.url),
        "events": {"L": [s(pattern) for pattern in webhook.events]},
        "format": s(webhook.format.value),
        "secret": s(webhook.secret),
        "state": s(webhook.state.value),
        "version": n(webhook.version),
        "updated_at": s(to_iso(webhook.updated_at)),
    }
    _put_text(item, "bench_id", webhook.bench_id)
    _put_text(item, "user_id", webhook.user_id)
    _put_text(item, "disabled_reason", webhook.disabled_reason)
    return item


# The optional settings: an update SETs those present and REMOVEs the others.
OPTIONAL_SETTINGS = ("bench_id", "user_id", "disabled_reason")


def encode_webhook(webhook: Webhook) -> Item:
    item: Item = {
        **webhook_key(webhook.webhook_id),
        "list_pk": s(WEBHOOK_LIST_PK),
        **webhook_settings(webhook),
        "created_at": s(to_iso(webhook.created_at)),
    }
    if webhook.failing_since is not None:
        item["failing_since"] = s(to_iso(webhook.failing_since))
    return item


def decode_webhook(item: Item) -> Webhook:
    return Webhook(
        webhook_id=item["webhook_id"]["S"],
        owner=item["owner"]["S"],
        url=item["url"]["S"],
        events=tuple(value["S"] for value in item["events"]["L"]),
        bench_id=_text(item, "bench_id"),
        user_id=_text(item, "user_id"),
        format=WebhookFormat(item["format"]["S"]),
        secret=item["secret"]["S"],
        state=WebhookState(item["state"]["S"]),
        version=int(item["version"]["N"]),
        created_at=from_iso(item["created_at"]["S"]),
        updated_at=from_iso(item["updated_at"]["S"]),
        disabled_reason=_text(item, "disabled_reason"),
        failing_since=_time(item, "failing_since"),
    )


# --- deliveries --------------------------------------------------------------------------


def delivery_key(webhook_id: str, delivery_id: str) -> Item:
    return {"webhook_id": s(webhook_id), "delivery_id": s(delivery_id)}


def open_entity(webhook_id: str, entity_key: str) -> str:
    """The open_entity_idx partition of a subscription's deliveries about one entity."""
    return f"{webhook_id}|{entity_key}"


def encode_delivery(delivery: Delivery) -> Item:
    item: Item = {
        **delivery_key(delivery.webhook_id, delivery.delivery_id),
        "entity_key": s(delivery.entity_key),
        "event": s(json.dumps(delivery.event.to_json())),
        "status": s(delivery.status.value),
        "attempts": s(json.dumps([attempt.to_json() for attempt in delivery.attempts])),
        "version": n(delivery.version),
        "created_at": s(to_iso(delivery.created_at)),
        "updated_at": s(to_iso(delivery.updated_at)),
    }
    _put_text(item, "sender", delivery.sender)
    if delivery.due_at is not None:
        item["due_at"] = s(to_iso(delivery.due_at))
    # Only open deliveries are in the two sparse indexes; a whole-item Put of a finished
    # one drops the attributes, and with them the index entries.
    if delivery.status.is_open:
        item["open_entity"] = s(open_entity(delivery.webhook_id, delivery.entity_key))
        if delivery.due_at is not None:
            item["due_pk"] = s(DUE_PK)
    return item


def decode_delivery(item: Item) -> Delivery:
    return Delivery(
        webhook_id=item["webhook_id"]["S"],
        delivery_id=item["delivery_id"]["S"],
        event=DomainEvent.from_json(json.loads(item["event"]["S"])),
        status=DeliveryStatus(item["status"]["S"]),
        due_at=_time(item, "due_at"),
        version=int(item["version"]["N"]),
        created_at=from_iso(item["created_at"]["S"]),
        updated_at=from_iso(item["updated_at"]["S"]),
        attempts=tuple(Attempt.from_json(raw) for raw in json.loads(item["attempts"]["S"])),
        sender=_text(item, "sender"),
    )
