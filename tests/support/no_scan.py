"""A proxy around a DynamoDB client that fails the test on any Scan.

Scans read whole tables: cost grows with the table, not the answer. Listings must use
keys and indexes, and this makes a stray Scan a failing test rather than a slow bill.
"""

from __future__ import annotations

from typing import Any

_FORBIDDEN = frozenset({"scan", "parallel_scan"})


class NoScanClient:
    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        if name in _FORBIDDEN:
            raise AssertionError(f"DynamoDB {name} called: use a key or an index")
        if name == "get_paginator":
            return self._get_paginator
        return getattr(self._client, name)

    def _get_paginator(self, operation_name: str) -> Any:
        if operation_name in _FORBIDDEN:
            raise AssertionError(f"DynamoDB {operation_name} paginator requested")
        return self._client.get_paginator(operation_name)
