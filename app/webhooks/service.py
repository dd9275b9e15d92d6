"""Webhook use-cases: subscriptions (the caller's own; an admin's: all), their deliveries,
redelivery and pings. Sending is app/webhooks/sender.py; fan-out is relay.py."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from app.clock import Clock
from app.errors import InvalidInput, NotFound
from app.events.domain import EntityRef, new_event
from app.history.domain import AuditTrail
from app.identity import Actor, Principal, Role
from app.ids import sortable_uuid
from app.kit.concurrency import change_versioned, check_expectation, retrying, stale
from app.networks import Network
from app.store.base import ItemNotFound, Page, Store, VersionMismatch
from app.versioning import VersionExpectation
from app.webhooks.domain import (
    Delivery,
    Webhook,
    WebhookChanges,
    WebhookFormat,
    WebhookState,
    change_webhook,
    may_manage,
    new_delivery,
    redeliver,
    rotate_secret,
)
from app.webhooks.targets import check_target


def _view(webhook: Webhook, at: datetime) -> dict[str, Any]:
    """What an event tells of a subscription: not its URL, which may carry a token and
    is its owner's alone (anyone may read the stream)."""
    shown = {key: value for key, value in webhook.audited().items() if key != "url"}
    return {
        "webhook_id": webhook.webhook_id,
        "owner": webhook.owner,
        **shown,
        "version": webhook.version,
    }


AUDIT: AuditTrail[Webhook] = AuditTrail(
    "webhook",
    lambda webhook: webhook.webhook_id,
    Webhook.audited,
    raises=lambda action, before, after: "webhook.disabled" if action == "disabled" else None,
    view=_view,
    scope=lambda webhook: (None, webhook.owner),
)


def new_secret() -> str:
    """Standard Webhooks' form: ``whsec_`` and the base64 of the key's bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True, slots=True)
class NewWebhook:
    url: str
    events: tuple[str, ...]
    bench_id: str | None
    user_id: str | None
    format: WebhookFormat


class WebhookService:
    def __init__(self, store: Store, clock: Clock, allowed: Sequence[Network]) -> None:
        self._store = store
        self._clock = clock
        self._allowed = tuple(allowed)

    async def create(self, request: NewWebhook, actor: Actor) -> Webhook:
        await self._check_url(request.url)
        now = self._clock.now()
        webhook = Webhook(
            webhook_id=sortable_uuid(now),
            owner=actor.subject,
            url=request.url,
            events=request.events,
            bench_id=request.bench_id,
            user_id=_me(request.user_id, actor.principal),
            format=request.format,
            secret=new_secret(),
            state=WebhookState.ACTIVE,
            version=1,
            created_at=now,
            updated_at=now,
        )
        await self._store.webhooks.create(webhook, AUDIT.entry(webhook, actor, "created", None))
        return webhook

    async def get(self, webhook_id: str, principal: Principal) -> Webhook:
        webhook = await self._store.webhooks.get(webhook_id)
        if webhook is None or not may_manage(
            principal.subject, principal.role is Role.ADMIN, webhook
        ):
            # Another's subscription is not shown to exist: its URL is theirs.
            raise NotFound(f"webhook {webhook_id!r} does not exist")
        return webhook

    async def find(self, principal: Principal, limit: int, after: str | None) -> Page[Webhook]:
        owner = None if principal.role is Role.ADMIN else principal.subject
        return await self._store.webhooks.find(owner, limit, after)

    async def update(
        self,
        webhook_id: str,
        changes: WebhookChanges,
        expectation: VersionExpectation | None,
        actor: Actor,
    ) -> Webhook:
        if changes.url is not None:
            await self._check_url(changes.url)
        changes = WebhookChanges(
            url=changes.url,
            events=changes.events,
            bench_id=changes.bench_id,
            user_id=None if changes.user_id is None else _me(changes.user_id, actor.principal),
            format=changes.format,
            state=changes.state,
        )
        updated = await self._change(
            webhook_id,
            lambda current: change_webhook(current, changes, self._clock.now()),
            expectation,
            actor,
            "updated",
        )
        if changes.state is WebhookState.ACTIVE and updated.failing_since is not None:
            await self._store.webhooks.record_failing(webhook_id, None)
            return await self.get(webhook_id, actor.principal)
        return updated

    async def rotate_secret(
        self, webhook_id: str, expectation: VersionExpectation | None, actor: Actor
    ) -> Webhook:
        secret = new_secret()
        return await self._change(
            webhook_id,
            lambda current: rotate_secret(current, secret, self._clock.now()),
            expectation,
            actor,
            "secret_rotated",
        )

    async def delete(
        self, webhook_id: str, expectation: VersionExpectation | None, actor: Actor
    ) -> None:
        async def attempt() -> None:
            current = await self.get(webhook_id, actor.principal)
            check_expectation(f"webhook {webhook_id!r}", expectation, current.version)
            # The deletion is the subscription's last version in its history.
            last = replace(current, version=current.version + 1, updated_at=self._clock.now())
            entry = AUDIT.entry(last, actor, "deleted", current)
            try:
                await self._store.webhooks.delete(current, entry)
            except ItemNotFound as error:
                raise NotFound(f"webhook {webhook_id!r} does not exist") from error
            except VersionMismatch as mismatch:
                if expectation is not None and not expectation.any_version:
                    raise stale(f"webhook {webhook_id!r}", mismatch.current.version) from None
                raise

        await retrying(attempt, f"webhook {webhook_id!r}")

    async def deliveries(
        self, webhook_id: str, principal: Principal, limit: int, after: str | None
    ) -> Page[Delivery]:
        await self.get(webhook_id, principal)
        return await self._store.deliveries.find(webhook_id, limit, after)

    async def redeliver(self, webhook_id: str, delivery_id: str, actor: Actor) -> Delivery:
        await self.get(webhook_id, actor.principal)

        async def attempt() -> Delivery:
            delivery = await self._store.deliveries.get(webhook_id, delivery_id)
            if delivery is None:
                raise NotFound(f"delivery {delivery_id!r} of webhook {webhook_id!r} does not exist")
            again = redeliver(delivery, self._clock.now())
            await self._store.deliveries.update(delivery, again)
            return again

        return await retrying(attempt, f"delivery {delivery_id!r}")

    async def ping(self, webhook_id: str, actor: Actor) -> Delivery:
        """A ``webhook.ping`` event for this subscription alone (not in the event log)."""
        webhook = await self.get(webhook_id, actor.principal)
        now = self._clock.now()
        event = new_event(
            "webhook.ping",
            at=now,
            actor=actor.subject,
            entity=EntityRef("webhook", webhook.webhook_id, webhook.version),
            bench_id=None,
            user_id=webhook.owner,
            data=_view(webhook, now),
        )
        delivery = new_delivery(webhook.webhook_id, event, now)
        await self._store.deliveries.add([delivery])
        return delivery

    async def _change(
        self,
        webhook_id: str,
        decide: Callable[[Webhook], Webhook],
        expectation: VersionExpectation | None,
        actor: Actor,
        action: str,
    ) -> Webhook:
        async def write(before: Webhook, after: Webhook) -> None:
            await self._store.webhooks.update(
                before, after, AUDIT.entry(after, actor, action, before)
            )

        return await change_versioned(
            load=lambda: self._load(webhook_id, actor.principal),
            decide=decide,
            write=write,
            expectation=expectation,
            what=f"webhook {webhook_id!r}",
        )

    async def _load(self, webhook_id: str, principal: Principal) -> Webhook | None:
        try:
            return await self.get(webhook_id, principal)
        except NotFound:
            return None

    async def _check_url(self, url: str) -> None:
        reason = await check_target(url, self._allowed)
        if reason is not None:
            raise InvalidInput(f"url refused: {reason}")


def _me(user_id: str | None, principal: Principal) -> str | None:
    return principal.subject if user_id == "me" else user_id
