"""Audit trail entries: one immutable entry per version of a resource."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    entity_type: str
    entity_id: str
    version: int
    at: datetime
    actor: str
    request_id: str
    action: str
    changes: dict[str, Any] = field(default_factory=dict)


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Fields whose value differs, as ``{field: {"from": old, "to": new}}``."""
    return {
        key: {"from": before.get(key), "to": after.get(key)}
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }
