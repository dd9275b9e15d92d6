"""Who may call the bench endpoints, by role. Which bench an agent speaks for is the
domain's rule (``check_may_report_for``), applied by the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.http.auth import PrincipalDep, require_roles
from app.identity import Principal, Role

# Reads: any authenticated caller.
Reader = PrincipalDep
# Registering, changing and retiring benches.
BenchAdmin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
# Heartbeats: the bench's own agent (checked in the domain) or an admin.
HeartbeatSender = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.ADMIN))]
