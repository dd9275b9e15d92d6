"""Unknown query parameters are a 400 that names them and the known ones: a misspelt
filter (``?capabilities=`` for ``?capability=``) must not silently widen a list."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app.http.exceptions import ProblemException


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters of an operation and of every dependency it has."""
    names = {param.alias for param in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names


def _refuse_unknown(given: Iterable[str], known: frozenset[str]) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        raise ProblemException(
            400,
            f"unknown query parameter(s): {', '.join(unknown)}; "
            f"this operation takes: {', '.join(sorted(known)) or 'none'}",
            slug="unknown-query-parameter",
            unknown=unknown,
            known=sorted(known),
        )


class KnownQueryRoute(APIRoute):
    """An operation that refuses the query parameters it does not declare, checked before
    its dependencies run. Not a dependency itself: FastAPI resolves every dependency as
    a node of the route's tree on every request, and this is on every route. Every
    router of the API is made with ``route_class=KnownQueryRoute``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        known = frozenset(_query_names(self.dependant))

        async def checked(request: Request) -> Response:
            # The raw query first: most requests have none, and parsing nothing costs.
            if request.scope["query_string"] and request.query_params:
                _refuse_unknown(request.query_params, known)
            return await handler(request)

        return checked
