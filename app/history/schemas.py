from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from app.history.domain import HistoryEntry


class HistoryEntryOut(BaseModel):
    version: int
    at: datetime
    actor: str
    request_id: str
    action: str
    changes: dict[str, Any]

    @classmethod
    def of(cls, entry: HistoryEntry) -> HistoryEntryOut:
        return cls(
            version=entry.version,
            at=entry.at,
            actor=entry.actor,
            request_id=entry.request_id,
            action=entry.action,
            changes=entry.changes,
        )
