"""The one definition of every DynamoDB table: names, keys, indexes, streams, TTL.

``TABLES`` is plain data so that table creation here, the CloudFormation template and its
test all read the same source. Adding a table is one more ``TableSpec`` entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from botocore.exceptions import ClientError

# aioboto3 ships no type information; every use of its client goes through this alias.
DynamoClient: TypeAlias = Any

AttributeType = Literal["S", "N", "B"]
Projection = Literal["KEYS_ONLY", "ALL", "INCLUDE"]

# Waiting for ACTIVE: DynamoDB takes seconds, moto none; a minute is a broken deployment.
_WAIT_DELAY_S = 1
_WAIT_MAX_ATTEMPTS = 60


@dataclass(frozen=True, slots=True)
class KeyAttribute:
    name: str
    type: AttributeType


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """A global secondary index. GSIs are eventually consistent: never decide a conflict on one."""

    name: str
    partition: KeyAttribute
    sort: KeyAttribute | None = None
    projection: Projection = "ALL"
    non_key_attributes: tuple[str, ...] = ()

    def key_schema(self) -> list[dict[str, str]]:
        return _key_schema(self.partition, self.sort)

    def definition(self) -> dict[str, Any]:
        projection: dict[str, Any] = {"ProjectionType": self.projection}
        if self.projection == "INCLUDE":
            projection["NonKeyAttributes"] = list(self.non_key_attributes)
        return {"IndexName": self.name, "KeySchema": self.key_schema(), "Projection": projection}


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    partition: KeyAttribute
    sort: KeyAttribute | None = None
    indexes: tuple[IndexSpec, ...] = ()
    ttl_attribute: str | None = None
    # Every table streams both images: the archival and analytics pipeline (ADR-003) reads them.
    stream_view_type: str = "NEW_AND_OLD_IMAGES"
    billing_mode: str = "PAY_PER_REQUEST"

    def table_name(self, prefix: str) -> str:
        return f"{prefix}{self.name}"

    def key_schema(self) -> list[dict[str, str]]:
        return _key_schema(self.partition, self.sort)

    def index(self, name: str) -> IndexSpec:
        for index in self.indexes:
            if index.name == name:
                return index
        raise KeyError(name)

    def attribute_definitions(self) -> list[dict[str, str]]:
        """Every key attribute of the table and its indexes, once each."""
        seen: dict[str, AttributeType] = {}
        keys = [self.partition, self.sort]
        for index in self.indexes:
            keys += [index.partition, index.sort]
        for key in keys:
            if key is None:
                continue
            if seen.setdefault(key.name, key.type) != key.type:
                raise ValueError(f"{self.name}: attribute {key.name!r} has two types")
        return [{"AttributeName": name, "AttributeType": type_} for name, type_ in seen.items()]

    def create_table_request(self, prefix: str) -> dict[str, Any]:
        """Keyword arguments of CreateTable (TTL is a separate call: UpdateTimeToLive)."""
        request: dict[str, Any] = {
            "TableName": self.table_name(prefix),
            "KeySchema": self.key_schema(),
            "AttributeDefinitions": self.attribute_definitions(),
            "BillingMode": self.billing_mode,
            "StreamSpecification": {
                "StreamEnabled": True,
                "StreamViewType": self.stream_view_type,
            },
        }
        if self.indexes:
            request["GlobalSecondaryIndexes"] = [index.definition() for index in self.indexes]
        return request


def _key_schema(partition: KeyAttribute, sort: KeyAttribute | None) -> list[dict[str, str]]:
    schema = [{"AttributeName": partition.name, "KeyType": "HASH"}]
    if sort is not None:
        schema.append({"AttributeName": sort.name, "KeyType": "RANGE"})
    return schema


# Benches holds the bench item (sk "BENCH") and one guard item per capability tag
# (sk "CAP#<tag>", attribute ``capability``) that feeds the sparse capability index.
BENCH_SK = "BENCH"
CAPABILITY_SK_PREFIX = "CAP#"
# Every bench item carries list_pk = "BENCH" so one index partition lists them in id order.
BENCH_LIST_PK = "BENCH"
CAPABILITY_INDEX = "capability_idx"
BENCH_LIST_INDEX = "bench_list_idx"

BENCHES = TableSpec(
    name="Benches",
    partition=KeyAttribute("bench_id", "S"),
    sort=KeyAttribute("sk", "S"),
    indexes=(
        IndexSpec(
            name=CAPABILITY_INDEX,
            partition=KeyAttribute("capability", "S"),
            sort=KeyAttribute("bench_id", "S"),
            projection="KEYS_ONLY",
        ),
        IndexSpec(
            name=BENCH_LIST_INDEX,
            partition=KeyAttribute("list_pk", "S"),
            sort=KeyAttribute("bench_id", "S"),
            projection="ALL",
        ),
    ),
)

# One item per version of a resource; partition "<entity_type>#<entity_id>".
HISTORY = TableSpec(
    name="History",
    partition=KeyAttribute("entity", "S"),
    sort=KeyAttribute("version", "N"),
    ttl_attribute="expires_at",
)

# Reservations by id; three indexes serve calendars, "my reservations" and a team's in start
# order.
# They lag the table: listings read them, bookings never decide on them (see BENCH_CALENDAR).
BENCH_RESERVATIONS_INDEX = "bench_reservations_idx"
USER_RESERVATIONS_INDEX = "user_reservations_idx"
# Sparse by nature: only a reservation with a team carries ``team`` (a team's usage).
TEAM_RESERVATIONS_INDEX = "team_reservations_idx"
# Sparse: only booked reservations carry ``open_pk``, so housekeeping finds the ones whose
# window has ended with one query, however many finished reservations the table holds.
OPEN_RESERVATIONS_INDEX = "open_reservations_idx"
OPEN_RESERVATION_PK = "BOOKED"
# Sparse: only a booked reservation with a milestone still to announce carries
# announce_pk = "DUE", sorted on that milestone's time (``announce_at``: its start while
# nothing is announced, its end once it started), so the housekeeper's pass reads the
# reservations due an announcement, not every booked one.
ANNOUNCE_INDEX = "announce_idx"
ANNOUNCE_PK_ATTRIBUTE = "announce_pk"
ANNOUNCE_AT = "announce_at"
ANNOUNCE_PK = "DUE"
# Sparse, on the same ``open_pk`` (booked only) sorted by start: the reservations that
# started in a range (check-in and idleness chores).
BOOKED_STARTS_INDEX = "booked_starts_idx"
# Sparse: only a booked reservation with ``advance`` carries advance_pk = "ADVANCE", sorted
# by start, so the scheduler reads the ones it may move up, not every booked one.
ADVANCING_INDEX = "advancing_idx"
ADVANCE_PK_ATTRIBUTE = "advance_pk"
ADVANCE_PK = "ADVANCE"
# Sparse: only a booked reservation marked at risk carries at_risk_pk = "AT_RISK", sorted
# by start, so housekeeping finds the marks to clear without reading every booking.
AT_RISK_INDEX = "at_risk_idx"
AT_RISK_PK_ATTRIBUTE = "at_risk_pk"
AT_RISK_PK = "AT_RISK"


def _by_start(name: str, partition: str, projection: Projection) -> IndexSpec:
    return IndexSpec(
        name=name,
        partition=KeyAttribute(partition, "S"),
        sort=KeyAttribute("start", "S"),
        projection=projection,
    )


RESERVATIONS = TableSpec(
    name="Reservations",
    partition=KeyAttribute("reservation_id", "S"),
    indexes=(
        _by_start(BENCH_RESERVATIONS_INDEX, "bench_id", "ALL"),
        _by_start(USER_RESERVATIONS_INDEX, "user_id", "ALL"),
        _by_start(TEAM_RESERVATIONS_INDEX, "team", "ALL"),
        IndexSpec(
            name=OPEN_RESERVATIONS_INDEX,
            partition=KeyAttribute("open_pk", "S"),
            sort=KeyAttribute("end", "S"),
            projection="KEYS_ONLY",
        ),
        IndexSpec(
            name=ANNOUNCE_INDEX,
            partition=KeyAttribute(ANNOUNCE_PK_ATTRIBUTE, "S"),
            sort=KeyAttribute(ANNOUNCE_AT, "S"),
            projection="KEYS_ONLY",
        ),
        _by_start(BOOKED_STARTS_INDEX, "open_pk", "KEYS_ONLY"),
        _by_start(ADVANCING_INDEX, ADVANCE_PK_ATTRIBUTE, "KEYS_ONLY"),
        _by_start(AT_RISK_INDEX, AT_RISK_PK_ATTRIBUTE, "KEYS_ONLY"),
    ),
)

# One guard item per bench and UTC day ("YYYY-MM-DD"): ``slots`` lists the booked windows
# touching that day and ``version`` counts its writes. A booking reads its days with
# ConsistentRead and writes them in its transaction conditioned on the versions it read,
# so two bookings that share a day cannot both commit.
BENCH_CALENDAR = TableSpec(
    name="BenchCalendar",
    partition=KeyAttribute("bench_id", "S"),
    sort=KeyAttribute("day", "S"),
)

# One guard item per quota holder (holder "user#<id>" / "team#<name>"): the windows its
# holding reservations hold and a ``version``, rewritten (version-conditioned) by every
# change of what a reservation holds, and read by quota checks with the calendar days.
LEDGERS = TableSpec(
    name="Ledgers",
    partition=KeyAttribute("holder", "S"),
)

# Quotas of users and teams (quota = "user#<name>" / "team#<name>"), with a version.
QUOTAS = TableSpec(
    name="Quotas",
    partition=KeyAttribute("quota", "S"),
)

# Idempotency-Key records (24 h), written in the transaction of the resource they create.
# ``expires_at`` is epoch seconds for TTL, which deletes late: readers compare, not TTL.
IDEMPOTENCY = TableSpec(
    name="Idempotency",
    partition=KeyAttribute("key", "S"),
    ttl_attribute="expires_at",
)

# Executions by id. Each index sorts on ``created_key`` = execution_page_key, i.e.
# "<created_at iso>|<execution_id>": one string whose text order is the port's order
# (created_at, execution_id), unique per item, so pages resume exactly after a cursor.
RESERVATION_EXECUTIONS_INDEX = "reservation_idx"
BENCH_EXECUTIONS_INDEX = "bench_executions_idx"
EXECUTION_STATUS_INDEX = "execution_status_idx"
# Sparse: only a queued or running execution carries ``open_reservation_id``, so an agent's
# claim reads the unfinished runs of its reservation, not every run it ever had.
OPEN_EXECUTIONS_INDEX = "open_executions_idx"
OPEN_RESERVATION_ID = "open_reservation_id"
CREATED_KEY = "created_key"

EXECUTIONS = TableSpec(
    name="Executions",
    partition=KeyAttribute("execution_id", "S"),
    indexes=tuple(
        IndexSpec(
            name=name,
            partition=KeyAttribute(partition, "S"),
            sort=KeyAttribute(CREATED_KEY, "S"),
            projection="ALL",
        )
        for name, partition in (
            (RESERVATION_EXECUTIONS_INDEX, "reservation_id"),
            (BENCH_EXECUTIONS_INDEX, "bench_id"),
            (EXECUTION_STATUS_INDEX, "status"),
            (OPEN_EXECUTIONS_INDEX, OPEN_RESERVATION_ID),
        )
    ),
)

# Tasks by id. Only a leased task carries lease_pk = "LEASED", so the sparse lease index
# holds exactly the leased tasks, in lease_expires_at order, for the housekeeper's sweep.
LEASE_INDEX = "lease_idx"
LEASED_PK = "LEASED"

TASKS = TableSpec(
    name="Tasks",
    partition=KeyAttribute("task_id", "S"),
    indexes=(
        IndexSpec(
            name=LEASE_INDEX,
            partition=KeyAttribute("lease_pk", "S"),
            sort=KeyAttribute("lease_expires_at", "S"),
            projection="ALL",
        ),
    ),
)

# The event log: one item per domain event, put in the transaction of the change that
# raises it. Partitioned by the UTC hour of the event id's time ("2026-12-01T18"), sorted
# by the id itself (UUIDv7: text order is time order), so a reader resumes after an id by
# querying its hour and the hours after it. TTL deletes events past the log's retention.
EVENTS = TableSpec(
    name="Events",
    partition=KeyAttribute("bucket", "S"),
    sort=KeyAttribute("event_id", "S"),
    ttl_attribute="expires_at",
)

# Webhook subscriptions by id (they hold signing secrets: never exported). Every item
# carries list_pk = "WEBHOOK", so one index partition lists them in id order.
WEBHOOK_LIST_INDEX = "webhook_list_idx"
WEBHOOK_LIST_PK = "WEBHOOK"

WEBHOOKS = TableSpec(
    name="Webhooks",
    partition=KeyAttribute("webhook_id", "S"),
    indexes=(
        IndexSpec(
            name=WEBHOOK_LIST_INDEX,
            partition=KeyAttribute("list_pk", "S"),
            sort=KeyAttribute("webhook_id", "S"),
            projection="ALL",
        ),
    ),
)

# One delivery per subscription and event (delivery_id is the event's id). Two sparse
# indexes: due_idx holds the open ones (due_pk = "DUE" while pending or sending) by due_at,
# for the sender's sweep; open_entity_idx holds them by "<webhook_id>|<entity_key>" in id
# order, so only the oldest open delivery about an entity is sent.
DUE_INDEX = "due_idx"
DUE_PK = "DUE"
OPEN_ENTITY_INDEX = "open_entity_idx"

DELIVERIES = TableSpec(
    name="Deliveries",
    partition=KeyAttribute("webhook_id", "S"),
    sort=KeyAttribute("delivery_id", "S"),
    indexes=(
        IndexSpec(
            name=DUE_INDEX,
            partition=KeyAttribute("due_pk", "S"),
            sort=KeyAttribute("due_at", "S"),
            projection="KEYS_ONLY",
        ),
        IndexSpec(
            name=OPEN_ENTITY_INDEX,
            partition=KeyAttribute("open_entity", "S"),
            sort=KeyAttribute("delivery_id", "S"),
            projection="KEYS_ONLY",
        ),
    ),
)

# The change feed's own state: one item per exporter name, holding the position it has
# delivered up to and a version every advance is conditioned on. The service keeps the
# webhook relay's position in the event log here too, under a name of its own.
FEED_CHECKPOINTS = TableSpec(
    name="FeedCheckpoints",
    partition=KeyAttribute("name", "S"),
)

TABLES: tuple[TableSpec, ...] = (
    BENCHES,
    HISTORY,
    RESERVATIONS,
    BENCH_CALENDAR,
    LEDGERS,
    QUOTAS,
    IDEMPOTENCY,
    EXECUTIONS,
    TASKS,
    EVENTS,
    WEBHOOKS,
    DELIVERIES,
    FEED_CHECKPOINTS,
)


async def create_tables(client: DynamoClient, prefix: str) -> list[str]:
    """Create every table in ``TABLES`` that is missing and enable TTL; safe to repeat.

    Returns the names of all tables, existing or new. Tables that exist are left as they
    are apart from TTL: changing keys or indexes of a live table is a migration, not this.
    """
    names = []
    for spec in TABLES:
        request = spec.create_table_request(prefix)
        name = request["TableName"]
        try:
            await client.create_table(**request)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceInUseException":
                raise
        names.append(name)
    for spec, name in zip(TABLES, names, strict=True):
        waiter = client.get_waiter("table_exists")
        await waiter.wait(
            TableName=name,
            WaiterConfig={"Delay": _WAIT_DELAY_S, "MaxAttempts": _WAIT_MAX_ATTEMPTS},
        )
        if spec.ttl_attribute is not None:
            await _enable_ttl(client, name, spec.ttl_attribute)
    return names


async def _enable_ttl(client: DynamoClient, table_name: str, attribute: str) -> None:
    described = await client.describe_time_to_live(TableName=table_name)
    current = described.get("TimeToLiveDescription", {})
    if current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        if current.get("AttributeName") != attribute:
            raise RuntimeError(
                f"{table_name}: TTL is on {current.get('AttributeName')!r}, expected {attribute!r}"
            )
        return
    await client.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute},
    )
