"""schemathesis against the live app, operation by operation, bounded and reproducible.

Each operation of the app's own /openapi.json gets ``MAX_EXAMPLES`` generated requests,
valid ones and ones that break the schema, some on the ids of the world conftest.py seeds
(with ``If-Match: *`` where the operation takes it) and, for bookings and runs, bodies the
use-case can accept. Each is sent as the role that may call it (``conftest.caller_of``)
and checked for: no 5xx, the body matching its documented schema and media type, the
status code documented. Every failure is counted (conftest.py writes the figures to
fuzz-report.json in the session's temporary folder, or to $FUZZ_REPORT) and the
operation's test fails listing the first few, each with a curl line.

The spec declares no links (FastAPI writes none), so there is no stateful phase: the
seeded world stands in for the state a link would have carried.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from app.settings import Settings
from tests.conftest import START
from tests.fuzz.conftest import BASE, FuzzTarget, OperationStats, caller_of

# One worker runs them all, on its one app: the figures are the whole run's. 15 to 35 s,
# depending on the machine's load: slow, so that xdist starts the group first.
pytestmark = [pytest.mark.xdist_group("fuzz"), pytest.mark.slow]

# Bounded for `make test`; FUZZ_MAX_EXAMPLES=500 for a deeper run by hand.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "20"))
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same requests on every run: CI is reproducible
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: every failure is counted
    suppress_health_check=list(HealthCheck),
)
FINDINGS_SHOWN = 3


def _operations() -> list[Any]:
    document = create_app(Settings()).openapi()
    return [
        pytest.param(method.upper(), path, id=f"{method.upper()} {path}")
        for path, item in document["paths"].items()
        for method in item
    ]


def _bodies(operation_id: str, known: dict[str, list[str]]) -> Any:
    """Bodies a use-case takes (a free window, a reservation that exists): generated
    ones rarely get past validation into the store."""
    if operation_id == "create_reservation":
        return st.builds(
            lambda bench, hour, hours, purpose: {
                "bench_id": bench,
                "start": (START + timedelta(hours=hour)).isoformat(),
                "end": (START + timedelta(hours=hour + hours)).isoformat(),
                "purpose": purpose,
            },
            st.sampled_from(known["booking_bench_id"]),
            st.integers(-2, 400),
            st.integers(-1, 30),
            st.text(max_size=20),
        )
    if operation_id == "create_execution":
        task = st.fixed_dictionaries(
            {"type": st.text(min_size=1, max_size=10)},
            optional={"timeout_s": st.integers(0, 90_000), "max_attempts": st.integers(0, 11)},
        )
        return st.fixed_dictionaries(
            {
                "reservation_id": st.sampled_from(known["run_reservation_id"]),
                "commit_sha": st.text("0123456789abcdef", min_size=7, max_size=40),
                "tasks": st.lists(task, min_size=1, max_size=3),
            },
            optional={"metadata": st.dictionaries(st.text(max_size=5), st.integers())},
        )
    return None


def _strategy(operation: Any, known: dict[str, list[str]]) -> Any:
    branches = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    takes_if_match = any(header.name == "If-Match" for header in operation.headers)
    for parameter in operation.path_parameters:
        for value in known.get(parameter.name, []):
            fixed = {parameter.name: value}
            branches.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed))
            if takes_if_match:
                branches.append(
                    operation.as_strategy(
                        GenerationMode.POSITIVE, path_parameters=fixed, headers={"If-Match": "*"}
                    )
                )
    bodies = _bodies(operation.definition.raw["operationId"], known)
    if bodies is not None:
        branches.append(bodies.flatmap(lambda body: operation.as_strategy(body=body)))
    return st.one_of(branches)


CHECKS = (
    (not_a_server_error, "server_errors"),
    (response_schema_conformance, "schema_mismatches"),
    (content_type_conformance, "schema_mismatches"),
    (status_code_conformance, "undocumented_statuses"),
)


def _send(case: Any, headers: dict[str, str], stats: OperationStats) -> None:
    stats.requests += 1
    try:
        response = case.call(headers=headers, base_url=BASE)
    except Exception as error:  # the in-process transport raises what the app raised
        stats.server_errors += 1
        stats.findings.append(f"raised {error!r}\n{case.as_curl_command(headers=headers)}")
        return
    stats.statuses[response.status_code] += 1
    for check, kind in CHECKS:
        try:
            case.validate_response(response, checks=[check], headers=headers)
        except FailureGroup as failures:  # a BaseExceptionGroup: not an Exception
            setattr(stats, kind, getattr(stats, kind) + 1)
            stats.findings.append(f"{check.__name__}: {failures}")


@pytest.mark.parametrize(("method", "path"), _operations())
def test_operation(fuzz_target: FuzzTarget, method: str, path: str) -> None:
    operation = fuzz_target.schema[path][method]
    stats = fuzz_target.stats[operation.label]
    headers = caller_of(operation.definition.raw["operationId"])

    @FUZZ_SETTINGS
    @given(case=_strategy(operation, fuzz_target.known))
    def fuzz(case: Any) -> None:
        _send(case, headers, stats)

    fuzz()
    assert stats.requests > 0
    assert stats.failures == 0, (
        f"{stats.failures} failures in {stats.requests} requests:\n\n"
        + "\n\n".join(stats.findings[:FINDINGS_SHOWN])
    )
