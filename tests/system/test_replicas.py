"""Two API processes sharing one store: the conditional write, not the process, decides."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, auth

# One worker runs them all under pytest-xdist (--dist loadgroup): the replicas are
# session fixtures, started once per worker that needs them. Together they are slow.
pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.xdist_group("replicas")]

ROUNDS = 3
RACERS = 50


async def test_racing_patches_across_two_processes_have_one_winner(
    api_replicas: list[str],
) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        for _ in range(ROUNDS):
            bench_id = f"race-{uuid.uuid4().hex[:8]}"
            created = await http.post(
                f"{api_replicas[0]}/v1/benches",
                json={"bench_id": bench_id, "name": "race", "type": "hil"},
                headers=ADMIN,
            )
            assert created.status_code == 201, created.text

            async def patch(n: int, bench_id: str = bench_id) -> httpx.Response:
                replica = api_replicas[n % len(api_replicas)]
                return await http.patch(
                    f"{replica}/v1/benches/{bench_id}",
                    json={"name": f"writer {n}"},
                    headers={**ADMIN, "If-Match": '"1"'},
                )

            responses = await asyncio.gather(*(patch(n) for n in range(RACERS)))
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [200] + [412] * (RACERS - 1)
            winner = next(r for r in responses if r.status_code == 200).json()["name"]
            for replica in api_replicas:
                stored = (await http.get(f"{replica}/v1/benches/{bench_id}", headers=ADMIN)).json()
                assert (stored["name"], stored["version"]) == (winner, 2)
            history = await http.get(
                f"{api_replicas[1]}/v1/benches/{bench_id}/history", headers=ADMIN
            )
            assert [e["version"] for e in history.json()["items"]] == [1, 2]


async def test_a_cursor_from_one_replica_works_on_the_other(api_replicas: list[str]) -> None:
    prefix = f"page-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(timeout=30) as http:
        for n in range(3):
            response = await http.post(
                f"{api_replicas[0]}/v1/benches",
                json={"bench_id": f"{prefix}-{n}", "name": "p", "type": prefix},
                headers=ADMIN,
            )
            assert response.status_code == 201
        first = await http.get(
            f"{api_replicas[0]}/v1/benches", params={"type": prefix, "limit": 2}, headers=ADMIN
        )
        cursor = first.json()["next_cursor"]
        second = await http.get(
            f"{api_replicas[1]}/v1/benches",
            params={"type": prefix, "limit": 2, "cursor": cursor},
            headers=ADMIN,
        )
        assert second.status_code == 200, second.text
        assert [b["bench_id"] for b in first.json()["items"] + second.json()["items"]] == [
            f"{prefix}-{n}" for n in range(3)
        ]


BOOKING_ROUNDS = 10


async def test_racing_bookings_across_two_processes_never_double_book(
    api_replicas: list[str],
) -> None:
    users = [auth("alice-token"), auth("bob-token"), auth("ci-token"), ADMIN]
    outcomes: list[list[int]] = []
    async with httpx.AsyncClient(timeout=60) as http:
        for _ in range(BOOKING_ROUNDS):
            bench_id = f"book-{uuid.uuid4().hex[:8]}"
            created = await http.post(
                f"{api_replicas[0]}/v1/benches",
                json={"bench_id": bench_id, "name": "race", "type": "hil"},
                headers=ADMIN,
            )
            assert created.status_code == 201

            async def attempt(n: int, bench_id: str = bench_id) -> httpx.Response:
                return await http.post(
                    f"{api_replicas[n % 2]}/v1/reservations",
                    json={
                        "bench_id": bench_id,
                        "start": f"2030-01-01T09:{n:02d}:00Z",
                        "end": "2030-01-01T11:00:00Z",
                    },
                    headers=users[n % 4],
                )

            responses = await asyncio.gather(*(attempt(n) for n in range(RACERS)))
            statuses = sorted(r.status_code for r in responses)
            outcomes.append(statuses)
            calendar = await http.get(
                f"{api_replicas[1]}/v1/benches/{bench_id}/reservations",
                params={"from": "2030-01-01T00:00:00Z", "to": "2030-01-02T00:00:00Z"},
                headers=ADMIN,
            )
            assert len(calendar.json()["items"]) == 1
    assert outcomes == [[201] + [409] * (RACERS - 1)] * BOOKING_ROUNDS


async def test_one_idempotency_key_across_two_processes_books_once(
    api_replicas: list[str],
) -> None:
    bench_id = f"idem-{uuid.uuid4().hex[:8]}"
    key = {**auth("ci-token"), "Idempotency-Key": f"pipeline-{uuid.uuid4()}"}
    body = {"bench_id": bench_id, "start": "2030-02-01T09:00:00Z", "end": "2030-02-01T10:00:00Z"}
    async with httpx.AsyncClient(timeout=60) as http:
        created = await http.post(
            f"{api_replicas[0]}/v1/benches",
            json={"bench_id": bench_id, "name": "idem", "type": "hil"},
            headers=ADMIN,
        )
        assert created.status_code == 201
        responses = await asyncio.gather(
            *(
                http.post(f"{api_replicas[n % 2]}/v1/reservations", json=body, headers=key)
                for n in range(RACERS)
            )
        )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["reservation_id"] for r in responses}) == 1


async def test_runs_and_claims_across_two_processes_are_exact(api_replicas: list[str]) -> None:
    """One execution per Idempotency-Key, and one lease of its next task, whichever process
    answers."""
    ci, agent = auth("ci-token"), auth("agent1-token")
    async with httpx.AsyncClient(timeout=60) as http:
        created = await http.post(
            f"{api_replicas[0]}/v1/benches",
            json={"bench_id": "rig-1", "name": "rig 1", "type": "hil"},
            headers=ADMIN,
        )
        assert created.status_code == 201, created.text
        now = datetime.now(UTC)
        booked = await http.post(
            f"{api_replicas[1]}/v1/reservations",
            json={
                "bench_id": "rig-1",
                "start": now.isoformat(),
                "end": (now + timedelta(hours=1)).isoformat(),
            },
            headers=ci,
        )
        assert booked.status_code == 201, booked.text
        body = {
            "reservation_id": booked.json()["reservation_id"],
            "commit_sha": "abcdef1",
            "tasks": [{"type": "test", "params": {"n": n}} for n in range(5)],
        }
        key = {**ci, "Idempotency-Key": f"pipeline-{uuid.uuid4()}"}
        runs = await asyncio.gather(
            *(
                http.post(f"{api_replicas[n % 2]}/v1/executions", json=body, headers=key)
                for n in range(RACERS)
            )
        )
        assert {r.status_code for r in runs} == {201}
        assert len({r.json()["execution_id"] for r in runs}) == 1

        claims = await asyncio.gather(
            *(
                http.post(f"{api_replicas[n % 2]}/v1/benches/rig-1/tasks/claim", headers=agent)
                for n in range(20)
            )
        )
        # The tasks of a run go one at a time: only its first is claimable, and once.
        assert sorted(r.status_code for r in claims) == [200] + [204] * 19
        [leased] = [r.json()["task_id"] for r in claims if r.status_code == 200]
        assert leased.endswith(".00")


async def test_advancing_requests_and_cancels_racing_across_two_processes_stay_sound(
    api_replicas: list[str],
) -> None:
    """Twenty requests to advance and random cancels of the windows ahead of them, spread
    over both replicas at once: nobody double-booked, nobody moved later or before its
    not_before, and once the races settle no request could still move up."""
    rng = random.Random(13)
    bench_id = f"adv-{uuid.uuid4().hex[:8]}"
    base = (datetime.now(UTC) + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    users = [ADMIN, auth("alice-token"), auth("bob-token"), auth("ci-token")]

    def iso(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    async with httpx.AsyncClient(timeout=60) as http:
        created = await http.post(
            f"{api_replicas[0]}/v1/benches",
            json={"bench_id": bench_id, "name": "adv", "type": "hil"},
            headers=ADMIN,
        )
        assert created.status_code == 201, created.text
        blocks = []
        for hour in range(10):
            answer = await http.post(
                f"{api_replicas[hour % 2]}/v1/reservations",
                json={
                    "bench_id": bench_id,
                    "start": iso(base + timedelta(hours=hour)),
                    "end": iso(base + timedelta(hours=hour + 1)),
                },
                headers=ADMIN,
            )
            assert answer.status_code == 201, answer.text
            blocks.append(answer.json()["reservation_id"])

        async def request(n: int) -> dict[str, Any]:
            answer = await http.post(
                f"{api_replicas[n % 2]}/v1/reservations",
                json={
                    "bench_id": bench_id,
                    "advance": True,
                    "duration": rng.choice(["PT30M", "PT1H", "PT90M"]),
                    "not_before": iso(base),
                    "priority": rng.choice([20, 50]),
                },
                headers=users[n % len(users)],
            )
            assert answer.status_code == 201, answer.text
            body: dict[str, Any] = answer.json()
            return body

        async def cancel(reservation_id: str, n: int) -> None:
            answer = await http.post(
                f"{api_replicas[n % 2]}/v1/reservations/{reservation_id}/cancel",
                headers=ADMIN,
            )
            assert answer.status_code == 200, answer.text

        doomed = rng.sample(blocks, 6)
        jobs: list[Any] = [request(n) for n in range(20)]
        jobs += [cancel(reservation_id, n) for n, reservation_id in enumerate(doomed)]
        rng.shuffle(jobs)
        results = await asyncio.gather(*jobs)
        asked = {r["reservation_id"]: r for r in results if isinstance(r, dict)}

        # Settle: one more freed window runs a full scheduler pass.
        last = await http.post(
            f"{api_replicas[0]}/v1/reservations",
            json={
                "bench_id": bench_id,
                "start": iso(base - timedelta(hours=3)),
                "end": iso(base - timedelta(hours=2)),
            },
            headers=ADMIN,
        )
        assert last.status_code == 201, last.text
        await cancel(last.json()["reservation_id"], 1)

        calendar = (
            await http.get(
                f"{api_replicas[1]}/v1/benches/{bench_id}/reservations",
                params={
                    "from": iso(base - timedelta(hours=1)),
                    "to": iso(base + timedelta(days=3)),
                },
                headers=ADMIN,
            )
        ).json()["items"]
    windows = sorted((r["start"], r["end"]) for r in calendar)
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert end <= start, windows  # nobody double-booked
    final = {r["reservation_id"]: r for r in calendar}
    assert set(asked) <= set(final)
    for reservation_id, first in asked.items():
        now = final[reservation_id]
        assert now["start"] <= first["start"]  # never moved later
        assert now["start"] >= iso(base)  # never before not_before
    # A fixpoint: no request could move into an earlier gap of its length.
    held = sorted(
        (datetime.fromisoformat(r["start"]), datetime.fromisoformat(r["end"])) for r in calendar
    )
    for reservation_id in asked:
        mine = final[reservation_id]
        start, end = datetime.fromisoformat(mine["start"]), datetime.fromisoformat(mine["end"])
        cursor = base
        for other_start, other_end in held:
            if (other_start, other_end) == (start, end) or other_end <= cursor:
                continue
            if other_start >= start:
                break
            assert other_start - cursor < end - start, (reservation_id, cursor, other_start)
            cursor = max(cursor, other_end)


async def test_swaps_racing_for_one_spare_across_two_processes_have_one_winner(
    api_replicas: list[str],
) -> None:
    """Eight bookings on benches of their own, each moved at once to the one spare bench
    through either replica: the spare's calendar takes exactly one."""
    tag = uuid.uuid4().hex[:8]
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=random.randint(3, 300))
    window = {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}
    async with httpx.AsyncClient(timeout=60) as http:
        benches = [f"swap-{tag}-{n}" for n in range(9)]
        for bench_id in benches:
            created = await http.post(
                f"{api_replicas[0]}/v1/benches",
                json={"bench_id": bench_id, "name": bench_id, "type": "hil"},
                headers=ADMIN,
            )
            assert created.status_code == 201, created.text
        spare, taken = benches[-1], benches[:-1]
        bookings = []
        for bench_id in taken:
            booked = await http.post(
                f"{api_replicas[1]}/v1/reservations",
                json={"bench_id": bench_id, **window},
                headers=ADMIN,
            )
            assert booked.status_code == 201, booked.text
            bookings.append(booked.json()["reservation_id"])

        answers = await asyncio.gather(
            *(
                http.post(
                    f"{api_replicas[n % 2]}/v1/reservations/{reservation_id}/swap",
                    json={"bench_id": spare},
                    headers=ADMIN,
                )
                for n, reservation_id in enumerate(bookings)
            )
        )
        assert sorted(a.status_code for a in answers) == [200] + [409] * (len(bookings) - 1)
        calendar = await http.get(
            f"{api_replicas[0]}/v1/benches/{spare}/reservations",
            params={"from": window["start"], "to": window["end"]},
            headers=ADMIN,
        )
        [held] = calendar.json()["items"]
        winner = next(a for a in answers if a.status_code == 200).json()
        assert held["reservation_id"] == winner["reservation_id"]
        for answer, reservation_id in zip(answers, bookings, strict=True):
            if answer.status_code == 409:
                stayed = await http.get(
                    f"{api_replicas[1]}/v1/reservations/{reservation_id}", headers=ADMIN
                )
                assert stayed.json()["bench_id"] in taken
