"""Idempotency keys on DynamoDB, read back by the key a create was made with.

Records are written by the other repositories, in the transactions of the creates they
belong to (``put_record``); this one only reads them.
"""

from __future__ import annotations

from app.store.base import IdempotencyRecord
from app.store.dynamodb.calls import Call, get_one
from app.store.dynamodb.codec import decode_record, idempotency_key


class DynamoIdempotencyRepository:
    def __init__(self, call: Call, table: str) -> None:
        self._call = call
        self._table = table

    async def get(self, key: str) -> IdempotencyRecord | None:
        # Expired records come back as they are: TTL deletes late, and the caller compares.
        return await get_one(self._call, self._table, idempotency_key(key), decode_record)
