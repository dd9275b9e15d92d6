"""The API tests run on SQLite in memory and on DynamoDB (moto).

The file-backed SQLite store is the same adapter with the same code path per request; it
runs the whole contract suite (tests/contract), the feed and the two-process system tests,
and `make run` serves on it. Here it would only double the SQLite half of the API tests:
a test that is about the file itself asks for it (``parametrize("store_kind", ...)``).
"""

from __future__ import annotations

import pytest

API_STORE_KINDS = ["sqlite-memory", "dynamodb"]


@pytest.fixture(params=API_STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind
