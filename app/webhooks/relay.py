"""Fan-out: the event log, read after the relay's checkpoint, becomes one delivery per
matching subscription; then the checkpoint moves (a conditional write).

Creating a delivery twice stores it once (its id is the event's), so two replicas that
fan out the same events at once create each delivery once, and one of them moves the
checkpoint; a relay killed between the two steps does the batch again on its next pass.
A subscription receives the events raised after it was made; the first pass ever starts
at the newest event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from app.clock import Clock
from app.store.base import PositionNotKept, Store
from app.webhooks.domain import Webhook, WebhookState, new_delivery
from app.webhooks.sender import Sender

logger = logging.getLogger("app.webhooks")

BATCH = 500


class Relay:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def fan_out(self) -> int:
        """One batch of the log; how many deliveries it created."""
        version, position = await self._store.deliveries.relay_position()
        now = self._clock.now()
        if version == 0:
            # The first pass ever starts at the newest event: subscriptions get what is
            # raised after they were made, so nothing older is owed to anyone.
            await self._store.deliveries.advance_relay(
                version, await self._store.events.head(now=now)
            )
            return 0
        try:
            batch = await self._store.events.read(position, BATCH, now=now)
        except PositionNotKept as error:
            logger.error("webhook relay restarts at the newest event: %s", error)
            await self._store.deliveries.advance_relay(
                version, await self._store.events.head(now=now)
            )
            return 0
        if not batch:
            return 0
        subscriptions = await self._active()
        deliveries = [
            new_delivery(webhook.webhook_id, logged.event, now)
            for logged in batch
            for webhook in subscriptions
            if webhook.wants(logged.event) and logged.event.at >= webhook.created_at
        ]
        created = await self._store.deliveries.add(deliveries)
        if not await self._store.deliveries.advance_relay(version, batch[-1].position):
            logger.info("webhook relay: another replica moved the checkpoint")
        return created

    async def _active(self) -> list[Webhook]:
        found: list[Webhook] = []
        after: str | None = None
        while True:
            page = await self._store.webhooks.find(None, 500, after)
            found += [w for w in page.items if w.state is WebhookState.ACTIVE]
            if page.next_after is None:
                return found
            after = page.next_after


async def run_forever(
    relay: Relay, sender: Sender, poll_s: float, stopping: Callable[[], bool]
) -> None:
    """Each API process runs this: fan out, send what is due, rest when idle."""
    while not stopping():
        busy = False
        try:
            busy = await relay.fan_out() > 0
            busy = await sender.send_due() > 0 or busy
        except Exception:  # the loop must outlive a bad pass (a store outage included)
            logger.exception("webhook pass failed")
        if not busy:
            await asyncio.sleep(poll_s)
