"""What each dashboard page shows, gathered from the same services the API routers call.

No store access of its own: every read is a service's, so the pages see what the API
answers. The store has no range query over every bench's calendar (a reservation query
names a bench, a user or a team: each is an index), so a page of benches costs one
calendar read per bench, made a few at a time; runs are found through the reservations
they ran on (an execution query names a reservation, a bench or a status, and a bench's
or a status's runs are ordered oldest first, for ever).

Bench health (the last health report, a quarantine, maintenance windows, bookings at
risk) is read from the domain objects as they are; a bench's record (uptime, verdicts,
the infrastructure-failure rate beside its peers') is ``HealthService.stats``, kept a
little (``Cache``) since a bench page refreshes on every event of its bench.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, TypeVar

from app.benches.domain import AdminState, Bench, BenchHealth, HealthStatus, MaintenanceWindow
from app.benches.service import BenchService
from app.executions.domain import Execution, ExecutionStatus, Task, TaskStatus
from app.executions.service import ExecutionService
from app.reservations.domain import Reservation, ReservationKind, ReservationStatus, Window
from app.reservations.service import ReservationService
from app.store.base import Page

T = TypeVar("T")

# Reads made at once for a page (calendars of a page of benches, runs of reservations).
CONCURRENT_READS = 8
# The timeline shows this many benches per page.
TIMELINE_PAGE = 200
# A list shows at most this many items, a bench lookup considers at most this many.
LIST_CAP = 500
MAX_BENCHES = 2000
# Runs that ended errored or timed out failed for the bench's sake, not the code's.
INFRASTRUCTURE = frozenset({ExecutionStatus.ERRORED, ExecutionStatus.TIMED_OUT})
VERDICTS = frozenset(
    {
        ExecutionStatus.PASSED,
        ExecutionStatus.FAILED,
        ExecutionStatus.ERRORED,
        ExecutionStatus.TIMED_OUT,
    }
)
DAY = timedelta(days=1)


async def _all_pages(
    fetch: Callable[[int, str | None], Awaitable[Page[T]]], cap: int, size: int = 500
) -> list[T]:
    found: list[T] = []
    after: str | None = None
    while len(found) < cap:
        page = await fetch(min(size, cap - len(found)), after)
        found += page.items
        if page.next_after is None:
            break
        after = page.next_after
    return found


async def _bounded(calls: Iterable[Awaitable[T]]) -> list[T]:
    gate = asyncio.Semaphore(CONCURRENT_READS)

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(call) for call in calls)))


# --- what is read the same way everywhere -------------------------------------------------


def admin_state(bench: Bench, now: datetime) -> str:
    """The admin state as users read it: maintenance while a window is under way."""
    return bench.admin_state_at(now).value


def failing(bench: Bench) -> bool:
    return bench.health is not None and bench.health.status is HealthStatus.FAILING


def consecutive(health: BenchHealth) -> int:
    """How many reports in a row said what the last one says."""
    return health.failures if health.status is HealthStatus.FAILING else health.passes


def current_maintenance(bench: Bench, now: datetime) -> MaintenanceWindow | None:
    """The maintenance window under way, else the next one listed on the bench."""
    ahead = sorted((w for w in bench.maintenance if w.end > now), key=lambda w: w.start)
    return ahead[0] if ahead else None


def is_maintenance(reservation: Reservation) -> bool:
    return reservation.kind is ReservationKind.MAINTENANCE


async def benches_page(
    benches: BenchService,
    *,
    capabilities: frozenset[str] = frozenset(),
    type: str | None = None,
    limit: int,
    after: str | None = None,
    include_retired: bool = False,
) -> Page[Bench]:
    page = await benches.find(capabilities=capabilities, type=type, limit=limit, after=after)
    if include_retired:
        return page
    kept = [bench for bench in page.items if bench.admin_state is not AdminState.RETIRED]
    return Page(kept, page.next_after)


async def calendars(
    reservations: ReservationService, bench_ids: Sequence[str], window: Window
) -> dict[str, list[Reservation]]:
    """The reservations holding each bench in ``window``, by start: one read per bench."""

    async def one(bench_id: str) -> list[Reservation]:
        found = await _all_pages(
            lambda size, after: reservations.find(
                user_id=None,
                bench_id=bench_id,
                ends_after=window.start,
                starts_before=window.end,
                limit=size,
                after=after,
            ),
            LIST_CAP,
        )
        return [reservation for reservation in found if reservation.holds_bench]

    held = await _bounded(one(bench_id) for bench_id in bench_ids)
    return dict(zip(bench_ids, held, strict=True))


async def runs_of(
    executions: ExecutionService, reservations: Iterable[Reservation]
) -> list[Execution]:
    """Every run on these reservations: one read per reservation."""

    async def one(reservation: Reservation) -> list[Execution]:
        page = await executions.find(
            reservation_id=reservation.reservation_id, limit=LIST_CAP, after=None
        )
        return page.items

    found = await _bounded(one(reservation) for reservation in reservations)
    return [execution for runs in found for execution in runs]


async def open_runs(executions: ExecutionService) -> list[Execution]:
    """Queued and running runs (each status is an index; both are short lists)."""
    found: list[Execution] = []
    for status in (ExecutionStatus.RUNNING, ExecutionStatus.QUEUED):

        def fetch(size: int, after: str | None, status: ExecutionStatus = status) -> Any:
            return executions.find(status=status, limit=size, after=after)

        found += await _all_pages(fetch, LIST_CAP)
    return found


def progress(tasks: Sequence[Task]) -> dict[str, Any]:
    done = sum(1 for task in tasks if task.status.is_terminal)
    current = next((task for task in tasks if task.status is TaskStatus.LEASED), None)
    return {
        "done": done,
        "total": len(tasks),
        "current": None if current is None else current.type,
        "percent": 0 if not tasks else round(100 * done / len(tasks)),
    }


@dataclass
class RunStats:
    finished: int = 0
    passed: int = 0
    failed: int = 0
    infrastructure: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def add(self, execution: Execution) -> None:
        if execution.status not in VERDICTS:
            return
        self.finished += 1
        self.by_status[execution.status.value] = self.by_status.get(execution.status.value, 0) + 1
        if execution.status is ExecutionStatus.PASSED:
            self.passed += 1
        elif execution.status in INFRASTRUCTURE:
            self.infrastructure += 1
        else:
            self.failed += 1


async def recent_runs(
    reservations: ReservationService,
    executions: ExecutionService,
    bench_ids: Sequence[str],
    since: datetime,
    now: datetime,
) -> list[Execution]:
    """Runs on the benches' reservations that overlap [since, now], newest first."""
    held = await calendars(reservations, bench_ids, Window(since, now))
    started = [r for found in held.values() for r in found if r.start <= now]
    runs = await runs_of(executions, started)
    return sorted(runs, key=lambda execution: execution.created_at, reverse=True)


class Cache:
    """Figures that cost many reads, kept while their key (what they depend on, read on
    every render anyway) stays the same, and ``ttl_s`` at most.

    The overview's 24 h figures cost a read per reservation of the last day: they change
    when a run reaches a verdict, which is when it leaves the open runs, so their key is
    the open runs. A bench's record (``HealthService.stats``: its liveness log and 30 days
    of runs, and its peers') is keyed by the bench's liveness transitions and its recent
    runs; its peers' figures are as fresh as ``ttl_s``. Every open page refreshes on its
    events: this keeps that to one computation per change."""

    def __init__(self, ttl_s: float = 60.0, size: int = 1) -> None:
        self._ttl_s = ttl_s
        self._size = size
        self._kept: dict[str, tuple[float, Any]] = {}

    async def get(self, key: str, make: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        found = self._kept.get(key)
        if found is not None and now - found[0] < self._ttl_s:
            kept: T = found[1]
            return kept
        made = await make()
        self._kept.pop(key, None)
        self._kept[key] = (now, made)
        while len(self._kept) > self._size:
            del self._kept[next(iter(self._kept))]
        return made


# --- the overview --------------------------------------------------------------------------


@dataclass
class Card:
    bench: Bench
    liveness: str
    admin_state: str
    holder: Reservation | None
    next_booking: Reservation | None
    running: Execution | None
    progress: dict[str, Any] | None
    # The maintenance window under way, else the next one.
    maintenance: MaintenanceWindow | None = None
    queued: int = 0

    @property
    def failing(self) -> bool:
        return failing(self.bench)


def card_of(
    bench: Bench,
    held: Sequence[Reservation],
    running: Execution | None,
    tasks: Sequence[Task],
    queued: int,
    now: datetime,
) -> Card:
    bookings = [r for r in held if not is_maintenance(r)]
    holder = next((r for r in bookings if r.status(now) is ReservationStatus.ACTIVE), None)
    upcoming = [r for r in bookings if r.start > now]
    next_booking = min(upcoming, key=lambda r: r.start) if upcoming else None
    return Card(
        bench=bench,
        liveness=bench.liveness(now).value,
        admin_state=admin_state(bench, now),
        holder=holder,
        next_booking=next_booking,
        running=running,
        progress=None if running is None else progress(tasks),
        maintenance=current_maintenance(bench, now),
        queued=queued,
    )


def cards(
    benches: Sequence[Bench],
    held: dict[str, list[Reservation]],
    open_: Sequence[Execution],
    tasks: dict[str, list[Task]],
    now: datetime,
) -> list[Card]:
    """A card per bench, from its calendar and the open runs (with the running ones'
    tasks, as ``running_tasks`` reads them)."""
    running: dict[str, Execution] = {}
    queued: dict[str, int] = {}
    for execution in open_:
        if execution.status is ExecutionStatus.RUNNING:
            running.setdefault(execution.bench_id, execution)
        else:
            queued[execution.bench_id] = queued.get(execution.bench_id, 0) + 1
    made = []
    for bench in benches:
        run = running.get(bench.bench_id)
        made.append(
            card_of(
                bench,
                held.get(bench.bench_id, []),
                run,
                [] if run is None else tasks.get(run.execution_id, []),
                queued.get(bench.bench_id, 0),
                now,
            )
        )
    return made


async def running_tasks(
    executions: ExecutionService, open_: Sequence[Execution], bench_ids: Iterable[str]
) -> dict[str, list[Task]]:
    """The tasks of the running runs on these benches (one read each: a short list)."""
    wanted = set(bench_ids)
    running = [e for e in open_ if e.status is ExecutionStatus.RUNNING and e.bench_id in wanted]
    found = await _bounded(executions.get(e.execution_id) for e in running)
    return {execution.execution_id: tasks for execution, tasks in found}


@dataclass
class Summary:
    benches: int
    online: int
    offline: int
    unmonitored: int
    maintenance: int
    quarantined: int
    failing: int
    active_reservations: int
    queued: int
    running: int
    longest_wait_s: float | None
    stats: RunStats
    utilisation: str


def summary_of(
    card_list: Sequence[Card], open_: Sequence[Execution], stats: RunStats, now: datetime
) -> Summary:
    queued = [e for e in open_ if e.status is ExecutionStatus.QUEUED]
    bookable = [c for c in card_list if c.admin_state == AdminState.ACTIVE.value]
    held = sum(1 for c in card_list if c.holder is not None)
    return Summary(
        benches=len(card_list),
        online=sum(1 for c in card_list if c.liveness == "online"),
        offline=sum(1 for c in card_list if c.liveness == "offline"),
        unmonitored=sum(1 for c in card_list if c.liveness == "unmonitored"),
        maintenance=sum(1 for c in card_list if c.admin_state == "maintenance"),
        quarantined=sum(1 for c in card_list if c.admin_state == "quarantined"),
        failing=sum(1 for c in card_list if c.failing),
        active_reservations=held,
        queued=len(queued),
        running=sum(1 for e in open_ if e.status is ExecutionStatus.RUNNING),
        longest_wait_s=None
        if not queued
        else (now - min(e.created_at for e in queued)).total_seconds(),
        stats=stats,
        utilisation="\u2013" if not bookable else f"{100 * held / len(bookable):.0f} %",
    )


async def day_stats(
    executions: ExecutionService, held: dict[str, list[Reservation]], now: datetime
) -> RunStats:
    """Runs that reached a verdict in the last 24 h, found through the reservations
    (of ``held``) under way in that time."""
    since = now - DAY
    under_way = [r for found in held.values() for r in found if r.start <= now and r.end >= since]
    stats = RunStats()
    for execution in await runs_of(executions, under_way):
        if execution.finished_at is not None and execution.finished_at >= since:
            stats.add(execution)
    return stats


# --- the timeline --------------------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    at: datetime
    left: float
    major: bool
    label: str


@dataclass(frozen=True)
class Bar:
    reservation: Reservation
    left: float
    width: float
    clipped_start: bool
    clipped_end: bool
    status: str
    mine: bool
    maintenance: bool


@dataclass
class Row:
    bench: Bench
    admin_state: str
    liveness: str
    bars: list[Bar]


@dataclass(frozen=True)
class Range:
    view: str  # day | week
    start: datetime
    end: datetime
    zone: tzinfo

    @property
    def window(self) -> Window:
        return Window(self.start, self.end)

    def left(self, moment: datetime) -> float:
        span = (self.end - self.start).total_seconds()
        offset = (moment - self.start).total_seconds()
        return max(0.0, min(100.0, 100 * offset / span))

    def shifted(self, steps: int) -> datetime:
        if self.view == "day":
            return self.start + steps * DAY
        return local_midnight(self.start + timedelta(days=7 * steps, hours=12), self.zone)


def local_midnight(moment: datetime, zone: tzinfo) -> datetime:
    local = moment.astimezone(zone)
    midnight = datetime(local.year, local.month, local.day, tzinfo=zone)
    return midnight.astimezone(UTC)


def time_range(view: str, start: datetime | None, now: datetime, zone: tzinfo) -> Range:
    """A day: 24 hours from ``start`` (on the hour), by default from two hours ago, so
    that what is under way and what comes next are both in sight. A week: seven local days
    from ``start``'s (or today's) midnight."""
    if view != "week":
        first = (start or now - timedelta(hours=2)).astimezone(zone)
        first = first.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        return Range("day", first, first + DAY, zone)
    first = local_midnight(start or now, zone)
    # The seventh local midnight on, however long the days are where daylight saving moves.
    last = local_midnight(first + timedelta(days=7, hours=12), zone)
    return Range("week", first, last, zone)


def ticks(span: Range) -> list[Tick]:
    found: list[Tick] = []
    step = timedelta(hours=1) if span.view == "day" else timedelta(hours=6)
    moment = span.start
    while moment < span.end:
        local = moment.astimezone(span.zone)
        if span.view == "week":
            major, label = local.hour == 0, local.strftime("%a %d %b")
        else:  # every other hour has a label; midnight names the day
            major = local.hour == 0
            label = local.strftime("%a %d") if major else ("" if local.hour % 2 else f"{local:%H}")
        found.append(Tick(moment, span.left(moment), major, label))
        moment = moment + step
    return found


def bars(span: Range, held: Sequence[Reservation], me: str, now: datetime) -> list[Bar]:
    found: list[Bar] = []
    for reservation in held:
        left = span.left(reservation.start)
        right = span.left(reservation.end)
        maintenance = is_maintenance(reservation)
        found.append(
            Bar(
                reservation=reservation,
                left=left,
                width=max(right - left, 0.25),
                clipped_start=reservation.start < span.start,
                clipped_end=reservation.end > span.end,
                status=reservation.status(now).value,
                mine=reservation.user_id == me and not maintenance,
                maintenance=maintenance,
            )
        )
    return found


async def timeline_rows(
    benches: Sequence[Bench],
    reservations: ReservationService,
    span: Range,
    me: str,
    now: datetime,
) -> list[Row]:
    held = await calendars(reservations, [bench.bench_id for bench in benches], span.window)
    return [
        Row(
            bench=bench,
            admin_state=admin_state(bench, now),
            liveness=bench.liveness(now).value,
            bars=bars(span, held[bench.bench_id], me, now),
        )
        for bench in benches
    ]


# --- a bench's record ----------------------------------------------------------------------

RECORD_PERIODS = (("7d", "7 days"), ("30d", "30 days"))
RECORD_VERDICTS = ("passed", "failed", "errored", "timed_out", "cancelled")


@dataclass(frozen=True)
class RecordRow:
    label: str
    # For each period: the bench's figure, then its peers'.
    cells: tuple[str, ...]


def _share(value: float | None, none: str = "\u2013") -> str:
    return none if value is None else f"{100 * value:.1f} %"


def record_rows(stats: dict[str, Any]) -> list[RecordRow]:
    """``HealthService.stats`` as a table: uptime, finished runs by verdict and the
    infrastructure-failure rate, for each period, the bench's beside its peers'."""
    columns: list[dict[str, Any]] = []
    for period, _ in RECORD_PERIODS:
        columns += [stats["periods"][period], stats["peers"]["periods"][period]]
    rows = [
        RecordRow("Uptime", tuple(_share(c["uptime"], "not monitored") for c in columns)),
        RecordRow("Runs finished", tuple(str(c["finished"]) for c in columns)),
    ]
    rows += [
        RecordRow(
            f"\u2003{verdict.replace('_', ' ')}",
            tuple(str(c["executions"].get(verdict, 0)) for c in columns),
        )
        for verdict in RECORD_VERDICTS
    ]
    rows.append(
        RecordRow(
            "Infrastructure-failure rate",
            tuple(_share(c["infrastructure_failure_rate"]) for c in columns),
        )
    )
    return rows


def record_key(bench: Bench, runs: Iterable[Execution]) -> str:
    """What a bench's record depends on that the bench page reads anyway: its liveness
    transitions, its run of infrastructure failures and its recent runs' states."""
    states = " ".join(sorted(f"{e.execution_id}:{e.status.value}" for e in runs))
    return f"{bench.bench_id} {bench.liveness_changes} {bench.infra_failures} {states}"
