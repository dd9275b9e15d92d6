"""The executions and tasks API's bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from app.executions.domain import (
    COMMIT_SHA_PATTERN,
    MAX_TASK_TIMEOUT_S,
    MAX_TASKS,
    Execution,
    ExecutionStatus,
    Task,
    TaskStatus,
)
from app.http.limits import JsonObject


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskIn(_Strict):
    type: Annotated[str, Field(min_length=1, max_length=100, examples=["flash"])]
    params: JsonObject = {}
    timeout_s: Annotated[int, Field(ge=1, le=MAX_TASK_TIMEOUT_S)] = 600
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3


class ExecutionCreate(_Strict):
    reservation_id: Annotated[str, Field(min_length=1, max_length=64)]
    commit_sha: Annotated[str, Field(pattern=COMMIT_SHA_PATTERN, examples=["9fceb02"])]
    pipeline_url: Annotated[str, Field(max_length=2048)] | None = None
    metadata: JsonObject = {}
    tasks: Annotated[list[TaskIn], Field(min_length=1, max_length=MAX_TASKS)]


class ExecutionPatch(_Strict):
    status: ExecutionStatus | None = None
    artifacts_uri: Annotated[str, Field(max_length=2048)] | None = None
    summary: Annotated[str, Field(max_length=4000)] | None = None


class TaskOut(BaseModel):
    task_id: str
    execution_id: str
    bench_id: str
    seq: int
    type: str
    params: dict[str, Any]
    timeout_s: int
    max_attempts: int
    status: TaskStatus
    attempts: int
    lease_holder: str | None
    lease_expires_at: datetime | None
    result: dict[str, Any] | None
    error: str | None
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, task: Task) -> TaskOut:
        return cls(
            task_id=task.task_id,
            execution_id=task.execution_id,
            bench_id=task.bench_id,
            seq=task.seq,
            type=task.type,
            params=task.params,
            timeout_s=task.timeout_s,
            max_attempts=task.max_attempts,
            status=task.status,
            attempts=task.attempts,
            lease_holder=task.lease_holder,
            lease_expires_at=task.lease_expires_at,
            result=task.result,
            error=task.error,
            version=task.version,
            created_at=task.created_at,
            updated_at=task.updated_at,
        )


class ExecutionOut(BaseModel):
    execution_id: str
    reservation_id: str
    bench_id: str
    created_by: str
    commit_sha: str
    pipeline_url: str | None
    metadata: dict[str, Any]
    status: ExecutionStatus
    artifacts_uri: str | None
    summary: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    version: int
    created_at: datetime
    updated_at: datetime
    tasks: list[TaskOut] | None = None

    @classmethod
    def of(cls, execution: Execution, tasks: list[Task] | None = None) -> ExecutionOut:
        return cls(
            execution_id=execution.execution_id,
            reservation_id=execution.reservation_id,
            bench_id=execution.bench_id,
            created_by=execution.created_by,
            commit_sha=execution.commit_sha,
            pipeline_url=execution.pipeline_url,
            metadata=execution.metadata,
            status=execution.status,
            artifacts_uri=execution.artifacts_uri,
            summary=execution.summary,
            started_at=execution.started_at,
            finished_at=execution.finished_at,
            duration_s=execution.duration_s,
            version=execution.version,
            created_at=execution.created_at,
            updated_at=execution.updated_at,
            tasks=None if tasks is None else [TaskOut.of(task) for task in tasks],
        )


class TaskComplete(_Strict):
    result: JsonObject = {}


class TaskFail(_Strict):
    error: Annotated[str, Field(min_length=1, max_length=4000)]
    retryable: bool = False
