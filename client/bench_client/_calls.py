"""An operation as data: the request (method, path, parameters, body, headers), whether
it is safe to repeat, and the parser of its answer; with the helpers that build them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from bench_client.models import (
    AvailabilityOut,
    FreeWindowOut,
    PageOutBenchOut,
    PageOutExecutionOut,
    PageOutHistoryEntryOut,
    PageOutReservationOut,
    TaskIn,
    TaskOut,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

Params = list[tuple[str, str]]


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


def parse_model(model: type[M]) -> Callable[[httpx.Response], M]:
    def parse(response: httpx.Response) -> M:
        return model.model_validate_json(response.content)

    return parse


def parse_page(
    model: type[PageOutBenchOut]
    | type[PageOutReservationOut]
    | type[PageOutExecutionOut]
    | type[PageOutHistoryEntryOut],
) -> Callable[[httpx.Response], tuple[list[Any], str | None]]:
    def parse(response: httpx.Response) -> tuple[list[Any], str | None]:
        page = model.model_validate_json(response.content)
        return list(page.items), page.next_cursor

    return parse


def parse_optional_task(response: httpx.Response) -> TaskOut | None:
    if response.status_code == 204 or not response.content:
        return None
    return TaskOut.model_validate_json(response.content)


def no_body(response: httpx.Response) -> None:
    return None


def parse_free_windows(response: httpx.Response) -> list[FreeWindowOut]:
    return list(AvailabilityOut.model_validate_json(response.content).items)


def seg(value: str) -> str:
    """One path segment, percent-encoded (an id can never reach another path)."""
    return quote(str(value), safe="")


def if_match(version: int) -> dict[str, str]:
    return {"If-Match": f'"{version}"'}


def instant(value: datetime) -> str:
    return value.isoformat()


def iso_duration(span: timedelta) -> str:
    """ISO 8601 duration for the availability query: ``PT5400S``."""
    seconds = span.total_seconds()
    text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return f"PT{text}S"


def query_params(**values: Any) -> Params:
    """Query parameters: None is left out, a sequence repeats the name, instants in RFC 3339."""
    out: Params = []
    for name, value in values.items():
        key = name.rstrip("_")  # from_ -> from
        if value is None:
            continue
        items = value if isinstance(value, list | tuple | set | frozenset) else [value]
        for item in items:
            if isinstance(item, datetime):
                out.append((key, instant(item)))
            else:
                out.append((key, str(to_jsonable_python(item))))
    return out


def task_json(task: Mapping[str, Any] | TaskIn) -> Any:
    if isinstance(task, TaskIn):
        return task.model_dump(mode="json", exclude_unset=True)
    return to_jsonable_python(dict(task))


def drop_none(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def new_idempotency_key() -> str:
    return str(uuid.uuid4())
