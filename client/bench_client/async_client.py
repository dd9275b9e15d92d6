"""``AsyncClient``: the same operations as ``Client``, as coroutines; lists are async
iterators. Requests, retries and errors are decided in ``bench_client._core``."""

from __future__ import annotations

import asyncio
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Mapping,
    Sequence,
)
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import httpx

from bench_client._base import _Base
from bench_client._core import (
    DEFAULT_PAGE_SIZE,
    Call,
    Outcome,
    Pages,
    Send,
)
from bench_client._stream import (
    DEFAULT_IDLE_TIMEOUT_S,
    Drain,
    Emit,
    Open,
    Read,
    StreamAnswer,
    StreamNotice,
    StreamStep,
)
from bench_client.errors import PreconditionFailed
from bench_client.models import (
    BenchOut,
    EventOut,
    ExecutionOut,
    FreeWindowOut,
    HeartbeatOut,
    HistoryEntryOut,
    QuotaKind,
    QuotaOut,
    ReservationOut,
    TaskIn,
    TaskOut,
    UsageOut,
)

__all__ = ["AsyncClient"]

T = TypeVar("T")
M = TypeVar("M")


class AsyncClient(_Base):
    """Client's twin for asyncio: the same arguments and methods, as coroutines; the lists
    are async iterators (``async for bench in client.list_benches(): ...``)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        profile: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        backoff_base: float = 0.25,
        backoff_max: float = 30.0,
    ) -> None:
        super().__init__(
            url,
            token,
            profile=profile,
            timeout=timeout,
            max_retries=max_retries,
            page_size=page_size,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
        )
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=self._session.headers,
            timeout=self._timeout,
            transport=transport,
        )

    # ------------------------------------------------------------------ plumbing

    async def close(self) -> None:
        await self._http.aclose()

    aclose = close

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _run(self, call: Call[T]) -> T:
        steps = self._session.steps(self._http, call)
        answer: Outcome = None
        try:
            while True:
                step = steps.send(answer)
                if isinstance(step, Send):
                    try:
                        answer = await self._http.send(step.request)
                    except httpx.TransportError as exc:
                        answer = exc
                else:
                    await asyncio.sleep(step.seconds)
                    answer = None
        except StopIteration as done:
            return cast(T, done.value)

    async def _iterate(self, pages: Pages[T]) -> AsyncIterator[T]:
        cursor: str | None = None
        while True:
            items, cursor = await self._run(pages.call(cursor))
            for item in items:
                yield item
            if cursor is None:
                return

    async def update(
        self,
        read: Callable[[], Awaitable[M]],
        change: Callable[[M], Awaitable[M]],
        *,
        retry_on_conflict: int = 3,
    ) -> M:
        """``await change(await read())``, again on a 412 (see Client.update)."""
        attempt = 0
        while True:
            current = await read()
            try:
                return await change(current)
            except PreconditionFailed:
                if attempt >= retry_on_conflict:
                    raise
                attempt += 1

    # ------------------------------------------------------------------ benches

    async def create_bench(
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
    ) -> BenchOut:
        return await self._run(
            self._ops.create_bench(
                bench_id,
                name,
                type,
                capabilities=capabilities,
                labels=labels,
                heartbeat_interval_s=heartbeat_interval_s,
                concurrency=concurrency,
                idempotency_key=idempotency_key,
            )
        )

    async def get_bench(self, bench_id: str) -> BenchOut:
        return await self._run(self._ops.get_bench(bench_id))

    def list_benches(
        self,
        *,
        capabilities: Sequence[str] = (),
        type: str | None = None,
        admin_state: str | None = None,
        status: str | None = None,
    ) -> AsyncIterator[BenchOut]:
        return self._iterate(
            self._ops.list_benches(
                capabilities=capabilities, type=type, admin_state=admin_state, status=status
            )
        )

    async def update_bench(self, bench: BenchOut, **changes: Any) -> BenchOut:
        return await self._run(self._ops.update_bench(bench, changes))

    async def retire_bench(self, bench: BenchOut) -> BenchOut:
        return await self._run(self._ops.retire_bench(bench))

    async def post_heartbeat(
        self, bench_id: str, agent_version: str, details: Mapping[str, Any] | None = None
    ) -> HeartbeatOut:
        return await self._run(self._ops.post_heartbeat(bench_id, agent_version, details))

    def bench_history(self, bench_id: str) -> AsyncIterator[HistoryEntryOut]:
        return self._iterate(self._ops.bench_history(bench_id))

    def bench_liveness(self, bench_id: str) -> AsyncIterator[HistoryEntryOut]:
        return self._iterate(self._ops.bench_liveness(bench_id))

    def bench_calendar(
        self, bench_id: str, *, start: datetime | None = None, end: datetime | None = None
    ) -> AsyncIterator[ReservationOut]:
        return self._iterate(self._ops.bench_calendar(bench_id, start=start, end=end))

    # ------------------------------------------------------------------ reservations

    async def create_reservation(
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
    ) -> ReservationOut:
        """Book ``bench_id``, or any active bench with all ``capabilities``: from ``start``
        to ``end`` (or for ``duration``).

        ``advance=True`` with ``duration``: the service books the earliest free window at
        once (from ``not_before``, else now; the answer's ``start`` is an estimate) and moves
        the booking up by itself whenever an earlier one frees (event
        ``reservation.advanced``). Nothing starting by ``latest_start``: Conflict with
        ``earliest_start`` and ``earliest_bench_id``. ``priority`` (0-100; users up to 50,
        pipelines and admins up to 100) says who moves up first. Over quota:
        QuotaExceeded."""
        return await self._run(
            self._ops.create_reservation(
                start=start,
                end=end,
                duration=duration,
                bench_id=bench_id,
                capabilities=capabilities,
                purpose=purpose,
                advance=advance,
                not_before=not_before,
                latest_start=latest_start,
                priority=priority,
                idempotency_key=idempotency_key,
            )
        )

    async def get_reservation(self, reservation_id: str) -> ReservationOut:
        return await self._run(self._ops.get_reservation(reservation_id))

    def list_reservations(
        self,
        *,
        user_id: str | None = None,
        bench_id: str | None = None,
        status: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> AsyncIterator[ReservationOut]:
        return self._iterate(
            self._ops.list_reservations(
                user_id=user_id, bench_id=bench_id, status=status, start=start, end=end
            )
        )

    async def update_reservation(
        self,
        reservation: ReservationOut,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        purpose: str | None = None,
    ) -> ReservationOut:
        return await self._run(
            self._ops.update_reservation(reservation, start=start, end=end, purpose=purpose)
        )

    async def cancel_reservation(self, reservation_id: str) -> ReservationOut:
        return await self._run(self._ops.cancel_reservation(reservation_id))

    async def release_reservation(self, reservation_id: str) -> ReservationOut:
        return await self._run(self._ops.release_reservation(reservation_id))

    async def checkin_reservation(
        self, reservation_id: str, *, version: int | None = None
    ) -> ReservationOut:
        """Say you are at the bench: an active reservation nobody checked in to (and that
        no run used) is released as a no-show after the service's grace. ``version``: only
        if it is still that version (else PreconditionFailed). Not active: InvalidTransition."""
        return await self._run(self._ops.checkin_reservation(reservation_id, version=version))

    async def extend_reservation(
        self, reservation_id: str, by: timedelta, *, version: int | None = None
    ) -> ReservationOut:
        """End ``by`` later, atomically. Conflict when the time after is held (its
        ``holders`` and ``detail`` say by whom); QuotaExceeded when over quota. ``version``:
        only if it is still that version (else PreconditionFailed); with it the request is
        retried like any other, without it never (a repeat could extend twice)."""
        return await self._run(self._ops.extend_reservation(reservation_id, by, version=version))

    def reservation_history(self, reservation_id: str) -> AsyncIterator[HistoryEntryOut]:
        return self._iterate(self._ops.reservation_history(reservation_id))

    def reservation_executions(self, reservation_id: str) -> AsyncIterator[ExecutionOut]:
        return self._iterate(self._ops.reservation_executions(reservation_id))

    async def find_availability(
        self,
        duration: timedelta,
        *,
        capabilities: Sequence[str] = (),
        bench_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 20,
    ) -> list[FreeWindowOut]:
        return await self._run(
            self._ops.find_availability(
                duration,
                capabilities=capabilities,
                bench_id=bench_id,
                start=start,
                end=end,
                limit=limit,
            )
        )

    # ------------------------------------------------------------------ quotas and usage

    async def get_quota(self, kind: QuotaKind | str, name: str) -> QuotaOut:
        """A user's (``kind="user"``) or a team's limits: your own and your team's, any for
        admins. ``version`` 0: none was set, the service's defaults apply."""
        return await self._run(self._ops.get_quota(kind, name))

    async def put_quota(
        self,
        quota: QuotaOut,
        *,
        max_booked_hours_7d: float | None = None,
        max_concurrent: int | None = None,
        max_window_hours: float | None = None,
    ) -> QuotaOut:
        """Set all three limits of ``quota``'s user or team (None: no limit of that kind),
        if it is still the version read (else PreconditionFailed: read it again; see
        ``update``). Admins only."""
        return await self._run(
            self._ops.put_quota(
                quota,
                max_booked_hours_7d=max_booked_hours_7d,
                max_concurrent=max_concurrent,
                max_window_hours=max_window_hours,
            )
        )

    async def get_usage(self, *, user_id: str | None = None, team: str | None = None) -> UsageOut:
        """Booked and used hours per UTC day over the last 30 days, their totals and the
        quota: yours (``user_id`` None or ``"me"``), another user's or a team's (``team``;
        admins read anyone's)."""
        return await self._run(self._ops.get_usage(user_id=user_id, team=team))

    # ------------------------------------------------------------------ executions

    async def create_execution(
        self,
        reservation_id: str,
        commit_sha: str,
        tasks: Sequence[Mapping[str, Any] | TaskIn],
        *,
        pipeline_url: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> ExecutionOut:
        return await self._run(
            self._ops.create_execution(
                reservation_id,
                commit_sha,
                tasks,
                pipeline_url=pipeline_url,
                metadata=metadata,
                idempotency_key=idempotency_key,
            )
        )

    async def get_execution(self, execution_id: str) -> ExecutionOut:
        return await self._run(self._ops.get_execution(execution_id))

    def list_executions(
        self,
        *,
        reservation_id: str | None = None,
        bench_id: str | None = None,
        status: str | None = None,
    ) -> AsyncIterator[ExecutionOut]:
        return self._iterate(
            self._ops.list_executions(
                reservation_id=reservation_id, bench_id=bench_id, status=status
            )
        )

    async def update_execution(
        self,
        execution: ExecutionOut,
        *,
        status: str | None = None,
        artifacts_uri: str | None = None,
        summary: str | None = None,
    ) -> ExecutionOut:
        return await self._run(
            self._ops.update_execution(
                execution, status=status, artifacts_uri=artifacts_uri, summary=summary
            )
        )

    async def cancel_execution(self, execution_id: str) -> ExecutionOut:
        return await self._run(self._ops.cancel_execution(execution_id))

    def execution_history(self, execution_id: str) -> AsyncIterator[HistoryEntryOut]:
        return self._iterate(self._ops.execution_history(execution_id))

    # ------------------------------------------------------------------ tasks

    async def claim_task(self, bench_id: str) -> TaskOut | None:
        return await self._run(self._ops.claim_task(bench_id))

    async def heartbeat_task(self, task_id: str) -> TaskOut:
        return await self._run(self._ops.heartbeat_task(task_id))

    async def complete_task(self, task_id: str, result: Mapping[str, Any]) -> TaskOut:
        return await self._run(self._ops.complete_task(task_id, result))

    async def fail_task(self, task_id: str, error: str, *, retryable: bool) -> TaskOut:
        return await self._run(self._ops.fail_task(task_id, error, retryable=retryable))

    async def get_task(self, task_id: str) -> TaskOut:
        return await self._run(self._ops.get_task(task_id))

    def task_history(self, task_id: str) -> AsyncIterator[HistoryEntryOut]:
        return self._iterate(self._ops.task_history(task_id))

    # ------------------------------------------------------------------ events

    def follow_events(
        self,
        *,
        types: Sequence[str] = (),
        bench_id: str | None = None,
        user_id: str | None = None,
        after: str | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S,
        max_reconnects: int | None = None,
        on_notice: Callable[[StreamNotice], None] | None = None,
    ) -> AsyncIterator[EventOut]:
        """The live event stream as an async iterator (see Client.follow_events)."""
        return self._stream(
            self._event_steps(
                self._http,
                types=types,
                bench_id=bench_id,
                user_id=user_id,
                after=after,
                idle_timeout=idle_timeout,
                max_reconnects=max_reconnects,
                on_notice=on_notice,
            )
        )

    async def _stream(
        self, steps: Generator[StreamStep, StreamAnswer, None]
    ) -> AsyncIterator[EventOut]:
        response: httpx.Response | None = None
        chunks: AsyncIterator[bytes] | None = None
        answer: StreamAnswer = None
        try:
            while True:
                step = steps.send(answer)
                answer = None
                if isinstance(step, Emit):
                    yield step.event
                elif isinstance(step, Open):
                    if response is not None:
                        await response.aclose()
                        response = None
                    try:
                        response = await self._http.send(step.request, stream=True)
                        chunks = response.aiter_bytes()
                        answer = response
                    except httpx.TransportError as exc:
                        answer = exc
                elif isinstance(step, Read):
                    assert chunks is not None
                    try:
                        answer = await anext(chunks, b"")
                    except httpx.TransportError as exc:
                        answer = exc
                elif isinstance(step, Drain):
                    assert response is not None
                    try:
                        await response.aread()
                    except httpx.TransportError as exc:
                        answer = exc
                else:
                    await asyncio.sleep(step.seconds)
        except StopIteration:
            return
        finally:
            steps.close()
            if response is not None:
                await response.aclose()
