"""Builders of the domain objects that store tests write: benches, reservations,
executions and tasks, their history entries and idempotency records, quotas and quota
checks, domain events, webhook subscriptions and deliveries.

Plain functions of their arguments (ids, hours after ``T0``, minutes after ``START``): the
same call builds the same object, except for ids that are random on purpose
(reservation ids) or sortable by creation time (execution ids). A few store helpers
(``add_bench``, ``book``) write them the way every store test does.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from app.benches.domain import Bench, new_bench
from app.events.domain import DomainEvent, EntityRef, new_event
from app.executions.domain import Execution, Task, TaskSpec, new_execution
from app.history.domain import HistoryEntry, diff
from app.identity import Actor, Principal, Role
from app.ids import sortable_uuid
from app.kit.idempotency import IdempotencyClaim
from app.quotas.domain import Limits, Quota, QuotaCheck, QuotaKind
from app.reservations.domain import Reservation, ReservationState
from app.store.base import IdempotencyRecord, Store
from app.webhooks.domain import Webhook, WebhookFormat, WebhookState
from tests.conftest import START

# --- benches -------------------------------------------------------------------------------


def make_bench(bench_id: str, *capabilities: str, type: str = "hil") -> Bench:
    return new_bench(
        bench_id=bench_id,
        name=f"Bench {bench_id}",
        type=type,
        capabilities=frozenset(capabilities),
        labels={"room": "b2", "rack": "4"},
        heartbeat_interval_s=30,
        now=START,
    )


def entry_for(bench: Bench, action: str = "created") -> HistoryEntry:
    """The history entry of a bench at its version; the changes hold every JSON kind."""
    return HistoryEntry(
        entity_type="bench",
        entity_id=bench.bench_id,
        version=bench.version,
        at=bench.updated_at,
        actor="root",
        request_id=f"req-{bench.version}",
        action=action,
        changes={"name": {"from": None, "to": bench.name}, "n": [1, 2.5, True, None]},
    )


def next_version(bench: Bench, **changes: Any) -> Bench:
    return replace(
        bench,
        version=bench.version + 1,
        updated_at=bench.updated_at + timedelta(seconds=1),
        **changes,
    )


async def add_bench(store: Store, bench_id: str = "rig-1", *capabilities: str) -> Bench:
    bench = make_bench(bench_id, *capabilities)
    await store.benches.create(bench, entry_for(bench))
    return bench


# --- reservations and idempotency keys -----------------------------------------------------

T0 = START + timedelta(days=1)  # 2026-11-26T08:00Z


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def booking(
    bench_id: str, start: float, end: float, user: str = "alice", rid: str | None = None
) -> Reservation:
    """A booked reservation of ``bench_id`` from ``at(start)`` to ``at(end)``."""
    return Reservation(
        reservation_id=rid or str(uuid.uuid4()),
        bench_id=bench_id,
        user_id=user,
        start=at(start),
        end=at(end),
        purpose="test",
        state=ReservationState.BOOKED,
        version=1,
        created_at=START,
        updated_at=START,
    )


def reservation_entry(reservation: Reservation, action: str = "created") -> HistoryEntry:
    return HistoryEntry(
        entity_type="reservation",
        entity_id=reservation.reservation_id,
        version=reservation.version,
        at=reservation.updated_at,
        actor=reservation.user_id,
        request_id="req",
        action=action,
        changes={"state": {"from": None, "to": reservation.state.value}},
    )


def changed(reservation: Reservation, **fields: Any) -> Reservation:
    return replace(
        reservation,
        version=reservation.version + 1,
        updated_at=reservation.updated_at + timedelta(seconds=1),
        **fields,
    )


def key_record(key: str, resource_id: str, fingerprint: str = "f1") -> IdempotencyRecord:
    return IdempotencyClaim(key=key, fingerprint=fingerprint).record(resource_id, START)


async def book(store: Store, reservation: Reservation) -> Reservation:
    await store.reservations.create(reservation, reservation_entry(reservation))
    return reservation


# --- quotas ----------------------------------------------------------------------------------


def make_quota(
    name: str = "alice",
    kind: QuotaKind = QuotaKind.USER,
    *,
    hours_7d: float | None = None,
    concurrent: int | None = None,
    window_hours: float | None = None,
    version: int = 1,
) -> Quota:
    return Quota(
        kind=kind,
        name=name,
        limits=Limits(
            max_booked_hours_7d=hours_7d,
            max_concurrent=concurrent,
            max_window_hours=window_hours,
        ),
        version=version,
        updated_at=START + timedelta(seconds=version),
    )


def quota_entry(quota: Quota, action: str = "created") -> HistoryEntry:
    return HistoryEntry(
        entity_type="quota",
        entity_id=f"{quota.kind.value}:{quota.name}",
        version=quota.version,
        at=quota.updated_at,
        actor="root",
        request_id="req",
        action=action,
        changes=diff({}, quota.audited()),
    )


def quota_check(reservation: Reservation, *quotas: Quota) -> QuotaCheck:
    """The check a service makes of ``reservation``'s (new) window against ``quotas``."""
    return QuotaCheck(
        reservation_id=reservation.reservation_id,
        window=reservation.window,
        quotas=quotas,
        user_id=reservation.user_id,
        team=reservation.team,
    )


# --- executions and tasks ------------------------------------------------------------------

CI_ACTOR = Actor(Principal("ci-bot", Role.CI), "req-ci")


def make_run(
    reservation_id: str = "res-1", bench_id: str = "rig-1", tasks: int = 3, minutes: float = 0
) -> tuple[Execution, list[Task]]:
    """An execution and its tasks, with odd values: an upper-case sha, no pipeline, JSON
    of every kind in the metadata."""
    now = START + timedelta(minutes=minutes)
    return new_execution(
        execution_id=sortable_uuid(now),
        reservation_id=reservation_id,
        bench_id=bench_id,
        created_by="ci-bot",
        commit_sha="9FCEB02",
        pipeline_url=None,
        metadata={"branch": "main", "n": [1, 2.5, None]},
        tasks=[TaskSpec(type="test", params={"suite": n}, timeout_s=300) for n in range(tasks)],
        now=now,
    )


def make_ci_run(
    reservation_id: str = "res-1", bench_id: str = "rig-1", tasks: int = 3, minutes: float = 0
) -> tuple[Execution, list[Task]]:
    """An execution as a CI pipeline sends it, full-length values: for item layouts and sizes."""
    now = START + timedelta(minutes=minutes)
    return new_execution(
        execution_id=sortable_uuid(now),
        reservation_id=reservation_id,
        bench_id=bench_id,
        created_by="ci-bot",
        commit_sha="9fceb02d0ae598e95dc970b74767f19372d61af8",
        pipeline_url="https://ci.example.com/pipelines/81234",
        metadata={"branch": "main", "pipeline": 81234, "trigger": "merge"},
        tasks=[
            TaskSpec(
                type="hil-test",
                params={"suite": f"smoke-{n}", "firmware": "s3://fw/build-81234.bin"},
                timeout_s=600,
            )
            for n in range(tasks)
        ],
        now=now,
    )


def run_entry(item: Execution | Task, action: str) -> HistoryEntry:
    """A bare history entry (no changes) of an execution or a task at its version."""
    entity_type, entity_id = (
        ("execution", item.execution_id) if isinstance(item, Execution) else ("task", item.task_id)
    )
    return HistoryEntry(
        entity_type=entity_type,
        entity_id=entity_id,
        version=item.version,
        at=item.updated_at,
        actor="ci-bot",
        request_id="req",
        action=action,
        changes={},
    )


def creation_entries(execution: Execution, tasks: list[Task]) -> list[HistoryEntry]:
    """The entries the service writes with a new execution: one per item, all fields new."""
    entries = [
        HistoryEntry(
            entity_type="execution",
            entity_id=execution.execution_id,
            version=1,
            at=execution.created_at,
            actor=CI_ACTOR.subject,
            request_id=CI_ACTOR.request_id,
            action="created",
            changes=diff({}, execution.snapshot()),
        )
    ]
    for task in tasks:
        snapshot = {"status": task.status.value, "attempts": 0}
        entries.append(
            HistoryEntry(
                entity_type="task",
                entity_id=task.task_id,
                version=1,
                at=task.created_at,
                actor=CI_ACTOR.subject,
                request_id=CI_ACTOR.request_id,
                action="created",
                changes=diff({}, snapshot),
            )
        )
    return entries


# --- events, subscriptions and deliveries ---------------------------------------------------


def make_event(
    type: str = "reservation.created",
    *,
    seconds: float = 0,
    entity_type: str = "reservation",
    entity_id: str = "res-1",
    version: int = 1,
    bench_id: str | None = "rig-1",
    user_id: str | None = "alice",
) -> DomainEvent:
    """An event ``seconds`` after START, its data of every JSON kind."""
    return new_event(
        type,
        at=START + timedelta(seconds=seconds),
        actor=user_id or "root",
        entity=EntityRef(entity_type, entity_id, version),
        bench_id=bench_id,
        user_id=user_id,
        data={"id": entity_id, "version": version, "n": [1, 2.5, True, None], "m": {"k": "v"}},
    )


def with_event(entry: HistoryEntry, type: str) -> HistoryEntry:
    """``entry`` raising the event ``type`` about its entity at its version and time."""
    event = new_event(
        type,
        at=entry.at,
        actor=entry.actor,
        entity=EntityRef(entry.entity_type, entry.entity_id, entry.version),
        bench_id=entry.entity_id if entry.entity_type == "bench" else None,
        user_id=entry.actor,
        data={"action": entry.action},
    )
    return replace(entry, event=event)


def make_webhook(webhook_id: str = "wh-1", owner: str = "alice", **fields: Any) -> Webhook:
    values: dict[str, Any] = {
        "webhook_id": webhook_id,
        "owner": owner,
        "url": f"https://hooks.example.com/{webhook_id}",
        "events": ("reservation.*", "bench.online"),
        "bench_id": None,
        "user_id": owner,
        "format": WebhookFormat.STANDARD,
        "secret": f"whsec_{webhook_id}",
        "state": WebhookState.ACTIVE,
        "version": 1,
        "created_at": START,
        "updated_at": START,
        **fields,
    }
    return Webhook(**values)


def webhook_entry(webhook: Webhook, action: str = "created") -> HistoryEntry:
    return HistoryEntry(
        entity_type="webhook",
        entity_id=webhook.webhook_id,
        version=webhook.version,
        at=webhook.updated_at,
        actor=webhook.owner,
        request_id="req",
        action=action,
        changes={"url": {"from": None, "to": webhook.url}},
    )


def next_webhook(webhook: Webhook, **changes: Any) -> Webhook:
    return replace(
        webhook,
        version=webhook.version + 1,
        updated_at=webhook.updated_at + timedelta(seconds=1),
        **changes,
    )
