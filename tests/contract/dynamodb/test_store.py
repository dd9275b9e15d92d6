"""The DynamoDB adapter as a whole: tables as created, no Scan, outages; and the test
server's DynamoDB rules that moto alone lacks.

Runs against moto's server (see tests/conftest.py).
"""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from app.store.base import Store, StoreUnavailable
from app.store.dynamodb.store import DynamoStore
from app.store.dynamodb.tables import BENCHES, HISTORY, TABLES, create_tables
from tests.support.dynamodb_tables import dynamodb_session, new_prefix
from tests.support.no_scan import NoScanClient


async def test_create_tables_twice_is_fine_and_lays_out_the_spec(raw_client: Any) -> None:
    prefix = new_prefix()
    first = await create_tables(raw_client, prefix)
    second = await create_tables(raw_client, prefix)
    assert (
        first
        == second
        == [
            f"{prefix}Benches",
            f"{prefix}History",
            f"{prefix}Reservations",
            f"{prefix}BenchCalendar",
            f"{prefix}Ledgers",
            f"{prefix}Quotas",
            f"{prefix}Idempotency",
            f"{prefix}Executions",
            f"{prefix}Tasks",
            f"{prefix}Events",
            f"{prefix}Webhooks",
            f"{prefix}Deliveries",
            f"{prefix}FeedCheckpoints",
        ]
    )

    for spec, name in zip(TABLES, first, strict=True):
        table = (await raw_client.describe_table(TableName=name))["Table"]
        assert table["TableStatus"] == "ACTIVE"
        assert table["KeySchema"] == spec.key_schema()
        assert sorted(table["AttributeDefinitions"], key=str) == sorted(
            spec.attribute_definitions(), key=str
        )
        assert table["StreamSpecification"] == {
            "StreamEnabled": True,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        indexes = {index["IndexName"]: index for index in table.get("GlobalSecondaryIndexes", [])}
        assert set(indexes) == {index.name for index in spec.indexes}
        for index in spec.indexes:
            assert indexes[index.name]["KeySchema"] == index.key_schema()
            assert indexes[index.name]["Projection"]["ProjectionType"] == index.projection

    # The facts themselves, not only "matches the spec": a typo in the spec shows here.
    benches = (await raw_client.describe_table(TableName=f"{prefix}Benches"))["Table"]
    assert benches["KeySchema"] == [
        {"AttributeName": "bench_id", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    indexes = {index["IndexName"]: index for index in benches["GlobalSecondaryIndexes"]}
    assert indexes["capability_idx"]["KeySchema"] == [
        {"AttributeName": "capability", "KeyType": "HASH"},
        {"AttributeName": "bench_id", "KeyType": "RANGE"},
    ]
    assert indexes["capability_idx"]["Projection"]["ProjectionType"] == "KEYS_ONLY"
    assert indexes["bench_list_idx"]["KeySchema"] == [
        {"AttributeName": "list_pk", "KeyType": "HASH"},
        {"AttributeName": "bench_id", "KeyType": "RANGE"},
    ]
    assert indexes["bench_list_idx"]["Projection"]["ProjectionType"] == "ALL"
    history = (await raw_client.describe_table(TableName=f"{prefix}History"))["Table"]
    assert history["KeySchema"] == [
        {"AttributeName": "entity", "KeyType": "HASH"},
        {"AttributeName": "version", "KeyType": "RANGE"},
    ]
    assert {"AttributeName": "version", "AttributeType": "N"} in history["AttributeDefinitions"]

    ttl = await raw_client.describe_time_to_live(TableName=f"{prefix}History")
    assert ttl["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "expires_at",
    }
    assert HISTORY.ttl_attribute == "expires_at" and BENCHES.ttl_attribute is None

    reservations = (await raw_client.describe_table(TableName=f"{prefix}Reservations"))["Table"]
    assert reservations["KeySchema"] == [{"AttributeName": "reservation_id", "KeyType": "HASH"}]
    indexes = {index["IndexName"]: index for index in reservations["GlobalSecondaryIndexes"]}
    assert set(indexes) == {
        "bench_reservations_idx",
        "user_reservations_idx",
        "team_reservations_idx",
        "open_reservations_idx",
        "announce_idx",
        "booked_starts_idx",
        "advancing_idx",
        "at_risk_idx",
    }
    assert indexes["open_reservations_idx"]["KeySchema"] == [
        {"AttributeName": "open_pk", "KeyType": "HASH"},
        {"AttributeName": "end", "KeyType": "RANGE"},
    ]
    # Sparse and keys only, by start: the booked ones, those to advance, those at risk.
    for name, partition in (
        ("booked_starts_idx", "open_pk"),
        ("advancing_idx", "advance_pk"),
        ("at_risk_idx", "at_risk_pk"),
    ):
        assert indexes[name]["KeySchema"] == [
            {"AttributeName": partition, "KeyType": "HASH"},
            {"AttributeName": "start", "KeyType": "RANGE"},
        ]
        assert indexes[name]["Projection"]["ProjectionType"] == "KEYS_ONLY"
    assert indexes["announce_idx"]["KeySchema"] == [
        {"AttributeName": "announce_pk", "KeyType": "HASH"},
        {"AttributeName": "announce_at", "KeyType": "RANGE"},
    ]
    for name, partition in (
        ("bench_reservations_idx", "bench_id"),
        ("user_reservations_idx", "user_id"),
        ("team_reservations_idx", "team"),
    ):
        assert indexes[name]["KeySchema"] == [
            {"AttributeName": partition, "KeyType": "HASH"},
            {"AttributeName": "start", "KeyType": "RANGE"},
        ]
        assert indexes[name]["Projection"]["ProjectionType"] == "ALL"
    calendar = (await raw_client.describe_table(TableName=f"{prefix}BenchCalendar"))["Table"]
    assert calendar["KeySchema"] == [
        {"AttributeName": "bench_id", "KeyType": "HASH"},
        {"AttributeName": "day", "KeyType": "RANGE"},
    ]
    assert calendar.get("GlobalSecondaryIndexes", []) == []
    for name, key in (("Ledgers", "holder"), ("Quotas", "quota")):
        table = (await raw_client.describe_table(TableName=f"{prefix}{name}"))["Table"]
        assert table["KeySchema"] == [{"AttributeName": key, "KeyType": "HASH"}]
        assert table.get("GlobalSecondaryIndexes", []) == []
    keys = (await raw_client.describe_table(TableName=f"{prefix}Idempotency"))["Table"]
    assert keys["KeySchema"] == [{"AttributeName": "key", "KeyType": "HASH"}]
    ttl = await raw_client.describe_time_to_live(TableName=f"{prefix}Idempotency")
    assert ttl["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "expires_at",
    }
    for name in ("Reservations", "BenchCalendar", "Ledgers", "Quotas"):
        ttl = await raw_client.describe_time_to_live(TableName=f"{prefix}{name}")
        assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] == "DISABLED"


async def test_execution_and_task_tables_are_laid_out_as_specified(raw_client: Any) -> None:
    prefix = new_prefix()
    await create_tables(raw_client, prefix)

    executions = (await raw_client.describe_table(TableName=f"{prefix}Executions"))["Table"]
    assert executions["KeySchema"] == [{"AttributeName": "execution_id", "KeyType": "HASH"}]
    assert sorted(executions["AttributeDefinitions"], key=str) == sorted(
        (
            {"AttributeName": name, "AttributeType": "S"}
            for name in (
                "execution_id",
                "reservation_id",
                "bench_id",
                "status",
                "created_key",
                "open_reservation_id",
            )
        ),
        key=str,
    )
    indexes = {index["IndexName"]: index for index in executions["GlobalSecondaryIndexes"]}
    assert set(indexes) == {
        "reservation_idx",
        "bench_executions_idx",
        "execution_status_idx",
        "open_executions_idx",
    }
    for name, partition in (
        ("reservation_idx", "reservation_id"),
        ("bench_executions_idx", "bench_id"),
        ("execution_status_idx", "status"),
        ("open_executions_idx", "open_reservation_id"),
    ):
        assert indexes[name]["KeySchema"] == [
            {"AttributeName": partition, "KeyType": "HASH"},
            {"AttributeName": "created_key", "KeyType": "RANGE"},
        ]
        assert indexes[name]["Projection"]["ProjectionType"] == "ALL"

    tasks = (await raw_client.describe_table(TableName=f"{prefix}Tasks"))["Table"]
    assert tasks["KeySchema"] == [{"AttributeName": "task_id", "KeyType": "HASH"}]
    [lease] = tasks["GlobalSecondaryIndexes"]
    assert lease["IndexName"] == "lease_idx"
    assert lease["KeySchema"] == [
        {"AttributeName": "lease_pk", "KeyType": "HASH"},
        {"AttributeName": "lease_expires_at", "KeyType": "RANGE"},
    ]
    assert lease["Projection"]["ProjectionType"] == "ALL"
    for name in ("Executions", "Tasks"):
        table = (await raw_client.describe_table(TableName=f"{prefix}{name}"))["Table"]
        assert table["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


async def test_the_no_scan_proxy_refuses_scans(raw_client: Any, prefix: str) -> None:
    proxy = NoScanClient(raw_client)
    with pytest.raises(AssertionError):
        await proxy.scan(TableName=f"{prefix}Benches")
    with pytest.raises(AssertionError):
        proxy.get_paginator("scan")
    assert proxy.get_paginator("query") is not None


async def test_a_committed_transaction_sent_again_with_its_token_changes_nothing(
    raw_client: Any, prefix: str
) -> None:
    # DynamoDB's rule, which botocore's retries of a late answer rely on; moto's server
    # keeps it through tests/support/moto_server.py.
    put = {
        "Put": {
            "TableName": f"{prefix}Idempotency",
            "Item": {"key": {"S": "k1"}, "resource_id": {"S": "first"}},
            "ConditionExpression": "attribute_not_exists(#key)",
            "ExpressionAttributeNames": {"#key": "key"},
        }
    }
    token = str(uuid.uuid4())
    await raw_client.transact_write_items(TransactItems=[put], ClientRequestToken=token)
    await raw_client.transact_write_items(TransactItems=[put], ClientRequestToken=token)
    with pytest.raises(ClientError) as caught:
        await raw_client.transact_write_items(
            TransactItems=[put], ClientRequestToken=str(uuid.uuid4())
        )
    assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"


async def test_ping_without_tables_is_unavailable(raw_client: Any) -> None:
    store = DynamoStore(raw_client, new_prefix())
    with pytest.raises(StoreUnavailable):
        await store.ping()


async def test_unreachable_endpoint_is_unavailable() -> None:
    # A socket bound but not listening holds the port and refuses connections at once.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        # One attempt keeps the test fast; the store's own config retries.
        config = AioConfig(connect_timeout=1, read_timeout=1, retries={"max_attempts": 1})
        async with dynamodb_session().client(
            "dynamodb", endpoint_url=endpoint, config=config
        ) as client:
            store: Store = DynamoStore(client, new_prefix())
            with pytest.raises(StoreUnavailable):
                await store.ping()
            with pytest.raises(StoreUnavailable):
                await store.benches.get("rig-1")
