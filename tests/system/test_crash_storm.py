"""SIGKILL the API in the middle of a write storm: every acknowledged write survives.

One real API process (``orchestrator serve``, tests/support/api_server.py) on a SQLite
file or on DynamoDB (the session's moto). Concurrent clients book, move (PATCH with
If-Match), cancel and cancel again, launch executions with an Idempotency-Key, and as
rig-1's agent claim and complete tasks. Every 2xx answer is recorded with its response
and the X-Request-ID the client sent. After a set number of acknowledged writes the
process gets SIGKILL, requests in flight and all; it is started again on the same store,
and then:

- each acknowledged write is there: its entity is at the acknowledged version or later,
  the history entry of that version carries the request's id, and the state folded from
  the history up to it is what the answer said;
- every history of every entity touched is 1..n, n the entity's version, with no gap;
- no two reservations holding a bench overlap, and the calendar lists every one of them;
- every acknowledged create sent again with its key and body answers 201, the same id and
  ``Idempotent-Replayed: true``; a create that got no answer, sent again with its key,
  creates at most once (there is never a second resource for one key).

Requests that got no answer may or may not have taken effect: only the acknowledged ones
are asserted. The storm runs, is killed and verified three times on SQLite, once on
DynamoDB (moto makes each round there several times dearer).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.conftest import ADMIN, AGENT1, ALICE, BOB, CI, store_settings
from tests.support.api_server import ApiServer, settings_env, start_api

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.xdist_group("crash-storm")]

STORES = ["sqlite-file", "dynamodb"]
# Acknowledged writes after which each round's process is killed, round by round. moto
# serves one request at a time and deep-copies every table a transaction touches, so a
# write costs it 100-200 ms, more as the tables grow: DynamoDB gets smaller rounds.
KILL_AFTER = {"sqlite-file": (150, 100, 100), "dynamodb": (60,)}
BOOKERS = 14  # book, move, cancel on the booking benches
LAUNCHERS = 3  # executions with an Idempotency-Key on rig-1's reservation, as CI
AGENTS = 3  # rig-1's agent: claim, then complete
# Tasks of acknowledged runs not yet completed above which a launcher, rather than queue
# more than the agents keep up with, sends a run it made again with its key (a replay).
MAX_BACKLOG = 6
BENCHES = [f"rig-{n}" for n in range(2, 8)]
USERS = [ALICE, BOB, CI, ADMIN]
SLOT = timedelta(minutes=30)
SLOTS = 40  # starts on a 20 h grid: crowded enough for conflicts
# An agent with nothing to claim asks again after this long (its polling pace).
AGENT_IDLE_S = 0.02
REQUEST_TIMEOUT_S = 60.0
ANSWER_ATTEMPTS = 3
HOLDING = {"confirmed", "active", "completed"}
HISTORY_PATHS = {
    "reservation": "/v1/reservations/{}",
    "execution": "/v1/executions/{}",
    "task": "/v1/tasks/{}",
}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class Ack:
    """One write the server acknowledged (2xx), as the client saw it."""

    op: str  # book, move, cancel, recancel, run, run-task, claim, complete
    entity: str  # reservation, execution, task
    entity_id: str
    version: int
    request_id: str
    # The representation answered, at ``version``; None when not known at that version.
    body: dict[str, Any] | None
    # True for an answer that need not have written (an action whose effect held, or a
    # replayed create): its version's entry was made by some other request.
    anyone: bool = False
    # Otherwise the entry of ``version`` is this request's, or one of these: the same
    # request sent before, which got no answer and may have committed.
    also: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Create:
    """A create sent with an Idempotency-Key, to be sent again with the same key and body."""

    op: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def key(self) -> str:
        return self.headers["Idempotency-Key"]


@dataclass(slots=True)
class Held:
    """The latest state of a reservation the storm knows of, to aim its next write."""

    reservation_id: str
    owner: dict[str, str]
    version: int
    etag: str
    start: datetime
    end: datetime
    cancelled: bool


@dataclass
class Figures:
    acknowledged: int = 0
    missing: int = 0
    replays: int = 0
    in_doubt_creates: int = 0
    in_doubt_had_committed: int = 0
    storm_replays: int = 0
    entities: int = 0
    history_entries: int = 0
    cut: int = 0  # sent, then the connection dropped: no answer
    refused: int = 0  # never reached a server (after the kill)
    statuses: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)


class Storm:
    """The clients, the record of what was acknowledged, and the checks after a restart."""

    def __init__(self, http: httpx.AsyncClient, day: datetime, seed: int) -> None:
        self.http = http
        self.day = day
        self.rng = random.Random(seed)
        self.url = ""
        self.acks: list[Ack] = []
        self.creates: list[tuple[Create, str]] = []  # acknowledged, with the id made
        self.in_doubt: list[tuple[Create, str]] = []  # sent, never answered; request id
        self.held: dict[str, Held] = {}
        # Tasks leased to the agent whose completion is owed, with the request ids of the
        # completions sent before that got no answer.
        self.claimed: list[tuple[str, tuple[str, ...]]] = []
        self.unfinished: set[str] = set()  # tasks of acknowledged runs, not completed
        self.problems: list[str] = []  # what the clients saw go wrong during the storm
        self.rig1_reservation = ""
        self.figures = Figures()
        self._ids = itertools.count()
        self._round_acks = 0
        self._kill_after = 0
        self._server: ApiServer | None = None
        self._stop = asyncio.Event()
        self._refused: set[str] = set()

    # --- talking to the server ------------------------------------------------------------

    async def send(
        self, op: str, method: str, path: str, headers: dict[str, str], body: Any = None
    ) -> tuple[httpx.Response | None, str]:
        request_id = f"storm-{next(self._ids)}"
        try:
            response = await self.http.request(
                method,
                f"{self.url}{path}",
                headers={**headers, "X-Request-ID": request_id},
                json=body,
            )
        except httpx.ConnectError:
            self.figures.refused += 1
            self._refused.add(request_id)
            return None, request_id
        except httpx.TransportError:
            self.figures.cut += 1
            return None, request_id
        self.figures.statuses[f"{op} {response.status_code}"] += 1
        return response, request_id

    async def answer(
        self, op: str, method: str, path: str, headers: dict[str, str], body: Any = None
    ) -> tuple[httpx.Response, str]:
        """After a restart: the server's answer, sent again on a 503 (the store busy). Only
        reads and creates with their key go through here: sending them again is safe."""
        attempts = ANSWER_ATTEMPTS
        while True:
            response, request_id = await self.send(op, method, path, headers, body)
            assert response is not None, f"the restarted server did not answer {method} {path}"
            attempts -= 1
            if response.status_code != 503 or attempts == 0:
                return response, request_id

    async def read(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        response, _ = await self.answer("read", "GET", f"{path}?{urlencode(params or {})}", ADMIN)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
        found: dict[str, Any] = response.json()
        return found

    def acknowledge(self, *acks: Ack) -> None:
        self.acks += acks
        self.figures.acknowledged += 1
        self._round_acks += 1
        if self._server is not None and self._round_acks >= self._kill_after:
            self._server.kill()  # SIGKILL, mid-storm: the others' requests are in flight
            self._server = None
            self._stop.set()

    # --- the writers -----------------------------------------------------------------------

    def _window(self, rng: random.Random) -> tuple[datetime, datetime]:
        start = self.day + SLOT * rng.randrange(SLOTS)
        return start, start + SLOT * rng.randrange(1, 7)

    async def book(self, rng: random.Random) -> None:
        owner = rng.choice(USERS)
        start, end = self._window(rng)
        key = f"book-{uuid.uuid4()}"
        body = {
            "bench_id": rng.choice(BENCHES),
            "start": _iso(start),
            "end": _iso(end),
            "purpose": key,
        }
        create = Create("book", "/v1/reservations", {**owner, "Idempotency-Key": key}, body)
        response, request_id = await self.send("book", "POST", create.path, create.headers, body)
        if response is None:
            self._unanswered(create, request_id)
        elif response.status_code == 201:
            self._booked(create, response, request_id)

    def _unanswered(self, create: Create, request_id: str) -> None:
        if request_id not in self._refused:  # it reached the server: it may have committed
            self.in_doubt.append((create, request_id))

    def _booked(
        self,
        create: Create,
        response: httpx.Response,
        request_id: str,
        unanswered: str | None = None,
    ) -> None:
        """A 201; ``unanswered`` names the request the same create was sent in first."""
        made = response.json()
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        reservation_id = made["reservation_id"]
        self.creates.append((create, reservation_id))
        self._learn(made, response.headers["ETag"], create.headers)
        acks = [
            Ack("book", "reservation", reservation_id, made["version"], request_id, made, replayed)
        ]
        if replayed and unanswered is not None:
            # It committed before the kill: version 1 is that request's.
            first = made if made["version"] == 1 else None
            acks.append(Ack("book", "reservation", reservation_id, 1, unanswered, first))
        self.acknowledge(*acks)

    def _learn(self, reservation: dict[str, Any], etag: str, owner: dict[str, str]) -> None:
        known = self.held.get(reservation["reservation_id"])
        if known is not None and known.version >= reservation["version"]:
            return
        auth = {"Authorization": owner["Authorization"]}
        self.held[reservation["reservation_id"]] = Held(
            reservation["reservation_id"],
            auth if known is None else known.owner,
            reservation["version"],
            etag,
            _instant(reservation["start"]),
            _instant(reservation["end"]),
            reservation["status"] == "cancelled",
        )

    def _pick(self, rng: random.Random, cancelled: bool) -> Held | None:
        ids = [r for r, held in self.held.items() if held.cancelled is cancelled]
        return self.held[rng.choice(ids)] if ids else None

    def _caller(self, rng: random.Random, held: Held) -> dict[str, str]:
        return ADMIN if rng.random() < 0.2 else held.owner

    async def _refresh(self, held: Held) -> None:
        """After a 412: what the reservation is now, to aim the next write at."""
        path = f"/v1/reservations/{held.reservation_id}"
        response, _ = await self.send("refresh", "GET", path, ADMIN)
        if response is not None and response.status_code == 200:
            self._learn(response.json(), response.headers["ETag"], held.owner)

    async def move(self, rng: random.Random) -> None:
        held = self._pick(rng, cancelled=False)
        if held is None:
            return await self.book(rng)
        start, end = self._window(rng)
        while (start, end) == (held.start, held.end):
            # With If-Match on what it knows, every move the storm sends changes something.
            start, end = self._window(rng)
        path = f"/v1/reservations/{held.reservation_id}"
        headers = {**self._caller(rng, held), "If-Match": held.etag}
        body = {"start": _iso(start), "end": _iso(end)}
        response, request_id = await self.send("move", "PATCH", path, headers, body)
        if response is None:
            return
        if response.status_code == 200:
            made = response.json()
            self._learn(made, response.headers["ETag"], held.owner)
            self.acknowledge(
                Ack("move", "reservation", held.reservation_id, made["version"], request_id, made)
            )
        elif response.status_code == 412:
            await self._refresh(held)

    async def cancel(self, rng: random.Random, again: bool) -> None:
        held = self._pick(rng, cancelled=again)
        if held is None:
            return await self.book(rng)
        path = f"/v1/reservations/{held.reservation_id}/cancel"
        headers = self._caller(rng, held)
        if not again:
            headers = {**headers, "If-Match": held.etag}
        op = "recancel" if again else "cancel"
        response, request_id = await self.send(op, "POST", path, headers)
        if response is None:
            return
        if response.status_code == 200:
            made = response.json()
            assert made["status"] == "cancelled", made
            self._learn(made, response.headers["ETag"], held.owner)
            self.acknowledge(
                Ack(
                    op,
                    "reservation",
                    held.reservation_id,
                    made["version"],
                    request_id,
                    made,
                    anyone=again,
                )
            )
        elif response.status_code == 412:
            await self._refresh(held)

    async def launch(self, rng: random.Random) -> None:
        key = f"run-{uuid.uuid4()}"
        body = {
            "reservation_id": self.rig1_reservation,
            "commit_sha": f"{rng.getrandbits(40):010x}",
            "metadata": {"key": key},
            "tasks": [{"type": "test", "params": {"n": n}} for n in range(rng.randint(1, 3))],
        }
        create = Create("run", "/v1/executions", {**CI, "Idempotency-Key": key}, body)
        response, request_id = await self.send("run", "POST", create.path, create.headers, body)
        if response is None:
            self._unanswered(create, request_id)
        elif response.status_code == 201:
            self._launched(create, response, request_id)

    def _launched(
        self,
        create: Create,
        response: httpx.Response,
        request_id: str,
        unanswered: str | None = None,
    ) -> None:
        """A 201; ``unanswered`` names the request the same create was sent in first."""
        made = response.json()
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        execution_id = made["execution_id"]
        self.creates.append((create, execution_id))
        acks = [Ack("run", "execution", execution_id, made["version"], request_id, made, replayed)]
        # The run and its tasks were written in one transaction, at version 1: by this
        # request, or (replayed) by the one that got no answer before the kill.
        writer = request_id if not replayed else unanswered
        if writer is not None:
            if replayed:
                acks.append(Ack("run", "execution", execution_id, 1, writer, None))
            acks += [
                Ack("run-task", "task", task["task_id"], 1, writer, None) for task in made["tasks"]
            ]
            self.unfinished |= {task["task_id"] for task in made["tasks"] if task["version"] == 1}
        self.acknowledge(*acks)

    async def launch_again(self, rng: random.Random) -> None:
        """A run made before, sent again with its key mid-storm: the same run, replayed."""
        create, made = rng.choice([(c, made) for c, made in self.creates if c.op == "run"])
        response, request_id = await self.send(
            "replay run", "POST", create.path, create.headers, create.body
        )
        if response is None or response.status_code == 503:
            return
        self.figures.storm_replays += 1
        seen = (
            response.status_code,
            response.headers.get("Idempotent-Replayed"),
            response.json().get("execution_id"),
        )
        if seen != (201, "true", made):
            self.problems.append(f"replay of run {create.key} ({made}) mid-storm: {seen}")
            return
        answer = response.json()
        # Recorded, but no write: it does not count towards the kill.
        self.acks.append(
            Ack("run", "execution", made, answer["version"], request_id, answer, anyone=True)
        )

    async def claim_and_complete(self) -> None:
        if self.claimed:
            await self._complete(*self.claimed.pop())
            return
        path = "/v1/benches/rig-1/tasks/claim"
        response, request_id = await self.send("claim", "POST", path, AGENT1)
        if response is None or response.status_code != 200:
            if response is not None and response.status_code == 204:
                await asyncio.sleep(AGENT_IDLE_S)  # nothing to do: the agent's polling pace
            return
        task = response.json()
        self.acknowledge(Ack("claim", "task", task["task_id"], task["version"], request_id, task))
        await self._complete(task["task_id"], ())

    async def _complete(self, task_id: str, unanswered: tuple[str, ...]) -> None:
        body = {"result": {"ok": True}}
        path = f"/v1/tasks/{task_id}/complete"
        response, request_id = await self.send("complete", "POST", path, AGENT1, body)
        if response is None:
            # Its lease is still the agent's: finish it later (it may have been finished).
            self.claimed.append((task_id, (*unanswered, request_id)))
        elif response.status_code == 200:
            task = response.json()
            assert task["status"] == "succeeded", task
            self.unfinished.discard(task_id)
            version = task["version"]
            self.acknowledge(
                Ack("complete", "task", task_id, version, request_id, task, also=unanswered)
            )

    async def _client(self, step: Callable[[], Awaitable[None]]) -> None:
        while not self._stop.is_set():
            await step()

    def _booker(self, rng: random.Random) -> Callable[[], Awaitable[None]]:
        async def step() -> None:
            draw = rng.random()
            if draw < 0.4 or not self.held:
                await self.book(rng)
            elif draw < 0.75:
                await self.move(rng)
            elif draw < 0.93:
                await self.cancel(rng, again=False)
            else:
                await self.cancel(rng, again=True)

        return step

    def _launcher(self, rng: random.Random) -> Callable[[], Awaitable[None]]:
        async def step() -> None:
            if len(self.unfinished) >= MAX_BACKLOG and any(c.op == "run" for c, _ in self.creates):
                await self.launch_again(rng)
            else:
                await self.launch(rng)

        return step

    async def rage(self, server: ApiServer, kill_after: int) -> None:
        """Run every client until ``kill_after`` acknowledged writes, which kills ``server``."""
        self.url, self._server, self._kill_after = server.url, server, kill_after
        self._round_acks = 0
        self._stop.clear()
        steps = [self._booker(random.Random(self.rng.random())) for _ in range(BOOKERS)]
        steps += [self._launcher(random.Random(self.rng.random())) for _ in range(LAUNCHERS)]
        steps += [self.claim_and_complete for _ in range(AGENTS)]
        await asyncio.gather(*(self._client(step) for step in steps))
        assert self._server is None, "the storm ended before the kill"
        assert self.problems == [], self.problems

    async def recover_leases(self) -> None:
        """As an agent does after an outage: find the tasks it holds, to finish them. A
        claim may have committed without its answer reaching the agent."""
        running = await self._pages(
            "/v1/executions", {"reservation_id": self.rig1_reservation, "status": "running"}
        )
        for execution in running:
            found = await self.read(f"/v1/executions/{execution['execution_id']}")
            for task in found["tasks"]:
                held = task["status"] == "leased" and task["lease_holder"] == "agent-rig-1"
                if held and task["task_id"] not in {owed for owed, _ in self.claimed}:
                    self.claimed.append((task["task_id"], ()))

    # --- after a restart ------------------------------------------------------------------

    async def resend_in_doubt(self) -> list[str]:
        """Creates that got no answer, sent again with their key: each answers 201 (made
        now, or replayed because it had committed before the kill) or 409 (a booking
        whose window someone else took meanwhile)."""
        problems = []
        pending, self.in_doubt = self.in_doubt, []
        self.figures.in_doubt_creates += len(pending)
        for create, unanswered in pending:
            response, request_id = await self.answer(
                f"resend {create.op}", "POST", create.path, create.headers, create.body
            )
            if response.status_code == 201:
                if response.headers.get("Idempotent-Replayed") == "true":
                    self.figures.in_doubt_had_committed += 1
                if create.op == "book":
                    self._booked(create, response, request_id, unanswered)
                else:
                    self._launched(create, response, request_id, unanswered)
            elif not (create.op == "book" and response.status_code == 409):
                problems.append(f"{create.op} {create.key}: {response.status_code} {response.text}")
        return problems

    async def _pages(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = {**params, "limit": "500"} | ({} if cursor is None else {"cursor": cursor})
            page = await self.read(path, query)
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return items

    async def verify(self) -> list[str]:
        """Every check of the module docstring; returns what failed, one line each."""
        problems: list[str] = []
        touched = sorted({(ack.entity, ack.entity_id) for ack in self.acks})
        limit = asyncio.Semaphore(8)

        async def load(
            entity: str, entity_id: str
        ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
            path = HISTORY_PATHS[entity].format(entity_id)
            async with limit:
                response, _ = await self.answer("read", "GET", path, ADMIN)
                if response.status_code == 404:
                    return None, []
                assert response.status_code == 200, f"GET {path}: {response.text}"
                return response.json(), await self._pages(f"{path}/history", {})

        loaded = await asyncio.gather(*(load(entity, id_) for entity, id_ in touched))
        state = dict(zip(touched, loaded, strict=True))
        self.figures.entities = len(touched)
        self.figures.history_entries = sum(len(history) for _, history in loaded)

        for (entity, entity_id), (current, history) in state.items():
            if current is None:
                problems.append(f"{entity} {entity_id}: acknowledged, not found")
                continue
            versions = [entry["version"] for entry in history]
            if versions != list(range(1, current["version"] + 1)):
                problems.append(
                    f"{entity} {entity_id}: version {current['version']}, history {versions}"
                )
            # One request changes an entity once: a second entry would be a write applied
            # twice (a retried call that had committed, say).
            twice = [r for r, n in Counter(e["request_id"] for e in history).items() if n > 1]
            if twice:
                problems.append(f"{entity} {entity_id}: requests {twice} wrote twice")
            if entity == "reservation" and versions and versions[0] == 1:
                folded = _fold(history)
                if folded != _reservation_state(current):
                    problems.append(f"reservation {entity_id}: item {current}, history {folded}")

        missing = 0
        for ack in self.acks:
            current, history = state[(ack.entity, ack.entity_id)]
            lost = _lost(ack, current, history)
            if lost is not None:
                missing += 1
                problems.append(f"{ack.op} {ack.entity} {ack.entity_id} v{ack.version}: {lost}")
        self.figures.missing = missing

        calendars = {bench_id: await self._calendar(bench_id) for bench_id in BENCHES}
        problems += self._check_calendars(
            calendars,
            [current for (entity, _), (current, _) in state.items() if entity == "reservation"],
        )
        problems += await self._check_one_per_key(calendars)
        return problems

    @staticmethod
    def _check_calendars(
        calendars: dict[str, list[dict[str, Any]]], reservations: list[dict[str, Any] | None]
    ) -> list[str]:
        problems = []
        for bench_id, calendar in calendars.items():
            listed = {item["reservation_id"] for item in calendar}
            holding = {
                item["reservation_id"]: item for item in calendar if item["status"] in HOLDING
            }
            for reservation in reservations:
                if (
                    reservation is not None
                    and reservation["bench_id"] == bench_id
                    and reservation["status"] in HOLDING
                ):
                    if reservation["reservation_id"] not in listed:
                        problems.append(f"calendar of {bench_id} lacks {reservation}")
                    holding.setdefault(reservation["reservation_id"], reservation)
            ordered = sorted(holding.values(), key=lambda item: _instant(item["start"]))
            for before, after in itertools.pairwise(ordered):
                if _instant(after["start"]) < _instant(before["end"]):
                    problems.append(f"{bench_id}: {before} overlaps {after}")
        return problems

    async def _check_one_per_key(self, calendars: dict[str, list[dict[str, Any]]]) -> list[str]:
        """No Idempotency-Key ever made two resources (acknowledged or not)."""
        problems = []
        runs = await self._pages(f"/v1/reservations/{self.rig1_reservation}/executions", {})
        made = Counter(f"execution for {run['metadata'].get('key')}" for run in runs)
        for calendar in calendars.values():
            made.update(f"booking for {item['purpose']}" for item in calendar)
        problems += [f"{count} of {what}" for what, count in made.items() if count > 1]
        return problems

    async def _calendar(self, bench_id: str) -> list[dict[str, Any]]:
        around = {
            "from": _iso(self.day - timedelta(days=1)),
            "to": _iso(self.day + timedelta(days=2)),
        }
        return await self._pages(f"/v1/benches/{bench_id}/reservations", around)

    async def replay(self, creates: list[tuple[Create, str]]) -> list[str]:
        """Each acknowledged create, sent again with its key and body, replays its answer."""
        problems = []
        limit = asyncio.Semaphore(8)

        async def again(create: Create, made: str) -> str | None:
            async with limit:
                response, _ = await self.answer(
                    f"replay {create.op}", "POST", create.path, create.headers, create.body
                )
            id_field = "reservation_id" if create.op == "book" else "execution_id"
            seen = (
                response.status_code,
                response.headers.get("Idempotent-Replayed"),
                response.json().get(id_field),
            )
            if seen != (201, "true", made):
                return f"replay of {create.op} {create.key} ({made}): {seen} {response.text}"
            return None

        answers = await asyncio.gather(*(again(create, made) for create, made in creates))
        self.figures.replays += len(creates)
        problems += [answer for answer in answers if answer is not None]
        return problems


def _reservation_state(reservation: dict[str, Any]) -> dict[str, Any]:
    return {
        "start": _instant(reservation["start"]),
        "end": _instant(reservation["end"]),
        "cancelled": reservation["status"] == "cancelled",
    }


def _fold(history: list[dict[str, Any]]) -> dict[str, Any]:
    """A reservation's state after the given entries, from their diffs."""
    snapshot: dict[str, Any] = {}
    for entry in history:
        for name, change in entry["changes"].items():
            snapshot[name] = change["to"]
    return {
        "start": _instant(snapshot["start"]),
        "end": _instant(snapshot["end"]),
        "cancelled": snapshot["status"] == "cancelled",
    }


EXPECTED_ACTION = {
    "book": "created",
    "move": "updated",
    "cancel": "cancelled",
    "run": "created",
    "run-task": "created",
    "claim": "claimed",
    "complete": "completed",
}


def _lost(ack: Ack, current: dict[str, Any] | None, history: list[dict[str, Any]]) -> str | None:
    """Why the stored state does not show ``ack``, or None when it does."""
    if current is None:
        return "the entity is gone"
    if current["version"] < ack.version:
        return f"the entity is at version {current['version']}"
    entries = {entry["version"]: entry for entry in history}
    entry = entries.get(ack.version)
    if entry is None:
        return f"its history has no entry for version {ack.version}"
    if not ack.anyone:
        if entry["request_id"] not in (ack.request_id, *ack.also):
            return f"version {ack.version} was written by request {entry['request_id']}"
        if entry["action"] != EXPECTED_ACTION[ack.op]:
            return f"version {ack.version} is a {entry['action']!r} entry"
    if ack.entity == "reservation" and ack.body is not None:
        upto = [entries.get(version) for version in range(1, ack.version + 1)]
        if all(upto):  # a gap is reported on its own
            folded = _fold([entry for entry in upto if entry is not None])
            if folded != _reservation_state(ack.body):
                return f"at version {ack.version} the history says {folded}, the answer {ack.body}"
    if ack.op == "complete" and current["status"] != "succeeded":
        return f"the completed task is {current['status']}"
    return None


@pytest.fixture(params=STORES)
def store(
    request: pytest.FixtureRequest, tmp_path: Path, tokens_file: Path
) -> tuple[str, dict[str, str]]:
    """The store kind, and the ORCH_* settings of a store of its own of that kind."""
    kind: str = request.param
    moto = request.getfixturevalue("moto_endpoint") if kind == "dynamodb" else None
    # DynamoDB: tables of their own prefix, created by the first start (one process).
    return kind, settings_env(store_settings(kind, tmp_path, moto, tokens_file))


async def _setup(storm: Storm, server: ApiServer) -> None:
    storm.url = server.url
    for bench_id in ["rig-1", *BENCHES]:
        body = {"bench_id": bench_id, "name": bench_id, "type": "hil"}
        response, _ = await storm.send("setup", "POST", "/v1/benches", ADMIN, body)
        assert response is not None and response.status_code == 201, body
    # rig-1 is booked from now, so that its agent may claim the runs' tasks.
    now = datetime.now(UTC)
    key = f"book-{uuid.uuid4()}"
    body = {
        "bench_id": "rig-1",
        "start": _iso(now),
        "end": _iso(now + timedelta(hours=2)),
        "purpose": key,
    }
    create = Create("book", "/v1/reservations", {**CI, "Idempotency-Key": key}, body)
    response, request_id = await storm.send("setup", "POST", create.path, create.headers, body)
    assert response is not None and response.status_code == 201, response
    storm.rig1_reservation = response.json()["reservation_id"]
    storm.creates.append((create, storm.rig1_reservation))
    storm.acks.append(
        Ack("book", "reservation", storm.rig1_reservation, 1, request_id, response.json())
    )


async def test_acknowledged_writes_survive_sigkill_mid_storm(
    store: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    kind, env = store
    day = (datetime.now(UTC) + timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    seed = random.randrange(2**32)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    began = time.monotonic()
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
        storm = Storm(http, day, seed)
        figures = storm.figures
        server = await start_api(env, tmp_path / "api-0.log")
        try:
            await _setup(storm, server)
            for number, kill_after in enumerate(KILL_AFTER[kind], start=1):
                replayed_before = len(storm.creates)
                clock = time.monotonic()
                await storm.rage(server, kill_after)
                code = await server.exit_code()
                assert code == -9, f"the API exited {code}, not by SIGKILL"
                figures.seconds[f"storm {number}"] = time.monotonic() - clock

                clock = time.monotonic()
                again = {**env, "ORCH_CREATE_TABLES": "false"}  # (DynamoDB) they exist
                server = await start_api(again, tmp_path / f"api-{number}.log")
                storm.url = server.url
                figures.seconds[f"restart {number}"] = time.monotonic() - clock

                clock = time.monotonic()
                problems = await storm.resend_in_doubt()
                problems += await storm.verify()
                problems += await storm.replay(storm.creates[replayed_before:])
                await storm.recover_leases()
                figures.seconds[f"verify {number}"] = time.monotonic() - clock
                assert problems == [], (
                    f"{kind}, round {number}, seed {seed}: {len(problems)} problems:\n"
                    + "\n".join(problems[:40])
                )
        finally:
            server.kill()
            await server.exit_code()
    figures.seconds["total"] = time.monotonic() - began
    print(
        f"\ncrash storm ({kind}, seed {seed}): kills {len(KILL_AFTER[kind])},"
        f" acknowledged writes {figures.acknowledged}, missing {figures.missing},"
        f" replays after restarts {figures.replays}, mid-storm {figures.storm_replays};"
        f" creates in doubt {figures.in_doubt_creates}"
        f" (had committed {figures.in_doubt_had_committed}); requests cut {figures.cut},"
        f" refused {figures.refused}; entities {figures.entities},"
        f" history entries {figures.history_entries}"
    )
    print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.seconds.items()))
    print("  answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(figures.statuses.items())))
    assert figures.missing == 0
