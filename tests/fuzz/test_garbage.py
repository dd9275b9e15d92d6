"""Hand-written garbage: requests that broke services like this one before. Each must get a
4xx Problem Details answer (RFC 9457), never a 5xx, never a stack trace."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, ALICE, CI

pytestmark = pytest.mark.parametrize("store_kind", ["sqlite-memory"], indirect=True)

RIG = {"bench_id": "rig-1", "name": "HIL rig 1", "type": "hil"}
NOW, IN_TWO_HOURS = "2026-11-25T08:00:00Z", "2026-11-25T10:00:00Z"  # conftest's clock
RESERVATION = "{reservation_id}"  # filled in with the world's active reservation


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def run_with_metadata(metadata: str) -> str:
    """A valid execution body whose metadata is ``metadata``, written as it is sent."""
    return (
        '{"reservation_id": "' + RESERVATION + '", "commit_sha": "9fceb02", '
        '"tasks": [{"type": "flash"}], "metadata": ' + metadata + "}"
    )


def booking(start: str, end: str = "2026-11-26T10:00:00Z") -> str:
    return json.dumps({"bench_id": "rig-1", "start": start, "end": end})


@dataclass(frozen=True)
class Garbage:
    method: str
    path: str
    status: int
    body: str | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    who: dict[str, str] = field(default_factory=lambda: ADMIN)
    content_type: str = "application/json"
    now: str = ""  # where today's app answers otherwise than the contract: what it does


GARBAGE: dict[str, Garbage] = {
    "metadata nested 900 levels": Garbage(
        "POST", "/v1/executions", 422, run_with_metadata(json.dumps(nested(900))), who=CI
    ),
    "metadata with lone surrogates": Garbage(
        "POST", "/v1/executions", 422, run_with_metadata('{"k": "\\udfff\\ud800"}'), who=CI
    ),
    "metadata number 1e999": Garbage(
        "POST", "/v1/executions", 422, run_with_metadata('{"n": 1e999}'), who=CI
    ),
    "metadata NaN": Garbage("POST", "/v1/executions", 422, run_with_metadata('{"n": NaN}'), who=CI),
    "start past year 9999 in UTC": Garbage(
        "POST", "/v1/reservations", 422, booking("9999-12-31T20:00:00-14:00"), who=ALICE
    ),
    "start before year 1 in UTC": Garbage(
        "POST", "/v1/reservations", 422, booking("0001-01-01T00:00:00+14:00"), who=ALICE
    ),
    "If-Match of 10,000 digits": Garbage(
        "PATCH",
        "/v1/benches/rig-1",
        400,
        '{"name": "x"}',
        headers={"If-Match": '"' + "9" * 10_000 + '"'},
    ),
    "?to=0.5 on reservations": Garbage("GET", "/v1/reservations?to=0.5", 422, who=ALICE),
    "a trailing slash": Garbage("GET", "/v1/benches/", 404),
    "an unknown query parameter": Garbage("GET", "/v1/benches?capabilities=can-bus", 400),
    "a 2 MB body": Garbage(
        "POST", "/v1/benches", 413, json.dumps({**RIG, "labels": {"x": "y" * 2_000_000}})
    ),
    "a body that is not JSON": Garbage("POST", "/v1/benches", 400, "bench_id=rig-9&name=x"),
    "a body that is not JSON, said so": Garbage(
        "POST", "/v1/benches", 415, "bench_id=rig-9", content_type="text/plain"
    ),
    "a bench id of 10,000 characters": Garbage("GET", "/v1/benches/" + "r" * 10_000, 422),
    "a reservation id of 10,000 characters": Garbage(
        "POST", "/v1/reservations/" + "0" * 10_000 + "/cancel", 422, who=ALICE
    ),
    "a task id of 10,000 characters": Garbage("GET", "/v1/tasks/" + "t" * 10_000, 422),
    # http-contract.md, "Input limits": parsed headers over their limit are a 400.
    "an Idempotency-Key of 10,000 characters": Garbage(
        "POST",
        "/v1/reservations",
        400,
        booking("2026-11-26T09:00:00Z"),
        headers={"Idempotency-Key": "k" * 10_000},
        who=ALICE,
    ),
    "an X-Request-ID of 10,000 characters": Garbage(
        "GET",
        "/v1/benches",
        400,
        headers={"X-Request-ID": "r" * 10_000},
    ),
    # "a forged or garbled cursor is a 400".
    "a cursor of 10,000 characters": Garbage("GET", "/v1/benches?cursor=" + "c" * 10_000, 400),
}


async def active_reservation(client: httpx.AsyncClient) -> str:
    assert (await client.post("/v1/benches", json=RIG, headers=ADMIN)).status_code == 201
    body = {"bench_id": "rig-1", "start": NOW, "end": IN_TWO_HOURS}
    response = await client.post("/v1/reservations", json=body, headers=ALICE)
    assert response.status_code == 201, response.text
    reservation_id: str = response.json()["reservation_id"]
    return reservation_id


def _cases() -> list[Any]:
    return [
        pytest.param(
            name,
            id=name,
            marks=[
                pytest.mark.xfail(strict=True, raises=AssertionError, reason=f"today {garbage.now}")
            ]
            if garbage.now
            else [],
        )
        for name, garbage in GARBAGE.items()
    ]


@pytest.mark.parametrize("name", _cases())
async def test_garbage_is_a_4xx_problem(client: httpx.AsyncClient, name: str) -> None:
    garbage = GARBAGE[name]
    reservation_id = await active_reservation(client)
    content = garbage.body
    if isinstance(content, str):
        content = content.replace(RESERVATION, reservation_id).encode()
    headers = {**garbage.who, **garbage.headers}
    if content is not None:
        headers["Content-Type"] = garbage.content_type
    response = await client.request(garbage.method, garbage.path, content=content, headers=headers)

    assert response.status_code < 500, response.text
    assert response.status_code == garbage.status, response.text[:500]
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert set(problem) >= {"type", "title", "status", "detail", "instance"}, problem
    assert problem["status"] == response.status_code
    assert problem["instance"] == garbage.path.partition("?")[0]
    assert all(isinstance(problem[k], str) and problem[k] for k in ("type", "title", "detail"))
