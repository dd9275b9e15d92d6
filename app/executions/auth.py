"""Who may call the execution and task endpoints, by role. Whose run a caller may report
on, and which bench an agent claims for, are domain rules applied by the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.deps import Call, Services, calling
from app.executions.service import ExecutionService
from app.http.auth import PrincipalDep, require_roles
from app.identity import Principal, Role

# Starting runs: pipelines, people (on their own reservations), admins.
Launcher = Annotated[Principal, Depends(require_roles(Role.CI, Role.USER, Role.ADMIN))]
# Reporting on a run: the domain admits CI, admins, the bench's agent and the creator.
Reporter = PrincipalDep


def _executions(services: Services) -> ExecutionService:
    return services.executions


# The hottest routes' one dependency each: the service and the caller (app/deps.py).
# Reads: any authenticated caller.
ExecutionReading = Annotated[Call[ExecutionService], calling(_executions)]
# Claiming tasks, and lease reports (heartbeat, complete, fail): agents only, refused
# before any task is read. That it is this bench's agent, and the one holding the lease
# (409 for another), are the domain's checks.
AgentWork = Annotated[Call[ExecutionService], calling(_executions, Role.AGENT)]
