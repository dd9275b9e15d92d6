"""Unknown query parameters are a 400 that names them and the known ones: a misspelt
filter (``?capabilities=`` for ``?capability=``) must not silently widen a list."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app.http.exceptions import ProblemException

# Per route, the query parameter names it declares (computed once per route).
_known: dict[int, frozenset[str]] = {}


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters of an operation and of every dependency it has."""
    names = {param.alias for param in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names


def _declared(route: APIRoute) -> frozenset[str]:
    names = _known.get(id(route))
    if names is None:
        names = frozenset(_query_names(route.dependant))
        _known[id(route)] = names
    return names


async def _only_known_query_parameters(request: Request) -> None:
    if not request.query_params:
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _declared(route)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise ProblemException(
            400,
            f"unknown query parameter(s): {', '.join(unknown)}; "
            f"this operation takes: {', '.join(sorted(known)) or 'none'}",
            slug="unknown-query-parameter",
            unknown=unknown,
            known=sorted(known),
        )


# The application lists this among its dependencies, so every operation checks.
ONLY_KNOWN_QUERY_PARAMETERS = Depends(_only_known_query_parameters)
