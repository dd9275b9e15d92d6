"""Standard Webhooks (standardwebhooks.com): what a delivery's body and headers are.

``webhook-signature`` is ``v1,`` and the base64 HMAC-SHA256, keyed with the secret's
bytes (the base64 after ``whsec_``), of ``<webhook-id>.<webhook-timestamp>.<body>``; the
receiver checks it with any Standard Webhooks library and drops repeats by webhook-id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from app.events.domain import DomainEvent
from app.timeutil import rfc3339
from app.webhooks.domain import WebhookFormat

SECRET_PREFIX = "whsec_"


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
        "content-type": "application/json",
    }


def body(event: DomainEvent, format: WebhookFormat) -> bytes:
    """``standard``: ``{"type", "timestamp", "data"}`` with the event as ``data``;
    ``slack``: ``{"text": ...}``, one line that chat incoming webhooks show as it is."""
    payload: dict[str, Any]
    if format is WebhookFormat.SLACK:
        payload = {"text": one_line(event)}
    else:
        payload = {"type": event.type, "timestamp": rfc3339(event.at), "data": event.to_json()}
    return json.dumps(payload, separators=(",", ":")).encode()


def one_line(event: DomainEvent) -> str:
    data = event.data
    subject = {
        "bench": f"bench {event.entity.id}",
        "reservation": f"reservation of {data.get('bench_id')} by {data.get('user_id')}"
        f" ({data.get('start')} to {data.get('end')})",
        "execution": f"run {event.entity.id[:8]} of {data.get('commit_sha')} on"
        f" {data.get('bench_id')}",
        "task": f"task {event.entity.id} on {data.get('bench_id')}",
        "webhook": f"webhook {event.entity.id[:8]}",
    }.get(event.entity.type, f"{event.entity.type} {event.entity.id}")
    verdict = f": {data['verdict']}" if data.get("verdict") else ""
    return f"[{event.type}] {subject}{verdict} (by {event.actor})"
