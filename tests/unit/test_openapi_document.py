"""The OpenAPI document tells a client generator the truth: each operation's errors, with
their Problem schema, its tags and description, the bearer scheme, 304 on conditional GETs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.main import create_app
from app.settings import Settings
from tests.support.authz_matrix import ROWS

DOCUMENT = create_app(Settings()).openapi()


def _operations() -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


OPERATIONS = dict(_operations())


def test_every_status_the_matrix_answers_is_documented() -> None:
    undocumented = sorted(
        f"{row.method} {row.path}: {status}"
        for row in ROWS
        if row.path in DOCUMENT["paths"]
        for status in set(row.expect.values())
        if str(status) not in OPERATIONS[f"{row.method} {row.path}"]["responses"]
    )
    assert undocumented == []


def test_only_operations_that_can_answer_an_error_list_it() -> None:
    health = OPERATIONS["GET /healthz"]["responses"]
    assert sorted(health) == ["200", "400"]  # an unknown query parameter, nothing else
    listing = OPERATIONS["GET /v1/benches"]["responses"]
    for impossible in ("404", "409", "412", "413", "415", "428"):
        assert impossible not in listing
    action = OPERATIONS["POST /v1/reservations/{reservation_id}/cancel"]["responses"]
    assert "412" in action and "428" not in action  # If-Match is optional on actions
    patch = OPERATIONS["PATCH /v1/benches/{bench_id}"]["responses"]
    assert {"412", "428", "413", "415", "404"} <= set(patch)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_every_error_has_a_problem_schema(name: str) -> None:
    for status, response in OPERATIONS[name]["responses"].items():
        if int(status) >= 400:
            schema = response["content"]["application/problem+json"]["schema"]
            assert schema["$ref"].removeprefix("#/components/schemas/") in (
                "Problem",
                "ConflictProblem",
                "ValidationProblem",
            ), (name, status)


def test_a_conflict_is_typed_with_its_members() -> None:
    booking = OPERATIONS["POST /v1/reservations"]["responses"]["409"]
    ref = booking["content"]["application/problem+json"]["schema"]["$ref"]
    conflict = DOCUMENT["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"conflicts", "allowed_transitions", "current_status"} <= set(conflict["properties"])


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_every_operation_has_a_tag_and_a_description(name: str) -> None:
    operation = OPERATIONS[name]
    defined = {tag["name"] for tag in DOCUMENT["tags"]}
    assert operation["tags"] and set(operation["tags"]) <= defined
    assert operation["description"].strip()


def test_v1_operations_declare_the_bearer_scheme() -> None:
    assert DOCUMENT["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from the tokens file, or a JWT of a trusted issuer",
    }
    for name, operation in OPERATIONS.items():
        secured = operation.get("security") == [{"bearer": []}]
        assert secured == (" /v1/" in name), name


def test_conditional_gets_document_not_modified() -> None:
    conditional = [
        (name, operation)
        for name, operation in OPERATIONS.items()
        if any(p["name"] == "If-None-Match" for p in operation.get("parameters", []))
    ]
    assert len(conditional) == 4
    for name, operation in conditional:
        assert "ETag" in operation["responses"]["304"]["headers"], name


def test_single_resources_document_their_etag_and_creates_their_location() -> None:
    assert "ETag" in OPERATIONS["GET /v1/benches/{bench_id}"]["responses"]["200"]["headers"]
    created = OPERATIONS["POST /v1/executions"]["responses"]["201"]["headers"]
    assert {"ETag", "Location"} <= set(created)
    assert "headers" not in OPERATIONS["GET /v1/benches"]["responses"]["200"]
