"""The webhooks API's bodies. The signing secret appears in exactly two answers: the
create and the rotation; never in a read, a list, history or a log line."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.events.domain import invalid_glob
from app.webhooks.domain import (
    Attempt,
    Delivery,
    DeliveryStatus,
    Webhook,
    WebhookFormat,
    WebhookState,
)

Url = Annotated[str, Field(min_length=8, max_length=2048, examples=["https://ci.example/hook"])]
Globs = Annotated[list[str], Field(min_length=1, max_length=20, examples=[["reservation.*"]])]
Filter = Annotated[str, Field(min_length=1, max_length=128)]


def _globs(value: list[str] | None) -> list[str] | None:
    for pattern in value or []:
        reason = invalid_glob(pattern)
        if reason is not None:
            raise ValueError(reason)
    return value


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url
    events: Globs
    bench_id: Filter | None = None
    user_id: Filter | None = Field(default=None, description="A subject, or `me`")
    format: WebhookFormat = WebhookFormat.STANDARD

    _check_events = field_validator("events")(_globs)


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url | None = None
    events: Globs | None = None
    bench_id: Filter | None = None
    user_id: Filter | None = None
    format: WebhookFormat | None = None
    state: WebhookState | None = Field(
        default=None, description="`active` re-enables a subscription that was disabled"
    )

    _check_events = field_validator("events")(_globs)


class WebhookOut(BaseModel):
    webhook_id: str
    owner: str
    url: str
    events: list[str]
    bench_id: str | None
    user_id: str | None
    format: WebhookFormat
    state: WebhookState
    disabled_reason: str | None
    failing_since: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, webhook: Webhook) -> WebhookOut:
        return cls(
            webhook_id=webhook.webhook_id,
            owner=webhook.owner,
            url=webhook.url,
            events=list(webhook.events),
            bench_id=webhook.bench_id,
            user_id=webhook.user_id,
            format=webhook.format,
            state=webhook.state,
            disabled_reason=webhook.disabled_reason,
            failing_since=webhook.failing_since,
            version=webhook.version,
            created_at=webhook.created_at,
            updated_at=webhook.updated_at,
        )


class WebhookWithSecret(WebhookOut):
    secret: str = Field(
        description="Shown once: verify deliveries with it (Standard Webhooks, `whsec_...`)."
    )

    @classmethod
    def with_secret(cls, webhook: Webhook) -> WebhookWithSecret:
        return cls(**WebhookOut.of(webhook).model_dump(), secret=webhook.secret)


class AttemptOut(BaseModel):
    at: datetime
    status_code: int | None
    latency_ms: float
    answer: str = Field(description="The first 1 KB of the receiver's answer")
    error: str | None

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptOut:
        return cls(
            at=attempt.at,
            status_code=attempt.status_code,
            latency_ms=attempt.latency_ms,
            answer=attempt.answer,
            error=attempt.error,
        )


class DeliveryOut(BaseModel):
    delivery_id: str = Field(description="The event's id: the `webhook-id` header")
    webhook_id: str
    event_type: str
    event: dict[str, Any]
    status: DeliveryStatus
    next_attempt_at: datetime | None
    attempts: list[AttemptOut]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryOut:
        return cls(
            delivery_id=delivery.delivery_id,
            webhook_id=delivery.webhook_id,
            event_type=delivery.event.type,
            event=delivery.event.to_json(),
            status=delivery.status,
            next_attempt_at=delivery.due_at if delivery.status.is_open else None,
            attempts=[AttemptOut.of(attempt) for attempt in delivery.attempts],
            created_at=delivery.created_at,
            updated_at=delivery.updated_at,
        )
