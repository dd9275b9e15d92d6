"""Bearer-token identity: who is calling, and which roles may call what.

Tokens are kept as SHA-256 digests only; a leaked tokens file does not leak tokens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel, TypeAdapter, model_validator

from app.http.exceptions import ProblemException
from app.http.state import http_state
from app.identity import Principal, Role


class TokenRecord(BaseModel):
    token_sha256: str
    subject: str
    role: Role
    bench_id: str | None = None

    @model_validator(mode="after")
    def _agents_have_a_bench(self) -> TokenRecord:
        if (self.role is Role.AGENT) != (self.bench_id is not None):
            raise ValueError("bench_id is required for agents and only for agents")
        self.token_sha256 = self.token_sha256.lower()
        return self


_token_list = TypeAdapter(list[TokenRecord])


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenRegistry:
    def __init__(self, records: Iterable[TokenRecord]) -> None:
        self._by_digest = {
            record.token_sha256: Principal(record.subject, record.role, record.bench_id)
            for record in records
        }

    @classmethod
    def from_file(cls, path: Path) -> TokenRegistry:
        if not path.exists():
            raise RuntimeError(
                f"tokens file {path} does not exist: set ORCH_TOKENS_FILE, or run "
                "'orchestrator dev-tokens' to make one for development"
            )
        return cls(_token_list.validate_json(path.read_bytes()))

    def authenticate(self, token: str) -> Principal | None:
        return self._by_digest.get(token_digest(token))


def _unauthorized(detail: str) -> ProblemException:
    return ProblemException(
        401, detail, headers={"WWW-Authenticate": 'Bearer realm="bench-orchestrator"'}
    )


def current_principal(request: Request) -> Principal:
    header = request.headers.get("authorization")
    if header is None:
        raise _unauthorized("send Authorization: Bearer <token>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("the Authorization header must be 'Bearer <token>'")
    registry = http_state(request).tokens
    principal = registry.authenticate(token.strip())
    if principal is None:
        raise _unauthorized("the token is not known")
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency that admits only the given roles (403 for the others)."""
    allowed = frozenset(roles)

    def check(principal: PrincipalDep) -> Principal:
        if principal.role not in allowed:
            raise ProblemException(
                403,
                f"role {principal.role.value!r} may not do this; "
                f"allowed: {', '.join(sorted(role.value for role in allowed))}",
            )
        return principal

    return check


def write_dev_tokens(tokens_file: Path, env_file: Path) -> dict[str, str] | None:
    """Make a development tokens file, unless one exists. Returns the tokens it made."""
    import secrets

    if tokens_file.exists():
        return None
    people = {
        "ADMIN_TOKEN": ("admin", Role.ADMIN, None),
        "USER_TOKEN": ("alice", Role.USER, None),
        "USER2_TOKEN": ("bob", Role.USER, None),
        "CI_TOKEN": ("ci-pipeline", Role.CI, None),
        "AGENT_TOKEN": ("agent-rig-1", Role.AGENT, "rig-1"),
    }
    made: dict[str, str] = {}
    records = []
    for variable, (subject, role, bench_id) in people.items():
        token = secrets.token_urlsafe(24)
        made[variable] = token
        record = {"token_sha256": token_digest(token), "subject": subject, "role": role.value}
        if bench_id is not None:
            record["bench_id"] = bench_id
        records.append(record)
    tokens_file.parent.mkdir(parents=True, exist_ok=True)
    tokens_file.write_text(json.dumps(records, indent=2) + "\n")
    # Plain tokens for the developer's shell (`source var/dev-tokens.env`); never for production.
    env_file.write_text("".join(f"export {name}={token}\n" for name, token in made.items()))
    env_file.chmod(0o600)
    return made
