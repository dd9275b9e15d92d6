"""Server-made ids: UUIDv7 (RFC 9562), so ids sort in the order they were made.

Executions run in creation order, and two created in the same millisecond must still
have one: the 12 bits after the timestamp count up within a millisecond in this process.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from datetime import datetime

_lock = threading.Lock()
_last_ms = -1
_sequence = 0


def sortable_uuid(now: datetime) -> str:
    global _last_ms, _sequence
    ms = int(now.timestamp() * 1000)
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms  # a clock that went back (or stood still) must not reorder ids
            _sequence += 1
            if _sequence > 0xFFF:
                ms += 1
                _sequence = 0
        else:
            _sequence = 0
        _last_ms = ms
        sequence = _sequence
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76
    value |= sequence << 64
    value |= 0b10 << 62
    value |= secrets.randbits(62)
    return str(uuid.UUID(int=value))
