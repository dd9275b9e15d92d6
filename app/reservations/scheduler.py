"""The scheduler: bookings that advance when an earlier window frees, and the holds that
end themselves (no-shows, idle holds). Every move is the store's conditional update, so
two schedulers that see one freed window cannot both take it: the loser moves on to its
next candidate. Runs after a change that frees a window, and in every housekeeping pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from app.benches.domain import AdminState, Bench
from app.clock import Clock
from app.errors import Conflict
from app.executions.domain import Task, TaskStatus
from app.history.domain import HistoryEntry
from app.identity import Actor, Principal, Role
from app.quotas.domain import QuotaExceeded
from app.quotas.service import QuotaService
from app.reservations.domain import (
    LONGEST_WINDOW,
    Reservation,
    Window,
    release,
)
from app.reservations.scheduling import (
    Placement,
    advance_order,
    advanced,
    better,
    earliest_placement,
    idle_step,
    no_show,
    used_recently,
    waits,
)
from app.reservations.trail import AUDIT, RELEASE_REASONS
from app.store.base import (
    BenchNotBookable,
    BenchQuery,
    ExecutionQuery,
    ItemNotFound,
    ReservationQuery,
    Store,
    VersionMismatch,
    WindowTaken,
)

logger = logging.getLogger("app.reservations.scheduler")

SCHEDULER = Principal("scheduler", Role.ADMIN)
BATCH = 500
# A pass repeats while moves free more windows (a chain), at most this often.
MAX_ROUNDS = 5
# Candidates benches for one capability booking.
MAX_BENCHES = 200
# No-shows are looked for among reservations whose grace ended this recently.
NO_SHOW_LOOKBACK = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class HoldRules:
    no_show_grace: timedelta
    grace_by_type: Mapping[str, timedelta]
    idle_after: timedelta
    # A lease heartbeat happened this long before the lease's end (the lease it set).
    task_lease: timedelta = timedelta(seconds=60)

    def grace_for(self, bench_type: str | None) -> timedelta:
        if bench_type is not None and bench_type in self.grace_by_type:
            return self.grace_by_type[bench_type]
        return self.no_show_grace


class Scheduler:
    def __init__(self, store: Store, clock: Clock, quotas: QuotaService, rules: HoldRules) -> None:
        self._store = store
        self._clock = clock
        self._quotas = quotas
        self._rules = rules

    # --- where a booking goes ------------------------------------------------------------

    async def usable_benches(self, bench_id: str, capabilities: frozenset[str]) -> list[str]:
        """The benches a booking may be on: its own, or any active one with its capabilities."""
        if not capabilities:
            return [bench_id]
        query = BenchQuery(capabilities=capabilities, admin_state=AdminState.ACTIVE.value)
        page = await self._store.benches.find(query, MAX_BENCHES, None)
        return [bench.bench_id for bench in page.items]

    async def busy(
        self, bench_ids: Iterable[str], window: Window, ignore: str = ""
    ) -> dict[str, list[Window]]:
        found: dict[str, list[Window]] = {}
        for bench_id in bench_ids:
            query = ReservationQuery(
                bench_id=bench_id,
                ends_after=window.start,
                starts_before=window.end,
                holding_only=True,
            )
            windows: list[Window] = []
            after: str | None = None
            while True:
                page = await self._store.reservations.find(query, 500, after)
                windows += [r.window for r in page.items if r.reservation_id != ignore]
                if page.next_after is None:
                    break
                after = page.next_after
            found[bench_id] = windows
        return found

    async def earliest(
        self,
        bench_ids: list[str],
        duration: timedelta,
        earliest: datetime,
        latest: datetime,
        ignore: str = "",
    ) -> Placement | None:
        busy = await self.busy(bench_ids, Window(earliest, latest + duration), ignore)
        return earliest_placement(duration, busy, earliest, latest)

    # --- advancing -----------------------------------------------------------------------

    async def advance(self, freed: set[str] | None = None) -> int:
        """Move advancing bookings into earlier windows, best first; ``freed`` limits the
        pass to bookings that may use those benches. How many moved."""
        moved_in_all = 0
        for _ in range(MAX_ROUNDS):
            moved = await self._advance_round(freed)
            moved_in_all += moved
            if not moved:
                break
            freed = None  # a move freed windows elsewhere too
        return moved_in_all

    async def _advance_round(self, freed: set[str] | None) -> int:
        now = self._clock.now()
        waiting = [
            r for r in await self._store.reservations.find_advancing(now, BATCH) if waits(r, now)
        ]
        if not waiting:
            return 0
        usage = {user: await self._used(user, now) for user in {r.user_id for r in waiting}}
        moved = 0
        benches_of: dict[tuple[str, frozenset[str]], list[str]] = {}
        for reservation in sorted(waiting, key=lambda r: advance_order(r, usage)):
            key = (reservation.bench_id, reservation.capabilities)
            if key not in benches_of:
                benches_of[key] = await self.usable_benches(*key)
            benches = benches_of[key]
            if freed is not None and not freed & set(benches):
                continue
            start = max(now, reservation.not_before or now)
            if start >= reservation.start:
                continue
            duration = reservation.end - reservation.start
            placement = await self.earliest(
                benches, duration, start, reservation.start, ignore=reservation.reservation_id
            )
            if better(reservation, placement):
                assert placement is not None
                if await self._move(reservation, advanced(reservation, placement, now)):
                    moved += 1
        return moved

    async def _move(self, before: Reservation, after: Reservation) -> bool:
        actor = Actor(SCHEDULER, request_id=f"scheduler-{after.reservation_id}")
        quota = await self._quotas.check_for(after, None)
        try:
            await self._store.reservations.update(
                before, after, AUDIT.entry(after, actor, "advanced", before), quota
            )
        except (WindowTaken, VersionMismatch, ItemNotFound, BenchNotBookable, QuotaExceeded):
            return False  # another scheduler (or a booking) got there first; next time
        logger.info(
            "advanced %s from %s on %s to %s on %s",
            after.reservation_id,
            before.start.isoformat(),
            before.bench_id,
            after.start.isoformat(),
            after.bench_id,
        )
        return True

    async def _used(self, user_id: str, now: datetime) -> timedelta:
        query = ReservationQuery(
            user_id=user_id,
            ends_after=now - timedelta(days=7),
            starts_before=now,
            holding_only=True,
        )
        page = await self._store.reservations.find(query, 500, None)
        return used_recently(page.items, now)

    # --- holds that end themselves -------------------------------------------------------

    async def release_no_shows(self) -> int:
        rules = self._rules
        longest = max([rules.no_show_grace, *rules.grace_by_type.values()])
        if longest <= timedelta(0):
            return 0
        now = self._clock.now()
        released = 0
        types: dict[str, str | None] = {}
        started = await self._store.reservations.find_started(
            now - longest - NO_SHOW_LOOKBACK, now, BATCH
        )
        for reservation in started:
            if reservation.checked_in_at is not None or not reservation.is_booking:
                continue
            if reservation.bench_id not in types:
                types[reservation.bench_id] = await self._bench_type(reservation.bench_id)
            grace = rules.grace_for(types[reservation.bench_id])
            if not no_show(reservation, now, grace, checked_in=False):
                continue
            if await self._has_runs(reservation):
                continue  # a run was created on it: somebody came
            if await self._release(reservation, "released_no_show"):
                released += 1
        return released

    async def release_idle(self) -> int:
        idle_after = self._rules.idle_after
        if idle_after <= timedelta(0):
            return 0
        now = self._clock.now()
        done = 0
        for reservation in await self._store.reservations.find_started(
            now - LONGEST_WINDOW, now, BATCH
        ):
            if reservation.end <= now or not reservation.is_booking:
                continue
            last = await self._last_activity(reservation)
            step = idle_step(reservation, now, idle_after, last)
            if step == "warn":
                warned = replace(
                    reservation,
                    idle_warned_at=now,
                    version=reservation.version + 1,
                    updated_at=now,
                )
                if await self._write(reservation, warned, "idle_warned"):
                    done += 1
            elif step == "release" and await self._release(reservation, "released_idle"):
                done += 1
        return done

    async def _release(self, reservation: Reservation, action: str) -> bool:
        try:
            after = release(reservation, self._clock.now())
        except Conflict:
            return False
        if not await self._write(reservation, after, action):
            return False
        await self.advance({reservation.bench_id})
        return True

    async def _write(self, before: Reservation, after: Reservation, action: str) -> bool:
        actor = Actor(
            Principal("housekeeping", Role.ADMIN), request_id=f"holds-{after.reservation_id}"
        )
        entry = AUDIT.entry(after, actor, action, before)
        entry = _with_reason(entry, RELEASE_REASONS.get(action))
        try:
            await self._store.reservations.update(before, after, entry)
        except (VersionMismatch, ItemNotFound, WindowTaken):
            return False
        return True

    async def _bench_type(self, bench_id: str) -> str | None:
        bench: Bench | None = await self._store.benches.get(bench_id)
        return None if bench is None else bench.type

    async def _has_runs(self, reservation: Reservation) -> bool:
        page = await self._store.executions.find(
            ExecutionQuery(reservation_id=reservation.reservation_id), 1, None
        )
        return bool(page.items)

    async def _last_activity(self, reservation: Reservation) -> datetime:
        """The latest of: the start, a check-in, a change of a run on it or of its tasks
        (a claim, a lease heartbeat, a result)."""
        moments = [reservation.start]
        if reservation.checked_in_at is not None:
            moments.append(reservation.checked_in_at)
        page = await self._store.executions.find(
            ExecutionQuery(reservation_id=reservation.reservation_id), 100, None
        )
        for execution in page.items:
            moments.append(execution.updated_at)
            if execution.status.is_terminal:
                continue
            for task in await self._store.executions.get_tasks(execution.task_ids):
                moments += _task_activity(task, self._rules.task_lease)
        return max(moments)


def _task_activity(task: Task, lease: timedelta) -> list[datetime]:
    """When the bench's agent last did something with the task: its claim, its last lease
    heartbeat, its report. A lease that ran out (housekeeping's doing) is not activity."""
    moments = [] if task.attempt_started_at is None else [task.attempt_started_at]
    if task.status is TaskStatus.LEASED and task.lease_expires_at is not None:
        moments.append(task.lease_expires_at - lease)
    elif task.status.is_terminal:
        moments.append(task.updated_at)
    return moments


def _with_reason(entry: HistoryEntry, reason: str | None) -> HistoryEntry:
    if reason is None or entry.event is None:
        return entry
    event = replace(entry.event, data={**entry.event.data, "reason": reason})
    return replace(entry, event=event)
