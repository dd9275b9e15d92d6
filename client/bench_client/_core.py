"""What Client and AsyncClient share: every operation as a request plus a parser, and the
retry policy as a generator that says when to send and how long to wait. The two clients
only carry the I/O out (``httpx.Client.send`` or ``await httpx.AsyncClient.send``,
``time.sleep`` or ``await asyncio.sleep``), so they cannot disagree about anything else."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from bench_client.__about__ import VERSION
from bench_client.config import ClientConfig, resolve_config
from bench_client.errors import TransportFailure, error_from_response, parse_retry_after
from bench_client.models import (
    AvailabilityOut,
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

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DEFAULT_PAGE_SIZE = 100
RETRY_STATUSES = frozenset({429, 503})
# Failures where the request cannot have reached the service: repeating it is always safe.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

Params = list[tuple[str, str]]


# --------------------------------------------------------------------------- retry policy


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: before retry ``n`` (0-based) wait a uniform
    random time in ``[0, min(max_delay, base_delay * 2**n)]``, and never less than the
    response's Retry-After. A Retry-After longer than ``max_delay`` is not waited for: the
    error is raised at once with its ``retry_after``, for the caller to decide."""

    max_retries: int = 5
    base_delay: float = 0.25
    max_delay: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def backoff(self, retry: int) -> float:
        ceiling = min(self.max_delay, self.base_delay * (2.0**retry))
        return self.rng.uniform(0.0, ceiling)


@dataclass(frozen=True)
class Send:
    request: httpx.Request


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Send | Sleep
Outcome = httpx.Response | httpx.TransportError | None


def exchange(
    request: httpx.Request, *, retry_safe: bool, policy: RetryPolicy
) -> Generator[Step, Outcome, httpx.Response]:
    """Yields ``Send`` (answer with the response or the httpx.TransportError) and ``Sleep``
    (answer None); returns the final response, which may be an error status. Raises
    TransportFailure when the service stays unreachable, or when a request that is not
    safe to repeat may have reached it."""
    retry = 0
    while True:
        outcome = yield Send(request)
        if isinstance(outcome, httpx.TransportError):
            may_repeat = retry_safe or isinstance(outcome, _NOT_SENT)
            if not may_repeat or retry >= policy.max_retries:
                raise TransportFailure(
                    f"{request.method} {request.url}: {type(outcome).__name__}: {outcome}"
                    + (f" (after {retry} retries)" if retry else "")
                ) from outcome
            delay = policy.backoff(retry)
        elif outcome is None:
            raise RuntimeError("Send was answered with None")
        elif outcome.status_code in RETRY_STATUSES and retry < policy.max_retries:
            # 429 is refused before any work; 503 is the store being unavailable, where the
            # API's writes are conditional, so only a request safe to repeat is repeated.
            if outcome.status_code == 503 and not retry_safe:
                return outcome
            wait = parse_retry_after(outcome.headers.get("Retry-After"))
            if wait is not None and wait > policy.max_delay:
                return outcome
            delay = max(wait or 0.0, policy.backoff(retry))
        else:
            return outcome
        retry += 1
        answer = yield Sleep(delay)
        assert answer is None


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and what its successful response means."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Params = field(default_factory=list)
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    retry_safe: bool = True


@dataclass(frozen=True)
class Pages(Generic[T]):
    """A cursor-paginated list: ``params`` (filters and limit) are sent with every page."""

    path: str
    page: Callable[[httpx.Response], tuple[list[T], str | None]]
    params: Params = field(default_factory=list)

    def call(self, cursor: str | None) -> Call[tuple[list[T], str | None]]:
        params = list(self.params)
        if cursor is not None:
            params.append(("cursor", cursor))
        return Call("GET", self.path, self.page, params)


def _model(model: type[M]) -> Callable[[httpx.Response], M]:
    def parse(response: httpx.Response) -> M:
        return model.model_validate_json(response.content)

    return parse


def _page(
    model: type[PageOutBenchOut]
    | type[PageOutReservationOut]
    | type[PageOutExecutionOut]
    | type[PageOutHistoryEntryOut],
) -> Callable[[httpx.Response], tuple[list[Any], str | None]]:
    def parse(response: httpx.Response) -> tuple[list[Any], str | None]:
        page = model.model_validate_json(response.content)
        return list(page.items), page.next_cursor

    return parse


def _optional_task(response: httpx.Response) -> TaskOut | None:
    if response.status_code == 204 or not response.content:
        return None
    return TaskOut.model_validate_json(response.content)


def _no_body(response: httpx.Response) -> None:
    return None


def _free_windows(response: httpx.Response) -> list[FreeWindowOut]:
    return list(AvailabilityOut.model_validate_json(response.content).items)


def seg(value: str) -> str:
    """One path segment, percent-encoded (an id can never reach another path)."""
    return quote(str(value), safe="")


def if_match(version: int) -> dict[str, str]:
    return {"If-Match": f'"{version}"'}


def _instant(value: datetime) -> str:
    return value.isoformat()


def iso_duration(span: timedelta) -> str:
    """ISO 8601 duration for the availability query: ``PT5400S``."""
    seconds = span.total_seconds()
    text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return f"PT{text}S"


def _query(**values: Any) -> Params:
    """Query parameters: None is left out, a sequence repeats the name, instants in RFC 3339."""
    out: Params = []
    for name, value in values.items():
        key = name.rstrip("_")  # from_ -> from
        if value is None:
            continue
        items = value if isinstance(value, list | tuple | set | frozenset) else [value]
        for item in items:
            if isinstance(item, datetime):
                out.append((key, _instant(item)))
            else:
                out.append((key, str(to_jsonable_python(item))))
    return out


def _task_json(task: Mapping[str, Any] | TaskIn) -> Any:
    if isinstance(task, TaskIn):
        return task.model_dump(mode="json", exclude_unset=True)
    return to_jsonable_python(dict(task))


def _drop_none(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


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
            **_drop_none(
                labels=None if labels is None else dict(labels),
                heartbeat_interval_s=heartbeat_interval_s,
                concurrency=concurrency,
            ),
        }
        key = idempotency_key or new_idempotency_key()
        return Call(
            "POST", "/v1/benches", _model(BenchOut), body=body, headers={"Idempotency-Key": key}
        )

    def get_bench(self, bench_id: str) -> Call[BenchOut]:
        return Call("GET", f"/v1/benches/{seg(bench_id)}", _model(BenchOut))

    def list_benches(
        self,
        *,
        capabilities: Sequence[str] = (),
        type: str | None = None,
        admin_state: str | None = None,
        status: str | None = None,
    ) -> Pages[BenchOut]:
        params = _query(capability=list(capabilities), type=type, admin_state=admin_state)
        params += _query(status=status) + self._limit()
        return Pages("/v1/benches", _page(PageOutBenchOut), params)

    def update_bench(self, bench: BenchOut, changes: Mapping[str, Any]) -> Call[BenchOut]:
        body = to_jsonable_python(dict(changes))
        return Call(
            "PATCH",
            f"/v1/benches/{seg(bench.bench_id)}",
            _model(BenchOut),
            body=body,
            headers=if_match(bench.version),
        )

    def retire_bench(self, bench: BenchOut) -> Call[BenchOut]:
        return Call(
            "DELETE",
            f"/v1/benches/{seg(bench.bench_id)}",
            _model(BenchOut),
            headers=if_match(bench.version),
        )

    def post_heartbeat(
        self, bench_id: str, agent_version: str, details: Mapping[str, Any] | None = None
    ) -> Call[HeartbeatOut]:
        body: dict[str, Any] = {"agent_version": agent_version}
        if details is not None:
            body["details"] = to_jsonable_python(dict(details))
        return Call(
            "POST", f"/v1/benches/{seg(bench_id)}/heartbeats", _model(HeartbeatOut), body=body
        )

    def bench_history(self, bench_id: str) -> Pages[HistoryEntryOut]:
        path = f"/v1/benches/{seg(bench_id)}/history"
        return Pages(path, _page(PageOutHistoryEntryOut), self._limit())

    def bench_liveness(self, bench_id: str) -> Pages[HistoryEntryOut]:
        path = f"/v1/benches/{seg(bench_id)}/liveness"
        return Pages(path, _page(PageOutHistoryEntryOut), self._limit())

    def bench_calendar(
        self, bench_id: str, *, start: datetime | None = None, end: datetime | None = None
    ) -> Pages[ReservationOut]:
        path = f"/v1/benches/{seg(bench_id)}/reservations"
        # The service binds a cursor to the query with its own default `from` (its "now")
        # filled in, which has moved on by the second page: send `from`, so every page of
        # one listing asks the same query. (Without `to` the range is the week from `from`.)
        if start is None:
            start = datetime.now(UTC).replace(microsecond=0)
        params = _query(from_=start, to=end) + self._limit()
        return Pages(path, _page(PageOutReservationOut), params)

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
        body |= _drop_none(
            start=None if start is None else _instant(start),
            end=None if end is None else _instant(end),
            duration=None if duration is None else iso_duration(duration),
            not_before=None if not_before is None else _instant(not_before),
            latest_start=None if latest_start is None else _instant(latest_start),
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
            _model(ReservationOut),
            body=body,
            headers={"Idempotency-Key": key},
        )

    def get_reservation(self, reservation_id: str) -> Call[ReservationOut]:
        return Call("GET", f"/v1/reservations/{seg(reservation_id)}", _model(ReservationOut))

    def list_reservations(
        self,
        *,
        user_id: str | None = None,
        bench_id: str | None = None,
        status: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Pages[ReservationOut]:
        params = _query(user_id=user_id, bench_id=bench_id, status=status, from_=start, to=end)
        return Pages("/v1/reservations", _page(PageOutReservationOut), params + self._limit())

    def update_reservation(
        self,
        reservation: ReservationOut,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        purpose: str | None = None,
    ) -> Call[ReservationOut]:
        body = _drop_none(
            start=None if start is None else _instant(start),
            end=None if end is None else _instant(end),
            purpose=purpose,
        )
        return Call(
            "PATCH",
            f"/v1/reservations/{seg(reservation.reservation_id)}",
            _model(ReservationOut),
            body=body,
            headers=if_match(reservation.version),
        )

    def cancel_reservation(self, reservation_id: str) -> Call[ReservationOut]:
        path = f"/v1/reservations/{seg(reservation_id)}/cancel"
        return Call("POST", path, _model(ReservationOut))

    def release_reservation(self, reservation_id: str) -> Call[ReservationOut]:
        path = f"/v1/reservations/{seg(reservation_id)}/release"
        return Call("POST", path, _model(ReservationOut))

    def checkin_reservation(
        self, reservation_id: str, *, version: int | None = None
    ) -> Call[ReservationOut]:
        path = f"/v1/reservations/{seg(reservation_id)}/checkin"
        headers = {} if version is None else if_match(version)
        return Call("POST", path, _model(ReservationOut), headers=headers)

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
            _model(ReservationOut),
            body={"by": iso_duration(by)},
            headers=headers,
            retry_safe=version is not None,
        )

    def reservation_history(self, reservation_id: str) -> Pages[HistoryEntryOut]:
        path = f"/v1/reservations/{seg(reservation_id)}/history"
        return Pages(path, _page(PageOutHistoryEntryOut), self._limit())

    def reservation_executions(self, reservation_id: str) -> Pages[ExecutionOut]:
        path = f"/v1/reservations/{seg(reservation_id)}/executions"
        return Pages(path, _page(PageOutExecutionOut), self._limit())

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
        params = _query(
            duration=iso_duration(duration),
            capability=list(capabilities),
            bench_id=bench_id,
            from_=start,
            to=end,
            limit=limit,
        )
        return Call("GET", "/v1/availability", _free_windows, params)

    # ------------------------------------------------------------------ quotas and usage

    def get_quota(self, kind: QuotaKind | str, name: str) -> Call[QuotaOut]:
        path = f"/v1/quotas/{seg(QuotaKind(kind).value)}/{seg(name)}"
        return Call("GET", path, _model(QuotaOut))

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
        return Call("PUT", path, _model(QuotaOut), body=body, headers=if_match(quota.version))

    def get_usage(self, *, user_id: str | None = None, team: str | None = None) -> Call[UsageOut]:
        return Call("GET", "/v1/usage", _model(UsageOut), _query(user_id=user_id, team=team))

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
            "tasks": [_task_json(task) for task in tasks],
        }
        if pipeline_url is not None:
            body["pipeline_url"] = pipeline_url
        if metadata is not None:
            body["metadata"] = to_jsonable_python(dict(metadata))
        key = idempotency_key or new_idempotency_key()
        return Call(
            "POST",
            "/v1/executions",
            _model(ExecutionOut),
            body=body,
            headers={"Idempotency-Key": key},
        )

    def get_execution(self, execution_id: str) -> Call[ExecutionOut]:
        return Call("GET", f"/v1/executions/{seg(execution_id)}", _model(ExecutionOut))

    def list_executions(
        self,
        *,
        reservation_id: str | None = None,
        bench_id: str | None = None,
        status: str | None = None,
    ) -> Pages[ExecutionOut]:
        params = _query(reservation_id=reservation_id, bench_id=bench_id, status=status)
        return Pages("/v1/executions", _page(PageOutExecutionOut), params + self._limit())

    def update_execution(
        self,
        execution: ExecutionOut,
        *,
        status: str | None = None,
        artifacts_uri: str | None = None,
        summary: str | None = None,
    ) -> Call[ExecutionOut]:
        body = _drop_none(
            status=None if status is None else str(status),
            artifacts_uri=artifacts_uri,
            summary=summary,
        )
        return Call(
            "PATCH",
            f"/v1/executions/{seg(execution.execution_id)}",
            _model(ExecutionOut),
            body=body,
            headers=if_match(execution.version),
        )

    def cancel_execution(self, execution_id: str) -> Call[ExecutionOut]:
        path = f"/v1/executions/{seg(execution_id)}/cancel"
        return Call("POST", path, _model(ExecutionOut))

    def execution_history(self, execution_id: str) -> Pages[HistoryEntryOut]:
        path = f"/v1/executions/{seg(execution_id)}/history"
        return Pages(path, _page(PageOutHistoryEntryOut), self._limit())

    # ------------------------------------------------------------------ tasks

    def claim_task(self, bench_id: str) -> Call[TaskOut | None]:
        # Not repeated after a failure that may have reached the service: a lost answer
        # would leave a task leased (until its lease runs out) and a retry claim another.
        path = f"/v1/benches/{seg(bench_id)}/tasks/claim"
        return Call("POST", path, _optional_task, retry_safe=False)

    def heartbeat_task(self, task_id: str) -> Call[TaskOut]:
        return Call("POST", f"/v1/tasks/{seg(task_id)}/heartbeat", _model(TaskOut))

    def complete_task(self, task_id: str, result: Mapping[str, Any]) -> Call[TaskOut]:
        body = {"result": to_jsonable_python(dict(result))}
        return Call("POST", f"/v1/tasks/{seg(task_id)}/complete", _model(TaskOut), body=body)

    def fail_task(self, task_id: str, error: str, *, retryable: bool) -> Call[TaskOut]:
        body = {"error": error, "retryable": retryable}
        return Call("POST", f"/v1/tasks/{seg(task_id)}/fail", _model(TaskOut), body=body)

    def get_task(self, task_id: str) -> Call[TaskOut]:
        return Call("GET", f"/v1/tasks/{seg(task_id)}", _model(TaskOut))

    def task_history(self, task_id: str) -> Pages[HistoryEntryOut]:
        path = f"/v1/tasks/{seg(task_id)}/history"
        return Pages(path, _page(PageOutHistoryEntryOut), self._limit())

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
        params = _query(type=list(types), bench_id=bench_id, user_id=user_id)
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        return Call("GET", "/v1/events", _no_body, params, headers=headers)


# --------------------------------------------------------------------------- the session


class Session:
    """Configuration resolved once, headers, the request builder and the response check."""

    def __init__(
        self,
        url: str | None,
        token: str | None,
        *,
        profile: str | None,
        max_retries: int,
        page_size: int,
        backoff_base: float,
        backoff_max: float,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if not 1 <= page_size <= 500:
            raise ValueError("page_size must be within 1..500")
        self.config: ClientConfig = resolve_config(url, token, profile=profile)
        self.policy = RetryPolicy(max_retries, backoff_base, backoff_max)
        self.ops = Operations(page_size)
        self.headers = {
            "Accept": "application/json",
            "User-Agent": f"bench-orchestrator-client/{VERSION}",
        }
        if self.config.token:
            self.headers["Authorization"] = f"Bearer {self.config.token}"

    def build(
        self,
        http: httpx.Client | httpx.AsyncClient,
        call: Call[Any],
        *,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Request:
        """The request; ``timeout`` replaces the client's for this one (a stream waits
        longer for its next bytes than a call waits for its answer)."""
        headers = {"X-Request-ID": str(uuid.uuid4()), **call.headers}
        return http.build_request(
            call.method,
            call.path,
            params=tuple(call.params) or None,
            json=call.body,
            headers=headers,
            extensions=None if timeout is None else {"timeout": timeout.as_dict()},
        )

    def steps(
        self, http: httpx.Client | httpx.AsyncClient, call: Call[T]
    ) -> Generator[Step, Outcome, T]:
        """The whole of one call: the request, built once (so its Idempotency-Key and
        X-Request-ID stay the same across retries), the retries, then the typed error or
        the parsed result."""
        request = self.build(http, call)
        response = yield from exchange(request, retry_safe=call.retry_safe, policy=self.policy)
        if response.status_code >= 400:
            raise error_from_response(response)
        return call.parse(response)
