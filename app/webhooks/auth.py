"""Who may manage webhooks: people and pipelines (agents run work, they subscribe to
nothing). Whose subscription a caller may see or change is the domain's rule
(``may_manage``: the owner, or an admin), applied by the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.http.auth import require_roles
from app.identity import Principal, Role

Subscriber = Annotated[Principal, Depends(require_roles(Role.USER, Role.CI, Role.ADMIN))]
