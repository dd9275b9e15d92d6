"""Who is acting: the caller's subject and role, as services see them (no HTTP here)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"
    CI = "ci"
    AGENT = "agent"


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: Role
    # Set for agents only: the one bench whose agent this caller is.
    bench_id: str | None = None
    # The caller's team, where the token says (a later quota feature keys on it).
    team: str | None = None


@dataclass(frozen=True, slots=True)
class Actor:
    """The principal plus the request it acts in; every history entry records both."""

    principal: Principal
    request_id: str

    @property
    def subject(self) -> str:
        return self.principal.subject
