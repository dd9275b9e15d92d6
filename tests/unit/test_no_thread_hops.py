"""Every endpoint and dependency is ``async def``.

FastAPI runs a plain ``def`` endpoint or dependency in a worker thread: a thread hop and
a GIL hand-off on every request that uses it. Measured under load, a few of them (the
rate limit and the role checks) cost the GET and the heartbeat a sixth of their
throughput, so none is allowed back in unnoticed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app.main import create_app


def _routes(router: Any) -> Iterator[APIRoute]:
    for route in router.routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # an included router, as FastAPI keeps it
            yield from _routes(route.original_router)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _runs_on_the_loop(call: Callable[..., Any]) -> bool:
    # A class instance (such as HTTPBearer) is called through its __call__ method.
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(type(call).__call__)


def _name(call: Callable[..., Any]) -> str:
    return f"{call.__module__}.{getattr(call, '__qualname__', type(call).__qualname__)}"


def test_no_endpoint_or_dependency_runs_in_a_worker_thread() -> None:
    app = create_app()
    routes = [route for route in _routes(app.router) if route.path.startswith("/v1")]
    assert len(routes) > 20  # the walk found the API, not an empty router
    in_threads = sorted(
        {
            f"{route.path}: {_name(call)}"
            for route in routes
            for call in (route.endpoint, *_calls(route.dependant))
            if not _runs_on_the_loop(call)
        }
    )
    assert in_threads == []
