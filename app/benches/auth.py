"""Who may call the bench endpoints, by role. Which bench an agent speaks for is the
domain's rule (``check_may_report_for``), applied by the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.benches.service import BenchService
from app.deps import Call, Services, calling
from app.health.service import HealthService
from app.http.auth import PrincipalDep, require_roles
from app.identity import Principal, Role

# Reads: any authenticated caller.
Reader = PrincipalDep
# Registering, changing and retiring benches.
BenchAdmin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
# Heartbeats: the bench's own agent (checked in the domain) or an admin.
HEARTBEAT_SENDERS = (Role.AGENT, Role.ADMIN)


def _benches(services: Services) -> BenchService:
    return services.benches


def _health(services: Services) -> HealthService:
    return services.health


# The hottest routes' one dependency each: the service and the caller (app/deps.py).
BenchReading = Annotated[Call[BenchService], calling(_benches)]
HeartbeatSending = Annotated[Call[HealthService], calling(_health, *HEARTBEAT_SENDERS)]
