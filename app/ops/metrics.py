"""Prometheus metrics: one registry per app, so several apps (tests) never share counters.

Request metrics are labelled with the route template, not the raw path, to keep the
number of series bounded. Store cost comes from the DynamoDB adapter's meter; gauges
that need the store (liveness, queue depth) are computed when /metrics is scraped.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from app.benches.domain import Liveness
from app.clock import Clock
from app.executions.domain import ExecutionStatus, TaskStatus
from app.store.base import BenchQuery, ExecutionQuery, Store

# Scrape-time gauges look at no more than this many items of a kind.
SCRAPE_LIMIT = 2000


class _StoreCostCollector(Collector):
    """Reads the DynamoDB adapter's meter (calls and consumed capacity) at scrape time."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def collect(self) -> Iterator[CounterMetricFamily]:
        calls: dict[str, int] = getattr(self._store, "calls", {})
        capacity: dict[tuple[str, str], float] = getattr(self._store, "capacity", {})
        operations = CounterMetricFamily(
            "orchestrator_store_operations", "Store requests by operation", labels=["operation"]
        )
        for operation, count in sorted(calls.items()):
            operations.add_metric([operation], count)
        yield operations
        units = CounterMetricFamily(
            "orchestrator_store_capacity_units",
            "Consumed capacity units reported by DynamoDB, by table and operation",
            labels=["table", "operation"],
        )
        for (table, operation), total in sorted(capacity.items()):
            units.add_metric([table, operation], total)
        yield units


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "orchestrator_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "orchestrator_http_request_duration_seconds",
            "HTTP request latency by route and method",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.conflicts = Counter(
            "orchestrator_conflicts", "409 answers by route", ["route"], registry=self.registry
        )
        self.precondition_failures = Counter(
            "orchestrator_precondition_failures",
            "412 answers by route",
            ["route"],
            registry=self.registry,
        )
        self.housekeeping = Counter(
            "orchestrator_housekeeping_actions",
            "What housekeeping did (lease expiries, time-outs, ...)",
            ["action"],
            registry=self.registry,
        )
        self.benches = Gauge(
            "orchestrator_benches", "Benches by liveness", ["status"], registry=self.registry
        )
        self.queue_depth = Gauge(
            "orchestrator_task_queue_depth",
            "Tasks by status among queued and running executions",
            ["status"],
            registry=self.registry,
        )

    def attach_store(self, store: Store) -> None:
        self.registry.register(_StoreCostCollector(store))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)
        if status == 409:
            self.conflicts.labels(route).inc()
        elif status == 412:
            self.precondition_failures.labels(route).inc()

    def count_housekeeping(self, done: dict[str, int]) -> None:
        for action, count in done.items():
            if count:
                self.housekeeping.labels(action).inc(count)

    async def refresh_gauges(self, store: Store, clock: Clock) -> None:
        now = clock.now()
        live = {status: 0 for status in Liveness}
        after: str | None = None
        seen = 0
        while seen < SCRAPE_LIMIT:
            page = await store.benches.find(BenchQuery(admin_state="active"), 500, after)
            for bench in page.items:
                live[bench.liveness(now)] += 1
            seen += len(page.items)
            if page.next_after is None:
                break
            after = page.next_after
        for liveness, count in live.items():
            self.benches.labels(liveness.value).set(count)

        depth = {status: 0 for status in (TaskStatus.PENDING, TaskStatus.LEASED)}
        for execution_status in (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING):
            page_after: str | None = None
            while True:
                runs = await store.executions.find(
                    ExecutionQuery(status=execution_status), 100, page_after
                )
                task_ids = [task_id for run in runs.items for task_id in run.task_ids]
                for task in await store.executions.get_tasks(task_ids):
                    if task.status in depth:
                        depth[task.status] += 1
                if runs.next_after is None or sum(depth.values()) >= SCRAPE_LIMIT:
                    break
                page_after = runs.next_after
        for task_status, count in depth.items():
            self.queue_depth.labels(task_status.value).set(count)
