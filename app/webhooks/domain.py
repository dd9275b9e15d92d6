"""Subscriptions and deliveries: the rules, without I/O.

One delivery per subscription and event (its id is the event's), so fan-out may run
twice and create it once. A delivery is sent by whoever claims it (a conditional write,
as for tasks); an attempt that did not answer 2xx is retried with exponential backoff
and jitter for up to 24 hours, unless the answer says retrying cannot help (4xx but
408 and 429). A subscription whose deliveries have failed for 24 hours is disabled.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from app.events.domain import DomainEvent, EventFilter
from app.timeutil import from_iso, to_iso

GIVE_UP_AFTER = timedelta(hours=24)
FIRST_RETRY = timedelta(seconds=5)
LONGEST_RETRY = timedelta(hours=1)
# A claimed delivery not finished by then is due again (its sender died or hung): this
# many times the attempt's own timeout, so a live sender is always done well before.
LEASE_PER_TIMEOUT = 3
ATTEMPT_TIMEOUT = timedelta(seconds=5)
# What an attempt keeps of the receiver's answer.
ANSWER_KEPT = 1024
# Attempts kept on a delivery: the first ones and the latest ones tell the story.
ATTEMPTS_KEPT = 50


class WebhookFormat(StrEnum):
    STANDARD = "standard"
    SLACK = "slack"


class WebhookState(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class Webhook:
    webhook_id: str
    owner: str
    url: str
    events: tuple[str, ...]
    bench_id: str | None
    user_id: str | None
    format: WebhookFormat
    secret: str
    state: WebhookState
    version: int
    created_at: datetime
    updated_at: datetime
    disabled_reason: str | None = None
    # The first failed attempt since the last success: 24 hours later it is disabled.
    failing_since: datetime | None = None

    @property
    def filter(self) -> EventFilter:
        return EventFilter(self.events, self.bench_id, self.user_id)

    def wants(self, event: DomainEvent) -> bool:
        return self.state is WebhookState.ACTIVE and self.filter.matches(event)

    def audited(self) -> dict[str, object]:
        """What history records of a change: never the secret."""
        return {
            "url": self.url,
            "events": list(self.events),
            "bench_id": self.bench_id,
            "user_id": self.user_id,
            "format": self.format.value,
            "state": self.state.value,
            "disabled_reason": self.disabled_reason,
        }


def may_manage(subject: str, is_admin: bool, webhook: Webhook) -> bool:
    return is_admin or webhook.owner == subject


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its next attempt (due_at)
    SENDING = "sending"  # claimed; due again at due_at if its sender vanished
    DELIVERED = "delivered"
    FAILED = "failed"  # final: refused, or 24 hours of failures

    @property
    def is_open(self) -> bool:
        return self in (DeliveryStatus.PENDING, DeliveryStatus.SENDING)


@dataclass(frozen=True, slots=True)
class Attempt:
    at: datetime
    status_code: int | None
    latency_ms: float
    answer: str
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As both stores keep it (inside the delivery, as JSON)."""
        return {
            "at": to_iso(self.at),
            "status_code": self.status_code,
            "latency_ms": self.latency_ms,
            "answer": self.answer,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Attempt:
        return cls(
            at=from_iso(raw["at"]),
            status_code=raw["status_code"],
            latency_ms=float(raw["latency_ms"]),
            answer=raw["answer"],
            error=raw.get("error"),
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    webhook_id: str
    delivery_id: str  # the event's id: one delivery per subscription and event
    event: DomainEvent
    status: DeliveryStatus
    due_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime
    attempts: tuple[Attempt, ...] = ()
    sender: str | None = None

    @property
    def entity_key(self) -> str:
        return self.event.entity_key


def new_delivery(webhook_id: str, event: DomainEvent, now: datetime) -> Delivery:
    return Delivery(
        webhook_id=webhook_id,
        delivery_id=event.event_id,
        event=event,
        status=DeliveryStatus.PENDING,
        due_at=now,
        version=1,
        created_at=now,
        updated_at=now,
    )


def claim(
    delivery: Delivery, sender: str, now: datetime, timeout: timedelta = ATTEMPT_TIMEOUT
) -> Delivery:
    return replace(
        delivery,
        status=DeliveryStatus.SENDING,
        due_at=now + timeout * LEASE_PER_TIMEOUT,
        sender=sender,
        version=delivery.version + 1,
        updated_at=now,
    )


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FINAL = "final"


def judge(status_code: int | None) -> Verdict:
    """None: no answer (timeout, connection refused, refused address)."""
    if status_code is None:
        return Verdict.RETRY
    if 200 <= status_code < 300:
        return Verdict.DELIVERED
    if status_code >= 500 or status_code in (408, 429):
        return Verdict.RETRY
    return Verdict.FINAL  # other 4xx, and 3xx: redirects are not followed


def backoff(failures: int, rng: random.Random | None = None) -> timedelta:
    """Before the next attempt after ``failures`` failed ones: doubling from 5 s, at most
    an hour, with full jitter over the upper half (so retries of many do not align)."""
    exponent = min(failures - 1, 20)
    ceiling = min(FIRST_RETRY * (2**exponent), LONGEST_RETRY)
    share = float((rng or random).uniform(0.5, 1.0))
    return timedelta(seconds=ceiling.total_seconds() * share)


def after_attempt(
    delivery: Delivery,
    attempt: Attempt,
    now: datetime,
    retry_after: timedelta | None = None,
    rng: random.Random | None = None,
) -> Delivery:
    """The delivery once ``attempt`` is recorded: delivered, due again, or failed."""
    attempts = (*delivery.attempts, attempt)
    if len(attempts) > ATTEMPTS_KEPT:
        attempts = attempts[:10] + attempts[-(ATTEMPTS_KEPT - 10) :]
    verdict = judge(attempt.status_code)
    status, due = DeliveryStatus.FAILED, None
    if verdict is Verdict.DELIVERED:
        status = DeliveryStatus.DELIVERED
    elif verdict is Verdict.RETRY:
        failures = sum(1 for a in attempts if judge(a.status_code) is not Verdict.DELIVERED)
        wait = max(backoff(failures, rng), retry_after or timedelta(0))
        if now + wait - delivery.created_at <= GIVE_UP_AFTER:
            status, due = DeliveryStatus.PENDING, now + wait
    return replace(
        delivery,
        status=status,
        due_at=due,
        attempts=attempts,
        sender=None,
        version=delivery.version + 1,
        updated_at=now,
    )


def redeliver(delivery: Delivery, now: datetime) -> Delivery:
    """Asked by a person: due now, whatever it ended as (its attempts stay)."""
    return replace(
        delivery,
        status=DeliveryStatus.PENDING,
        due_at=now,
        sender=None,
        version=delivery.version + 1,
        updated_at=now,
    )


def webhook_after_attempt(webhook: Webhook, delivered: bool, now: datetime) -> Webhook | None:
    """The subscription's failure run after an attempt: None when nothing changes."""
    if delivered:
        if webhook.failing_since is None:
            return None
        return replace(webhook, failing_since=None)
    if webhook.failing_since is None:
        return replace(webhook, failing_since=now)
    if webhook.state is WebhookState.ACTIVE and now - webhook.failing_since >= GIVE_UP_AFTER:
        return replace(
            webhook,
            state=WebhookState.DISABLED,
            disabled_reason=f"every delivery failed since {webhook.failing_since.isoformat()}",
            version=webhook.version + 1,
            updated_at=now,
        )
    return None


@dataclass(frozen=True, slots=True)
class WebhookChanges:
    """A PATCH: None leaves a field as it is (a filter is cleared with an empty string)."""

    url: str | None = None
    events: tuple[str, ...] | None = None
    bench_id: str | None = None
    user_id: str | None = None
    format: WebhookFormat | None = None
    state: WebhookState | None = None


def change_webhook(webhook: Webhook, changes: WebhookChanges, now: datetime) -> Webhook:
    """``webhook`` itself when nothing changes. Re-enabling clears the failure record."""
    state = webhook.state if changes.state is None else changes.state
    updated = replace(
        webhook,
        url=webhook.url if changes.url is None else changes.url,
        events=webhook.events if changes.events is None else changes.events,
        bench_id=webhook.bench_id if changes.bench_id is None else (changes.bench_id or None),
        user_id=webhook.user_id if changes.user_id is None else (changes.user_id or None),
        format=webhook.format if changes.format is None else changes.format,
        state=state,
        disabled_reason=None if state is WebhookState.ACTIVE else webhook.disabled_reason,
    )
    if updated == webhook:
        return webhook
    return replace(updated, version=webhook.version + 1, updated_at=now)


def rotate_secret(webhook: Webhook, secret: str, now: datetime) -> Webhook:
    return replace(webhook, secret=secret, version=webhook.version + 1, updated_at=now)
