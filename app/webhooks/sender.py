"""Sending deliveries: claim one (a conditional write, so each attempt has one sender),
POST it signed, record the attempt, and schedule the next one or stop.

A sender that dies mid-attempt leaves its claim to run out (three times the attempt's timeout): the
delivery is due again and another sender (or this one, restarted) tries again. Only the
oldest open delivery of an entity is sent, so a receiver sees an entity's events in order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx

from app.clock import Clock
from app.identity import Actor, Principal, Role
from app.networks import Network
from app.store.base import ItemNotFound, Store, VersionMismatch
from app.webhooks import signing
from app.webhooks.domain import (
    ANSWER_KEPT,
    Attempt,
    Delivery,
    DeliveryStatus,
    Webhook,
    WebhookState,
    after_attempt,
    claim,
    webhook_after_attempt,
)
from app.webhooks.service import AUDIT
from app.webhooks.targets import check_target

logger = logging.getLogger("app.webhooks")

TIMEOUT_S = 5.0
MAX_BODY = 1024 * 1024
BATCH = 50
MONITOR = Principal("webhook-sender", Role.ADMIN)


class Sender:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        allowed: Sequence[Network],
        http: httpx.AsyncClient,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self._timeout = timedelta(seconds=timeout_s)
        self._store = store
        self._clock = clock
        self._allowed = tuple(allowed)
        self._http = http
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    async def send_due(self) -> int:
        """Attempt every delivery due now; how many attempts were made."""
        attempted = 0
        for delivery in await self._store.deliveries.find_due(self._clock.now(), BATCH):
            if await self._attempt(delivery):
                attempted += 1
        return attempted

    async def _attempt(self, delivery: Delivery) -> bool:
        webhook = await self._store.webhooks.get(delivery.webhook_id)
        if webhook is None or webhook.state is not WebhookState.ACTIVE:
            why = "the subscription is gone" if webhook is None else "the subscription is disabled"
            await self._close(delivery, why)
            return False
        first = await self._store.deliveries.first_open(delivery.webhook_id, delivery.entity_key)
        if first is not None and first != delivery.delivery_id:
            return False  # an earlier event of this entity goes first
        claimed = claim(delivery, self.name, self._clock.now(), self._timeout)
        try:
            await self._store.deliveries.update(delivery, claimed)
        except (VersionMismatch, ItemNotFound):
            return False  # another sender has it
        attempt, retry_after = await self._post(webhook, delivery)
        done = after_attempt(claimed, attempt, self._clock.now(), retry_after)
        try:
            await self._store.deliveries.update(claimed, done)
        except (VersionMismatch, ItemNotFound):
            logger.info("delivery %s changed while it was sent", delivery.delivery_id)
        await self._follow_failures(webhook, done.status is DeliveryStatus.DELIVERED)
        return True

    async def _post(self, webhook: Webhook, delivery: Delivery) -> tuple[Attempt, timedelta | None]:
        started = time.perf_counter()
        at = self._clock.now()

        def failed(error: str) -> tuple[Attempt, None]:
            latency = (time.perf_counter() - started) * 1000
            return Attempt(at, None, round(latency, 1), "", error), None

        refused = await check_target(webhook.url, self._allowed)
        if refused is not None:
            return failed(refused)
        payload = signing.body(delivery.event, webhook.format)
        if len(payload) > MAX_BODY:
            return Attempt(at, 413, 0.0, "", "the event is larger than 1 MiB; not sent"), None
        # The wall clock, not the service's: receivers compare it with theirs to refuse
        # replays (Standard Webhooks allows a few minutes either way).
        headers = signing.headers(webhook.secret, delivery.delivery_id, int(time.time()), payload)
        try:
            async with self._http.stream(
                "POST", webhook.url, content=payload, headers=headers
            ) as answer:
                kept = bytearray()
                async for chunk in answer.aiter_raw():
                    kept += chunk
                    if len(kept) >= ANSWER_KEPT:
                        break
        except httpx.TimeoutException:
            return failed(f"no answer within {self._timeout.total_seconds():g} s")
        except httpx.HTTPError as error:
            return failed(f"{type(error).__name__}: {error}")
        latency = (time.perf_counter() - started) * 1000
        text = bytes(kept[:ANSWER_KEPT]).decode("utf-8", "replace")
        attempt = Attempt(at, answer.status_code, round(latency, 1), text)
        return attempt, _retry_after(answer.headers.get("retry-after"), at)

    async def _close(self, delivery: Delivery, why: str) -> None:
        now = self._clock.now()
        closed = replace(
            delivery,
            status=DeliveryStatus.FAILED,
            due_at=None,
            attempts=(*delivery.attempts, Attempt(now, None, 0.0, "", why)),
            version=delivery.version + 1,
            updated_at=now,
        )
        with contextlib.suppress(VersionMismatch, ItemNotFound):
            await self._store.deliveries.update(delivery, closed)

    async def _follow_failures(self, webhook: Webhook, delivered: bool) -> None:
        now = self._clock.now()
        after = webhook_after_attempt(webhook, delivered, now)
        if after is None:
            return
        if after.state is not webhook.state:
            actor = Actor(MONITOR, request_id=f"webhook-sender-{uuid.uuid4()}")
            try:
                await self._store.webhooks.update(
                    webhook, after, AUDIT.entry(after, actor, "disabled", webhook)
                )
                logger.warning("webhook %s disabled: %s", webhook.webhook_id, after.disabled_reason)
            except (VersionMismatch, ItemNotFound):
                pass
            return
        await self._store.webhooks.record_failing(webhook.webhook_id, after.failing_since)


def _retry_after(value: str | None, now: datetime) -> timedelta | None:
    """Seconds, or an HTTP date (RFC 9110); None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return timedelta(seconds=min(int(text), 24 * 3600))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(when - now, timedelta(0)) if when.tzinfo is not None else None


def http_client(timeout_s: float = TIMEOUT_S) -> httpx.AsyncClient:
    """No redirects followed (a redirect could lead anywhere), one timeout for everything."""
    return httpx.AsyncClient(
        follow_redirects=False,
        timeout=httpx.Timeout(timeout_s),
        headers={"user-agent": "bench-orchestrator-webhooks/0.1"},
        trust_env=False,
    )
