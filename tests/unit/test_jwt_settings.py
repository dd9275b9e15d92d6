"""ORCH_JWT_ISSUERS: parsed from JSON in the environment, unsafe configurations refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from app.http.jwt_bearer import InvalidJwt, looks_like_jwt, principal_from_claims
from app.identity import Principal, Role
from app.settings import FixedRole, JwtIssuer, Settings

BASE: dict[str, Any] = {
    "issuer": "https://gitlab.example.com",
    "jwks_url": "https://gitlab.example.com/oauth/discovery/keys",
    "audience": "https://orchestrator.example.com",
    "subject": "{project_path}@{ref}",
    "role": {"fixed": "ci"},
}


def issuer(**fields: Any) -> JwtIssuer:
    return JwtIssuer.model_validate({**BASE, **fields})


def test_the_environment_variable_is_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    idp = {**BASE, "issuer": "https://idp.example.com", "role": "orch_role", "team": "dept"}
    monkeypatch.setenv("ORCH_JWT_ISSUERS", json.dumps([BASE, idp]))
    gitlab, corporate = Settings().jwt_issuers
    assert gitlab.role == FixedRole(fixed=Role.CI)
    assert (gitlab.algorithms, gitlab.leeway_s) == (["RS256"], 30)
    assert (gitlab.jwks_cache_s, gitlab.jwks_refresh_min_s) == (3600, 60)
    assert corporate.role == "orch_role" and corporate.team == "dept"
    monkeypatch.delenv("ORCH_JWT_ISSUERS")
    assert Settings().jwt_issuers == []


@pytest.mark.parametrize(
    "algorithms", [["none"], ["HS256"], ["RS256", "HS512"], ["RS384"], ["PS256"], []]
)
def test_symmetric_unsigned_and_other_algorithms_are_refused(algorithms: list[str]) -> None:
    with pytest.raises(ValidationError):
        issuer(algorithms=algorithms)


def test_es256_and_rs256_are_accepted() -> None:
    assert issuer(algorithms=["ES256", "RS256"]).algorithms == ["ES256", "RS256"]


@pytest.mark.parametrize(
    "fields",
    [
        {"jwks_url": None},  # no key source
        {"jwks_file": "/etc/orch/jwks.json"},  # two
        {"jwks_url": "http://gitlab.example.com/keys"},  # in clear over the network
        {"audience": ""},
        {"subject": "{project_path!r}"},
        {"subject": "{project_path:>10}"},
        {"subject": "{claims.attr}"},
        {"subject": "{{literal}}"},
        {"role": {"fixed": "superuser"}},
        {"role": {"fixed": "agent"}},  # agents need a bench_id claim
        {"leeway_s": -1},
        {"surprise": True},
    ],
)
def test_bad_issuer_configurations_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        issuer(**fields)


def test_an_issuer_may_be_listed_once() -> None:
    with pytest.raises(ValidationError, match="once"):
        Settings(jwt_issuers=[issuer(), issuer()])


def test_claim_mapping() -> None:
    claims = {"project_path": "lab/fw", "ref": "main", "ns": "lab", "run": 42}
    ci = issuer(team="ns", subject="{project_path}@{ref}#{run}")
    assert principal_from_claims(ci, claims) == Principal("lab/fw@main#42", Role.CI, None, "lab")
    agent = issuer(role="r", bench_id="bench", subject="sub")
    assert principal_from_claims(agent, {"sub": "a1", "r": "agent", "bench": "rig-1"}) == (
        Principal("a1", Role.AGENT, "rig-1")
    )
    # Non-agents carry no bench id, whatever the token says.
    assert (
        principal_from_claims(agent, {"sub": "u", "r": "user", "bench": "rig-1"}).bench_id is None
    )
    with pytest.raises(InvalidJwt, match="1 to 256 printable"):
        principal_from_claims(agent, {"sub": "a\nb", "r": "user"})
    with pytest.raises(InvalidJwt, match="'sub' claim"):
        principal_from_claims(agent, {"sub": ["list"], "r": "user"})


def test_jwts_are_told_from_opaque_tokens_by_shape() -> None:
    assert looks_like_jwt("eyJh.eyJz.c2ln")
    assert looks_like_jwt("eyJh.eyJz.")  # unsigned: still a JWT, and refused as one
    assert not looks_like_jwt("Zm9v_bar-baz")  # secrets.token_urlsafe
    assert not looks_like_jwt("a.b")
    assert not looks_like_jwt("a.b.c.d")
    assert not looks_like_jwt("a+b.c/d.e")
