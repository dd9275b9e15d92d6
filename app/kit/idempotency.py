"""Idempotent creation: one resource per (caller, Idempotency-Key), whatever the retries.

The key's record is written in the SAME store transaction as the resource it created, so
there is never a resource without its key or a key without its resource: of N concurrent
requests with one key exactly one commits, and the others find the record and replay it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from app.errors import AppError, InvalidInput
from app.store.base import IdempotencyKeyTaken, IdempotencyRecord

KEY_RETENTION = timedelta(hours=24)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """What a request with an Idempotency-Key asks for, before any resource exists."""

    key: str
    fingerprint: str

    @classmethod
    def of(cls, subject: str, operation: str, client_key: str, body: Any) -> IdempotencyClaim:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return cls(
            key=f"{subject}\n{operation}\n{client_key}",
            fingerprint=hashlib.sha256(canonical.encode()).hexdigest(),
        )

    def record(self, resource_id: str, now: datetime) -> IdempotencyRecord:
        return IdempotencyRecord(
            key=self.key,
            fingerprint=self.fingerprint,
            resource_id=resource_id,
            created_at=now,
            expires_at=now + KEY_RETENTION,
        )


async def create_once(
    claim: IdempotencyClaim | None,
    *,
    resource_id: str,
    now: datetime,
    lookup: Callable[[str], Awaitable[IdempotencyRecord | None]],
    create: Callable[[IdempotencyRecord | None], Awaitable[T]],
    load: Callable[[str], Awaitable[T | None]],
) -> tuple[T, bool]:
    """Create ``resource_id``, or replay what this key created before.

    Returns (resource, replayed). ``create`` must store the record it is given in the same
    transaction as the resource, and raise IdempotencyKeyTaken when the key is in use;
    stores treat a record past ``expires_at`` as free.
    """
    if claim is None:
        return await create(None), False
    existing = await lookup(claim.key)
    if existing is None or existing.expires_at <= now:
        try:
            return await create(claim.record(resource_id, now)), False
        except IdempotencyKeyTaken as taken:
            existing = taken.record
        except AppError:
            # A twin request may have committed meanwhile, and its resource is what stood
            # in our way (a booked window, a taken id): then we replay it, not fail.
            existing = await lookup(claim.key)
            if existing is None or existing.expires_at <= now:
                raise
    if existing.fingerprint != claim.fingerprint:
        raise InvalidInput("this Idempotency-Key was used with a different request body")
    resource = await load(existing.resource_id)
    if resource is None:  # records never outlive their resources; say so if one did
        raise InvalidInput("the resource this Idempotency-Key created no longer exists")
    return resource, True
