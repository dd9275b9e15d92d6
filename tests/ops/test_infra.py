"""infra/orchestrator-tables.yaml against the code (infra/README.md says what it holds and why).

The template is written by hand; these tests keep it equal to ``TABLES`` in
app/store/dynamodb/tables.py, keep its two IAM policies least-privilege, run cfn-lint on it,
and trace the AWS requests the code makes under the other test suites to check that the
policies allow exactly those.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.store.dynamodb.tables import FEED_CHECKPOINTS, TABLES, TableSpec

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "orchestrator-tables.yaml"

SERVICE_POLICY = "ServicePolicy"
EXPORTER_POLICY = "ExporterPolicy"
# The API service (DynamoStore) uses every table: FeedCheckpoints for the webhook relay's
# position in the event log, beside the exporters' checkpoints.
SERVICE_TABLES = frozenset(spec.name for spec in TABLES)

# Item and index requests. Scan is not among them: listings use keys and indexes.
DATA_PLANE = frozenset(
    f"dynamodb:{action}"
    for action in (
        "GetItem",
        "BatchGetItem",
        "Query",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "ConditionCheckItem",
    )
)
# The only control-plane action either process may have: finding a table (readiness
# probe, stream ARN). Tables come from the template, never from the processes.
DESCRIBE_TABLE = "dynamodb:DescribeTable"
STREAM_READS = frozenset(
    {"dynamodb:DescribeStream", "dynamodb:GetShardIterator", "dynamodb:GetRecords"}
)
ARCHIVE_RESOURCE = "${ArchiveBucketArn}/${ArchiveKeyPrefix}*"

TABLE_PROPERTIES = frozenset(
    {
        "TableName",
        "KeySchema",
        "AttributeDefinitions",
        "GlobalSecondaryIndexes",
        "BillingMode",
        "StreamSpecification",
        "TimeToLiveSpecification",
        "PointInTimeRecoverySpecification",
        "SSESpecification",
        "DeletionProtectionEnabled",
        "Tags",
    }
)


# --------------------------------------------------------------------------- loading


class _CloudFormationLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms: ``!Sub x`` loads as ``{"Fn::Sub": x}``."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        raise yaml.constructor.ConstructorError(None, None, f"!{suffix}", node.start_mark)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)  # !GetAtt Table.Arn is [Table, Arn]
    return {f"Fn::{suffix}": value}


_CloudFormationLoader.add_multi_constructor("!", _intrinsic)


@cache
def _template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=_CloudFormationLoader)
    return loaded


def _resources(kind: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in _template()["Resources"].items()
        if resource["Type"] == kind
    }


@cache
def _tables() -> dict[str, tuple[str, dict[str, Any]]]:
    """The template's tables by spec name (TableName after the prefix): (logical id, resource)."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for logical_id, resource in _resources("AWS::DynamoDB::Table").items():
        name = resource["Properties"].get("TableName")
        sub = name.get("Fn::Sub") if isinstance(name, dict) else None
        match = re.fullmatch(r"\$\{TablePrefix\}([A-Za-z0-9_.-]+)", sub or "")
        assert match, f'{logical_id}: TableName must be !Sub "${{TablePrefix}}<Name>", not {name!r}'
        assert match[1] not in found, f"two tables named {match[1]}"
        found[match[1]] = (logical_id, resource)
    return found


def _table_of(logical_id: str) -> str:
    for name, (table_id, _) in _tables().items():
        if table_id == logical_id:
            return name
    raise AssertionError(f"{logical_id} is not a table of the template")


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(policy_id: str) -> list[dict[str, Any]]:
    policy = _resources("AWS::IAM::ManagedPolicy").get(policy_id)
    assert policy is not None, f"no AWS::IAM::ManagedPolicy {policy_id}"
    document = policy["Properties"]["PolicyDocument"]
    assert document["Version"] == "2012-10-17"
    statements: list[dict[str, Any]] = document["Statement"]
    for statement in statements:
        # No NotAction, NotResource or Deny: every grant is spelled out.
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource"}, statement
        assert statement["Effect"] == "Allow", statement
    return statements


def _resource_kind(resource: Any) -> tuple[str, str]:
    """("table" | "indexes" | "stream", spec name) or ("archive", ""), from a Resource entry."""
    get_att = resource.get("Fn::GetAtt") if isinstance(resource, dict) else None
    if get_att is not None and get_att[1] == "Arn":
        return "table", _table_of(get_att[0])
    if get_att is not None and get_att[1] == "StreamArn":
        return "stream", _table_of(get_att[0])
    sub = resource.get("Fn::Sub") if isinstance(resource, dict) else None
    if sub == ARCHIVE_RESOURCE:
        return "archive", ""
    index = re.fullmatch(r"\$\{(\w+)\.Arn\}/index/\*", sub or "")
    if index:
        return "indexes", _table_of(index[1])
    raise AssertionError(f"not a table, index, stream or archive ARN: {resource!r}")


def _grants(policy_id: str) -> set[tuple[str, str, str]]:
    """(action, resource kind, spec name) for every action on every resource of the policy."""
    return {
        (action, *_resource_kind(resource))
        for statement in _statements(policy_id)
        for action in _listed(statement["Action"])
        for resource in _listed(statement["Resource"])
    }


def _streamed_tables() -> set[str]:
    from app.feed.dynamodb_streams import streamed_tables

    return {spec.name for spec in streamed_tables()}


# --------------------------------------------------------------------------- tables


def test_the_template_has_exactly_the_tables_of_the_code() -> None:
    assert set(_tables()) == {spec.name for spec in TABLES}


@pytest.mark.parametrize("spec", TABLES, ids=[spec.name for spec in TABLES])
def test_each_table_matches_its_spec(spec: TableSpec) -> None:
    assert spec.name in _tables(), f"no table ${{TablePrefix}}{spec.name} in the template"
    logical_id, resource = _tables()[spec.name]
    properties = resource["Properties"]
    assert set(properties) <= TABLE_PROPERTIES, (
        f"{logical_id}: properties TableSpec does not describe:"
        f" {sorted(set(properties) - TABLE_PROPERTIES)}"
    )

    assert properties["KeySchema"] == spec.key_schema()
    attributes = [
        (a["AttributeName"], a["AttributeType"]) for a in properties["AttributeDefinitions"]
    ]
    assert len(attributes) == len(set(attributes)), f"{logical_id}: an attribute defined twice"
    expected = {(a["AttributeName"], a["AttributeType"]) for a in spec.attribute_definitions()}
    assert set(attributes) == expected

    indexes = {index["IndexName"]: index for index in properties.get("GlobalSecondaryIndexes", [])}
    assert set(indexes) == {index.name for index in spec.indexes}
    for index_spec in spec.indexes:
        index = indexes[index_spec.name]
        assert set(index) == {"IndexName", "KeySchema", "Projection"}, index
        assert index["KeySchema"] == index_spec.key_schema(), index_spec.name
        projection = index["Projection"]
        assert projection["ProjectionType"] == index_spec.projection, index_spec.name
        assert sorted(projection.get("NonKeyAttributes", [])) == sorted(
            index_spec.non_key_attributes if index_spec.projection == "INCLUDE" else ()
        ), index_spec.name

    assert properties["BillingMode"] == spec.billing_mode == "PAY_PER_REQUEST"
    assert properties["StreamSpecification"] == {"StreamViewType": spec.stream_view_type}
    assert spec.stream_view_type == "NEW_AND_OLD_IMAGES"
    if spec.ttl_attribute is None:
        assert "TimeToLiveSpecification" not in properties
    else:
        assert properties.get("TimeToLiveSpecification") == {
            "AttributeName": spec.ttl_attribute,
            "Enabled": True,
        }
    assert properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert properties["SSESpecification"]["SSEEnabled"] is True
    assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"


def test_outputs_name_every_table_and_its_stream() -> None:
    values = [output["Value"] for output in _template()["Outputs"].values()]
    for logical_id, _ in _tables().values():
        assert {"Ref": logical_id} in values, f"no output of the name of {logical_id}"
        assert {"Fn::GetAtt": [logical_id, "StreamArn"]} in values, f"no stream of {logical_id}"


# --------------------------------------------------------------------------- policies


def test_no_policy_grants_a_wildcard_action_or_an_unknown_resource() -> None:
    for policy_id in (SERVICE_POLICY, EXPORTER_POLICY):
        for action, _, _ in _grants(policy_id):  # _grants fails on any other resource
            assert "*" not in action, f"{policy_id}: {action}"


def test_the_service_policy_grants_item_requests_on_the_store_tables_only() -> None:
    grants = _grants(SERVICE_POLICY)
    actions = {action for action, _, _ in grants}
    for forbidden in (
        "dynamodb:*",
        "dynamodb:Scan",
        "dynamodb:CreateTable",
        "dynamodb:DeleteTable",
    ):
        assert forbidden not in actions
    assert actions <= DATA_PLANE | {DESCRIBE_TABLE}, sorted(actions - DATA_PLANE)
    assert {name for _, _, name in grants} == SERVICE_TABLES
    specs = {spec.name: spec for spec in TABLES}
    for action, kind, name in grants:
        assert kind in ("table", "indexes"), (action, kind, name)
        if kind == "indexes":
            assert specs[name].indexes, f"index ARNs of {name}, which has no GSI"
            assert action == "dynamodb:Query", f"{action} on the indexes of {name}"
    for name in SERVICE_TABLES:
        if specs[name].indexes:
            assert ("dynamodb:Query", "indexes", name) in grants, f"no Query on indexes of {name}"
    # The readiness probe describes one table; nothing else is described.
    assert {name for action, _, name in grants if action == DESCRIBE_TABLE} == {"Benches"}


def test_the_exporter_policy_reads_the_streamed_tables_and_keeps_its_checkpoints() -> None:
    grants = _grants(EXPORTER_POLICY)
    streamed = _streamed_tables()
    checkpoint_actions = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}
    for action, kind, name in grants:
        if kind == "stream":
            assert action in STREAM_READS and name in streamed, (action, name)
        elif kind == "table" and action == DESCRIBE_TABLE:
            assert name in streamed, f"DescribeTable on {name}, which is not exported"
        elif kind == "table":
            assert name == FEED_CHECKPOINTS.name and action in checkpoint_actions, (action, name)
        else:
            assert (action, kind) == ("s3:PutObject", "archive"), (action, kind, name)
    for name in streamed:
        assert (DESCRIBE_TABLE, "table", name) in grants, f"DescribeTable on {name}"
        for action in STREAM_READS:
            assert (action, "stream", name) in grants, f"{action} on the stream of {name}"


def test_the_two_policies_cover_every_table() -> None:
    covered = {name for policy in (SERVICE_POLICY, EXPORTER_POLICY) for *_, name in _grants(policy)}
    assert covered - {""} == {spec.name for spec in TABLES}


# --------------------------------------------------------------------------- cfn-lint


def test_cfn_lint_passes() -> None:
    if importlib.util.find_spec("cfnlint") is None:
        pytest.fail("cfn-lint is not installed: install the dev extras (cfn-lint)")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from cfnlint.runner import main; sys.exit(main())",
            str(TEMPLATE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- requests

# The suites whose DynamoDB cases run under the trace: between them they make every request
# the service and the exporter make. Chosen by tracing the store's whole contract suite
# and keeping the files whose cases cover every grant (a set cover): the same requests,
# in a third of the time. A grant no longer exercised fails below, naming it.
TRACED_SUITES = (
    "tests/api/test_round_trips.py",  # every API request kind, once each
    "tests/contract/test_event_log.py::test_announcing_is_once_whoever_races",  # milestones
    "tests/contract/test_webhook_store.py",  # subscriptions, deliveries, the relay
    "tests/contract/test_scheduling_store.py",  # quotas, ledgers, the scheduler's reads
    "tests/contract/dynamodb/test_executions.py",  # a lost race's conditional reads
    "tests/contract/dynamodb/test_store.py",  # the readiness probe
    "tests/feed/test_archive_sinks.py",  # the exporter: stream, checkpoints, S3
    "tests/feed/test_postgres_sink.py",
)
# Their DynamoDB cases, less the ones that repeat requests of a kind already traced many
# times over (races, random walks, a killed exporter): the same requests, a minute less.
TRACED_CASES = (
    "dynamodb and not racing and not random_walk and not kill_between and not twenty and not fifty"
)
# moto's account and the default region, as in the ARNs moto returns.
ACCOUNT = "123456789012"
REGION = "us-east-1"
# Each test uses tables of its own prefix and buckets of their own name: the trace maps
# them onto these before evaluating the policies, resolved with the same values.
PREFIX = "orch-"
BUCKET = "archive"
PARAMETERS = {
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "TablePrefix": PREFIX,
    "ArchiveBucketArn": f"arn:aws:s3:::{BUCKET}",
    "ArchiveKeyPrefix": "",
}
# Requests made only to create tables (create-tables, ORCH_CREATE_TABLES): local stacks.
SETUP_CALLERS = frozenset({"app.store.dynamodb.tables", "app.feed.factory"})
TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}

# A pytest plugin for the nested run: records every aiobotocore request made under a module
# of app/, named by the nearest such module on the stack (a test's proxy around a client
# sits between the two and is looked through); requests test code makes itself, with no
# app/ code on the stack, are not recorded.
TRACER = """
import json, os, sys
from aiobotocore.client import AioBaseClient

_RECORDS = set()
_STREAM_OF_ITERATOR = {}


def _caller():
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("app."):
            return module
        frame = frame.f_back
    return ""


def pytest_configure(config):
    original = AioBaseClient._make_api_call

    async def traced(self, operation, params):
        caller = _caller()
        service = self.meta.service_model.service_name
        record = {"caller": caller, "service": service, "operation": operation}
        for name in ("TableName", "IndexName", "StreamArn", "Bucket"):
            if name in params:
                record[name] = params[name]
        if service == "s3" and "Key" in params:
            record["Key"] = params["Key"]
        if "RequestItems" in params:
            record["tables"] = sorted(params["RequestItems"])
        if "TransactItems" in params:
            record["actions"] = sorted(
                [kind, body["TableName"]]
                for item in params["TransactItems"]
                for kind, body in item.items()
            )
        if "ShardIterator" in params:
            record["StreamArn"] = _STREAM_OF_ITERATOR.get(params["ShardIterator"])
        if caller.startswith("app."):
            _RECORDS.add(json.dumps(record, sort_keys=True))
        response = await original(self, operation, params)
        stream = record.get("StreamArn")
        for name in ("ShardIterator", "NextShardIterator"):
            if stream and response.get(name):
                _STREAM_OF_ITERATOR[response[name]] = stream
        return response

    AioBaseClient._make_api_call = traced


def pytest_unconfigure(config):
    with open(os.environ["ORCH_IAM_TRACE"], "w") as out:
        json.dump([json.loads(record) for record in sorted(_RECORDS)], out, indent=1)
"""


def _canonical_table(actual: str) -> str:
    for spec in sorted(TABLES, key=lambda spec: -len(spec.name)):
        if actual.endswith(spec.name):
            return PREFIX + spec.name
    return actual  # not a table of the code: no policy names it


def _table_arn(actual: str) -> str:
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{_canonical_table(actual)}"


def _iam_requests(record: dict[str, Any]) -> list[tuple[str, str]]:
    """What IAM authorises for one recorded request: (action, resource ARN) pairs."""
    service, operation = record["service"], record["operation"]
    if service == "dynamodb" and "actions" in record:  # TransactWriteItems, TransactGetItems
        return [
            (f"dynamodb:{TRANSACT_ACTIONS[kind]}", _table_arn(table))
            for kind, table in record["actions"]
        ]
    if service == "dynamodb" and "tables" in record:  # BatchGetItem, BatchWriteItem
        return [(f"dynamodb:{operation}", _table_arn(table)) for table in record["tables"]]
    if service == "dynamodb" and "IndexName" in record:
        return [
            (
                f"dynamodb:{operation}",
                f"{_table_arn(record['TableName'])}/index/{record['IndexName']}",
            )
        ]
    if service == "dynamodb" and "TableName" in record:
        return [(f"dynamodb:{operation}", _table_arn(record["TableName"]))]
    if service == "dynamodbstreams":
        stream = re.fullmatch(
            r"arn:aws:dynamodb:[^:]*:[^:]*:table/([^/]+)(/stream/.+)", record.get("StreamArn") or ""
        )
        if stream is None:  # ListStreams, or a stream the trace lost track of
            return [(f"dynamodb:{operation}", "*")]
        return [(f"dynamodb:{operation}", _table_arn(stream[1]) + stream[2])]
    if service == "s3":
        key = record.get("Key")
        return [(f"s3:{operation}", f"arn:aws:s3:::{BUCKET}" + ("" if key is None else f"/{key}"))]
    return [(f"{service}:{operation}", "*")]


def _resolve(value: Any) -> str:
    """A Resource entry of a policy as an ARN pattern, with PARAMETERS for the parameters."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return PARAMETERS[value["Ref"]]
    if "Fn::GetAtt" in value:
        return _attribute(*value["Fn::GetAtt"])
    if "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):

        def substitute(match: re.Match[str]) -> str:
            name = match[1]
            if name in PARAMETERS:
                return PARAMETERS[name]
            return _attribute(*name.split(".", 1))

        return re.sub(r"\$\{([\w:.]+)\}", substitute, value["Fn::Sub"])
    raise AssertionError(f"cannot resolve {value!r}")


def _attribute(logical_id: str, attribute: str) -> str:
    arn = _table_arn(PREFIX + _table_of(logical_id))
    if attribute == "Arn":
        return arn
    if attribute == "StreamArn":
        return f"{arn}/stream/*"  # the label is known only once the stream exists
    raise AssertionError(f"unexpected attribute {logical_id}.{attribute}")


def _matches(pattern: str, arn: str) -> bool:
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), arn) is not None


def _policy_grants(policy_id: str) -> set[tuple[str, str]]:
    """(action, ARN pattern) pairs of the policy, with its resources resolved."""
    return {
        (action, _resolve(resource))
        for statement in _statements(policy_id)
        for action in _listed(statement["Action"])
        for resource in _listed(statement["Resource"])
    }


def _policy_of(caller: str) -> str | None:
    """The policy of the process whose code made a request (None: table creation)."""
    if caller in SETUP_CALLERS:
        return None
    if caller == "app.store.dynamodb.store":  # DynamoStore._call: every store request
        return SERVICE_POLICY
    if caller.startswith("app.feed."):
        return EXPORTER_POLICY
    raise AssertionError(
        f"an AWS request made by {caller}: say here which process makes it, under which policy"
    )


def _run_traced(out: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "orch_iam_trace.py").write_text(TRACER)
    python_path = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path), "ORCH_IAM_TRACE": str(out)}
    command = [sys.executable, "-m", "pytest", *TRACED_SUITES, "-k", TRACED_CASES, "-q"]
    command += ["-p", "no:cacheprovider", "-p", "orch_iam_trace"]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )


def _summary(result: subprocess.CompletedProcess[str]) -> str:
    return "\n".join((result.stdout + result.stderr).splitlines()[-15:])


@pytest.mark.slow  # the DynamoDB cases of three suites, again, in a pytest of its own
def test_the_policies_allow_every_request_of_the_code_and_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "requests.json"
    result = _run_traced(out, tmp_path)
    # 1: some traced test failed; its requests still count. Anything else: no trace.
    assert result.returncode in (0, 1) and out.exists(), _summary(result)
    records: list[dict[str, Any]] = json.loads(out.read_text())

    requests: dict[str, set[tuple[str, str]]] = {SERVICE_POLICY: set(), EXPORTER_POLICY: set()}
    for record in records:
        policy = _policy_of(record["caller"])
        if policy is not None:
            requests[policy].update(_iam_requests(record))
    assert requests[SERVICE_POLICY] and requests[EXPORTER_POLICY], _summary(result)

    for policy, made in requests.items():
        grants = _policy_grants(policy)
        denied = sorted(
            (action, arn)
            for action, arn in made
            if not any(action == granted and _matches(pattern, arn) for granted, pattern in grants)
        )
        assert not denied, f"{policy} does not allow requests the code makes: {denied}"
        unused = sorted(
            (granted, pattern)
            for granted, pattern in grants
            if not any(action == granted and _matches(pattern, arn) for action, arn in made)
        )
        assert not unused, (
            f"{policy} grants what no traced request needs: {unused}"
            f" (or the traced suites no longer exercise it)\n{_summary(result)}"
        )
