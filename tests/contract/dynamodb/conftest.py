"""Fixtures of the DynamoDB-specific tests: a plain client, the shared tables, a store.

The tables are the session's shared ones (tests/support/dynamodb_tables.py), empty when
each test starts: no test sees another's items. Tests that need tables of their own
(layouts as created, a lagging index) make them with ``new_prefix()``.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.store.dynamodb.store import DynamoStore
from tests.support.no_scan import NoScanClient


@pytest.fixture
def raw_client(dynamodb_client: Any) -> Any:
    """A client that neither meters nor refuses anything (tests/conftest.py)."""
    return dynamodb_client


@pytest.fixture
def prefix(dynamodb_prefix: str) -> str:
    """The prefix of the shared tables, emptied for this test."""
    return dynamodb_prefix


@pytest.fixture
def dynamo(raw_client: Any, prefix: str) -> DynamoStore:
    return DynamoStore(NoScanClient(raw_client), prefix)
