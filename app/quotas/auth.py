"""Who may read and set quotas: admins set them; a user reads their own and their
team's (``may_read``, applied by the router before it reads)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.errors import Forbidden
from app.http.auth import PrincipalDep, require_roles
from app.identity import Principal, Role
from app.quotas.domain import QuotaKind

Reader = PrincipalDep
QuotaAdmin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]


def check_may_read(principal: Principal, kind: QuotaKind, name: str) -> None:
    if principal.role is Role.ADMIN:
        return
    if kind is QuotaKind.USER and name == principal.subject:
        return
    if kind is QuotaKind.TEAM and name == principal.team:
        return
    raise Forbidden("you may read your own quota and your team's; admins read any")
