"""What Client and AsyncClient share: every operation as a request plus a parser
(``_calls.py`` builds them), and the session that sends them under the retry policy of
``_retry.py``, a generator that says when to send and how long to wait. The two clients
only carry the I/O out (``httpx.Client.send`` or ``await httpx.AsyncClient.send``,
``time.sleep`` or ``await asyncio.sleep``), so they cannot disagree about anything else."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic_core import to_jsonable_python

from bench_client._calls import (
    Call,
    Pages,
    Params,
    drop_none,
    if_match,
    instant,
    iso_duration,
    new_idempotency_key,
    no_body,
    parse_free_windows,
    parse_model,
    parse_optional_task,
    parse_page,
    query_params,
    seg,
    task_json,
)
from bench_client._retry import Outcome, RetryPolicy, Send, Sleep, Step, exchange
from bench_client.models import (
    BenchOut,
    ExecutionOut,
    FreeWindowOut,
    HeartbeatOut,
    HistoryEntryOut,
    PageOutBenchOut,
    PageOutExecutionOut,
    PageOutHistoryEntryOut,
    PageOutReservationOut,
    QuotaKind,
    QuotaOut,
    ReservationOut,
    TaskIn,
    TaskOut,
    UsageOut,
)

DEFAULT_PAGE_SIZE = 100


__all__ = [
    "DEFAULT_PAGE_SIZE",
    "Call",
    "Operations",
    "Outcome",
    "Pages",
    "RetryPolicy",
    "Send",
    "Sleep",
    "Step",
    "exchange",
    "if_match",
    "iso_duration",
    "new_idempotency_key",
    "seg",
]


class Operations:
    """Every API operation, as data. ``page_size`` is the ``limit`` of list requests."""

    def __init__(self, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self.page_size = page_size

    def _limit(self) -> Params:
        return [("limit", str(self.page_size))]

    # ------------------------------------------------------------------ benches

    def create_bench(
        self,
        bench_id: str,
        name: str,
        type: str,
        *,
        capabilities: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        heartbeat_interval_s: int | None = None,
        concurrency: int | None = None,
        idempotency_key: str | None = None,
    ) -> Call[BenchOut]:
        body = {
            "bench_id": bench_id,
            "name": name,
            "type": type,
            "capabilities": list(capabilities),
            **drop_none(
                labels=None if labels is None else dict(labels),
                heartbeat_interval_s=heartbeat_interval_s,
                concurrency=concurrency,
            ),
        }
        key = idempotency_key or new_idempotency_key()
        return Call(
            "POST",
            "/v1/benches",
            parse_model(BenchOut),
            body=body,
            headers={"Idempotency-Key": key},
        )

    def get_bench(self, bench_id: str) -> Call[BenchOut]:
        return Call("GET", f"/v1/benches/{seg(bench_id)}", parse_model(BenchOut))

    def list_benches(
        self,
        *,
        capabilities: Sequence[str] = (),
        type: str | None = None,
        admin_state: str | None = None,
        status: str | None = None,
    ) -> Pages[BenchOut]:
        params = query_params(capability=list(capabilities), type=type, admin_state=admin_state)
        params += query_params(status=status) + self._limit()
        return Pages("/v1/benches", parse_page(PageOutBenchOut), params)

    def update_bench(self, bench: BenchOut, changes: Mapping[str, Any]) -> Call[BenchOut]:
        body = to_jsonable_python(dict(changes))
        return Call(
            "PATCH",
            f"/v1/benches/{seg(bench.bench_id)}",
            parse_model(BenchOut),
            body=body,
            headers=if_match(bench.version),
        )

    def retire_bench(self, bench: BenchOut) -> Call[BenchOut]:
        return Call(
            "DELETE",
            f"/v1/benches/{seg(bench.bench_id)}",
            parse_model(BenchOut),
            headers=if_match(bench.version),
        )

    def post_heartbeat(
        self, bench_id: str, agent_version: str, details: Mapping[str, Any] | None = None
    ) -> Call[HeartbeatOut]:
        body: dict[str, Any] = {"agent_version": agent_version}
        if details is not None:
            body["details"] = to_jsonable_python(dict(details))
        return Call(
            "POST", f"/v1/benches/{seg(bench_id)}/heartbeats", parse_model(HeartbeatOut), body=body
        )

    def bench_history(self, bench_id: str) -> Pages[HistoryEntryOut]:
        path = f"/v1/benches/{seg(bench_id)}/history"
        return Pages(path, parse_page(PageOutHistoryEntryOut), self._limit())

    def bench_liveness(self, bench_id: str) -> Pages[HistoryEntryOut]:
        path = f"/v1/benches/{seg(bench_id)}/liveness"
        return Pages(path, parse_page(PageOutHistoryEntryOut), self._limit())

    def bench_calendar(
        self, bench_id: str, *, start: datetime | None = None, end: datetime | None = None
    ) -> Pages[ReservationOut]:
        path = f"/v1/benches/{seg(bench_id)}/reservations"
        # The service binds a cursor to the query with its own default `from` (its "now")
        # filled in, which has moved on by the second page: send `from`, so every page of
        # one listing asks the same query. (Without `to` the range is the week from `from`.)
        if start is None:
            start = datetime.now(UTC).replace(microsecond=0)
        params = query_params(from_=start, to=end) + self._limit()
        return Pages(path, parse_page(PageOutReservationOut), params)

    # ------------------------------------------------------------------ reservations

    def create_reservation(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        duration: timedelta | None = None,
        bench_id: str | None = None,
        capabilities: Sequence[str] = (),
        purpose: str = "",
        advance: bool = False,
        not_before: datetime | None = None,
        latest_start: datetime | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
    ) -> Call[ReservationOut]:
        body: dict[str, Any] = {"purpose": purpose}
        body |= drop_none(
            start=None if start is None else instant(start),
            end=None if end is None else instant(end),
            duration=None if duration is None else iso_duration(duration),
            not_before=None if not_before is None else instant(not_before),
            latest_start=None if latest_start is None else instant(latest_start),
            priority=priority,
        )
        if advance:
            body["advance"] = True
        if bench_id is not None:
            body["bench_id"] = bench_id
        if capabilities:
            body["capabilities"] = list(capabilities)
        key = idempotency_key or new_idempotency_key()
        return Call(
            "POST",
            "/v1/reservations",
            parse_model(ReservationOut),
            body=body,
            headers={"Idempotency-Key": key},
        )

    def get_reservation(self, reservation_id: str) -> Call[ReservationOut]:
        return Call("GET", f"/v1/reservations/{seg(reservation_id)}", parse_model(ReservationOut))

    def list_reservations(
        self,
        *,
        user_id: str | None = None,
        bench_id: str | None = None,
        status: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Pages[ReservationOut]:
        params = query_params(
            user_id=user_id, bench_id=bench_id, status=status, from_=start, to=end
        )
        return Pages("/v1/reservations", parse_page(PageOutReservationOut), params + self._limit())

    def update_reservation(
        self,
        reservation: ReservationOut,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        purpose: str | None = None,
    ) -> Call[ReservationOut]:
        body = drop_none(
            start=None if start is None else instant(start),
            end=None if end is None else instant(end),
            purpose=purpose,
        )
        return Call(
            "PATCH",
            f"/v1/reservations/{seg(reservation.reservation_id)}",
            parse_model(ReservationOut),
            body=body,
            headers=if_match(reservation.version),
        )

    def cancel_reservation(self, reservation_id: str) -> Call[ReservationOut]:
        path = f"/v1/reservations/{seg(reservation_id)}/cancel"
        return Call("POST", path, parse_model(ReservationOut))

    def release_reservation(self, reservation_id: str) -> Call[ReservationOut]:
        path = f"/v1/reservations/{seg(reservation_id)}/release"
        return Call("POST", path, parse_model(ReservationOut))

    def checkin_reservation(
        self, reservation_id: str, *, version: int | None = None
    ) -> Call[ReservationOut]:
        path = f"/v1/reservations/{seg(reservation_id)}/checkin"
        headers = {} if version is None else if_match(version)
        return Call("POST", path, parse_model(ReservationOut), headers=headers)

    def extend_reservation(
        self, reservation_id: str, by: timedelta, *, version: int | None = None
    ) -> Call[ReservationOut]:
        # Without If-Match a repeat after a lost answer would extend twice: only an
        # extension conditional on the version it read is safe to repeat (a 412 the second time).
        path = f"/v1/reservations/{seg(reservation_id)}/extend"
        headers = {} if version is None else if_match(version)
        return Call(
            "POST",
            path,
            parse_model(ReservationOut),
            body={"by": iso_duration(by)},
            headers=headers,
            retry_safe=version is not None,
        )

    def reservation_history(self, reservation_id: str) -> Pages[HistoryEntryOut]:
        path = f"/v1/reservations/{seg(reservation_id)}/history"
        return Pages(path, parse_page(PageOutHistoryEntryOut), self._limit())

    def reservation_executions(self, reservation_id: str) -> Pages[ExecutionOut]:
        path = f"/v1/reservations/{seg(reservation_id)}/executions"
        return Pages(path, parse_page(PageOutExecutionOut), self._limit())

    def find_availability(
        self,
        duration: timedelta,
        *,
        capabilities: Sequence[str] = (),
        bench_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 20,
    ) -> Call[list[FreeWindowOut]]:
        params = query_params(
            duration=iso_duration(duration),
            capability=list(capabilities),
            bench_id=bench_id,
            from_=start,
            to=end,
            limit=limit,
        )
        return Call("GET", "/v1/availability", parse_free_windows, params)

    # ------------------------------------------------------------------ quotas and usage

    def get_quota(self, kind: QuotaKind | str, name: str) -> Call[QuotaOut]:
        path = f"/v1/quotas/{seg(QuotaKind(kind).value)}/{seg(name)}"
        return Call("GET", path, parse_model(QuotaOut))

    def put_quota(
        self,
        quota: QuotaOut,
        *,
        max_booked_hours_7d: float | None = None,
        max_concurrent: int | None = None,
        max_window_hours: float | None = None,
    ) -> Call[QuotaOut]:
        body = {
            "max_booked_hours_7d": max_booked_hours_7d,
            "max_concurrent": max_concurrent,
            "max_window_hours": max_window_hours,
        }
        path = f"/v1/quotas/{seg(QuotaKind(quota.kind).value)}/{seg(quota.name)}"
        return Call("PUT", path, parse_model(QuotaOut), body=body, headers=if_match(quota.version))

    def get_usage(self, *, user_id: str | None = None, team: str | None = None) -> Call[UsageOut]:
        return Call(
            "GET", "/v1/usage", parse_model(UsageOut), query_params(user_id=user_id, team=team)
        )

    # ------------------------------------------------------------------ executions

    def create_execution(
        self,
        reservation_id: str,
        commit_sha: str,
        tasks: Sequence[Mapping[str, Any] | TaskIn],
        *,
        pipeline_url: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Call[ExecutionOut]:
        body: dict[str, Any] = {
            "reservation_id": reservation_id,
            "commit_sha": commit_sha,
            "tasks": [task_json(task) for task in tasks],
        }
        if pipeline_url is not None:
            body["pipeline_url"] = pipeline_url
        if metadata is not None:
            body["metadata"] = to_jsonable_python(dict(metadata))
        key = idempotency_key or new_idempotency_key()
        return Call(
            "POST",
            "/v1/executions",
            parse_model(ExecutionOut),
            body=body,
            headers={"Idempotency-Key": key},
        )

    def get_execution(self, execution_id: str) -> Call[ExecutionOut]:
        return Call("GET", f"/v1/executions/{seg(execution_id)}", parse_model(ExecutionOut))

    def list_executions(
        self,
        *,
        reservation_id: str | None = None,
        bench_id: str | None = None,
        status: str | None = None,
    ) -> Pages[ExecutionOut]:
        params = query_params(reservation_id=reservation_id, bench_id=bench_id, status=status)
        return Pages("/v1/executions", parse_page(PageOutExecutionOut), params + self._limit())

    def update_execution(
        self,
        execution: ExecutionOut,
        *,
        status: str | None = None,
        artifacts_uri: str | None = None,
        summary: str | None = None,
    ) -> Call[ExecutionOut]:
        body = drop_none(
            status=None if status is None else str(status),
            artifacts_uri=artifacts_uri,
            summary=summary,
        )
        return Call(
            "PATCH",
            f"/v1/executions/{seg(execution.execution_id)}",
            parse_model(ExecutionOut),
            body=body,
            headers=if_match(execution.version),
        )

    def cancel_execution(self, execution_id: str) -> Call[ExecutionOut]:
        path = f"/v1/executions/{seg(execution_id)}/cancel"
        return Call("POST", path, parse_model(ExecutionOut))

    def execution_history(self, execution_id: str) -> Pages[HistoryEntryOut]:
        path = f"/v1/executions/{seg(execution_id)}/history"
        return Pages(path, parse_page(PageOutHistoryEntryOut), self._limit())

    # ------------------------------------------------------------------ tasks

    def claim_task(self, bench_id: str) -> Call[TaskOut | None]:
        # Not repeated after a failure that may have reached the service: a lost answer
        # would leave a task leased (until its lease runs out) and a retry claim another.
        path = f"/v1/benches/{seg(bench_id)}/tasks/claim"
        return Call("POST", path, parse_optional_task, retry_safe=False)

    def heartbeat_task(self, task_id: str) -> Call[TaskOut]:
        return Call("POST", f"/v1/tasks/{seg(task_id)}/heartbeat", parse_model(TaskOut))

    def complete_task(self, task_id: str, result: Mapping[str, Any]) -> Call[TaskOut]:
        body = {"result": to_jsonable_python(dict(result))}
        return Call("POST", f"/v1/tasks/{seg(task_id)}/complete", parse_model(TaskOut), body=body)

    def fail_task(self, task_id: str, error: str, *, retryable: bool) -> Call[TaskOut]:
        body = {"error": error, "retryable": retryable}
        return Call("POST", f"/v1/tasks/{seg(task_id)}/fail", parse_model(TaskOut), body=body)

    def get_task(self, task_id: str) -> Call[TaskOut]:
        return Call("GET", f"/v1/tasks/{seg(task_id)}", parse_model(TaskOut))

    def task_history(self, task_id: str) -> Pages[HistoryEntryOut]:
        path = f"/v1/tasks/{seg(task_id)}/history"
        return Pages(path, parse_page(PageOutHistoryEntryOut), self._limit())

    # ------------------------------------------------------------------ events

    def event_stream(
        self,
        *,
        types: Sequence[str] = (),
        bench_id: str | None = None,
        user_id: str | None = None,
    ) -> Call[None]:
        """The live stream's request (``text/event-stream``). Its body is never parsed
        whole: bench_client._stream reads it message by message, adds ``Last-Event-ID``
        and reconnects."""
        params = query_params(type=list(types), bench_id=bench_id, user_id=user_id)
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        return Call("GET", "/v1/events", no_body, params, headers=headers)
