"""The Idempotency-Key header (IETF draft): parsed once here, honoured by the services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header
from pydantic import BaseModel

from app.identity import Principal
from app.kit.idempotency import IdempotencyClaim

REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    value: str | None

    def claim(
        self, principal: Principal, operation: str, body: BaseModel
    ) -> IdempotencyClaim | None:
        """Keys are scoped to the caller and the operation; the body is fingerprinted."""
        if self.value is None:
            return None
        return IdempotencyClaim.of(
            principal.subject, operation, self.value, body.model_dump(mode="json")
        )


async def _idempotency_key(
    key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$"),
    ] = None,
) -> IdempotencyKey:
    return IdempotencyKey(key)


IdempotencyKeyDep = Annotated[IdempotencyKey, Depends(_idempotency_key)]
