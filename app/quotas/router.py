"""HTTP for quotas and usage: parse, authorise, call the service, render."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from app.deps import ActorDep, QuotaServiceDep
from app.errors import Forbidden, InvalidInput
from app.http.etag import IfMatchDep
from app.http.query_params import KnownQueryRoute
from app.http.responses import json_bytes_response, resource_response
from app.identity import Role
from app.quotas.auth import QuotaAdmin, Reader, check_may_read
from app.quotas.domain import QuotaKind
from app.quotas.schemas import DayUsageOut, QuotaIn, QuotaOut, UsageOut

router = APIRouter(tags=["quotas"], route_class=KnownQueryRoute)

Name = Annotated[str, Path(min_length=1, max_length=128)]


@router.get(
    "/v1/quotas/{kind}/{name}",
    response_model=QuotaOut,
    operation_id="get_quota",
    responses={403: {"description": "Another user's or team's quota (admins read any)"}},
)
async def get_quota(
    kind: QuotaKind, name: Name, service: QuotaServiceDep, principal: Reader
) -> Response:
    """A user's or a team's limits; version 0 (ETag "0") while the defaults apply."""
    check_may_read(principal, kind, name)
    quota = await service.get(kind, name)
    return resource_response(QuotaOut.of(quota), quota.version)


@router.put(
    "/v1/quotas/{kind}/{name}",
    response_model=QuotaOut,
    operation_id="put_quota",
    responses={403: {"description": "Only admins set quotas"}},
)
async def put_quota(
    kind: QuotaKind,
    name: Name,
    body: QuotaIn,
    service: QuotaServiceDep,
    actor: ActorDep,
    expectation: IfMatchDep,
    _: QuotaAdmin,
) -> Response:
    """Set the limits (null: none); needs If-Match with the ETag read ("0" at first)."""
    quota = await service.put(kind, name, body.limits(), expectation, actor)
    return resource_response(QuotaOut.of(quota), quota.version)


@router.get(
    "/v1/usage",
    response_model=UsageOut,
    operation_id="get_usage",
    responses={403: {"description": "Another user's or team's usage (admins read any)"}},
)
async def get_usage(
    service: QuotaServiceDep,
    principal: Reader,
    user_id: Annotated[str | None, Query(max_length=128, description="`me`: yours")] = None,
    team: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    """Booked and used hours per day over the last 30 days, and the quota: who books most
    and uses least, without SQL."""
    if user_id is not None and team is not None:
        raise InvalidInput("give user_id or team, not both")
    if team is None and user_id in (None, "me"):
        user_id = principal.subject
    if team is not None:
        check_may_read(principal, QuotaKind.TEAM, team)
    elif user_id != principal.subject and principal.role is not Role.ADMIN:
        raise Forbidden("you may read your own usage; admins read anyone's")
    days, quota = await service.usage(user_id=user_id, team=team)
    body = UsageOut(
        user_id=user_id,
        team=team,
        days=[DayUsageOut.of(day) for day in days],
        booked_hours=round(sum(d.booked.total_seconds() for d in days) / 3600, 3),
        used_hours=round(sum(d.used.total_seconds() for d in days) / 3600, 3),
        quota=QuotaOut.of(quota),
    )
    return json_bytes_response(body.model_dump_json().encode())
