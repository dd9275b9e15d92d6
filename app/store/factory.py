"""Builds the one store a process uses, from settings."""

from __future__ import annotations

from app.settings import Settings
from app.store.base import Store


async def open_store(settings: Settings) -> Store:
    if settings.store == "dynamodb":
        from app.store.dynamodb.store import DynamoStore

        return await DynamoStore.open(settings)
    from app.store.sqlite.store import SqliteStore

    return await SqliteStore.open(
        settings.sqlite_path, settings.history_retention, settings.event_retention
    )
