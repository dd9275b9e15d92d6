"""JWT bearer tokens through the real app: CI ID tokens and IdP tokens beside the tokens file.

Token times are real (PyJWT checks them against the system clock, with the issuer's
leeway); JWKS cache times follow the app's ManualClock, which moves only when told to.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.clock import ManualClock
from app.main import create_app
from app.settings import FixedRole, JwtIssuer, Settings
from app.store.base import Store
from tests.api.test_benches import assert_problem
from tests.api.test_reservations import TOMORROW_9, TOMORROW_11, add_bench
from tests.support.jwt_keys import (
    AUDIENCE,
    ISSUER,
    JwksServer,
    claims,
    ec_key,
    hs256_with_public_key,
    rsa_key,
    unsigned,
    write_jwks,
)

pytestmark = pytest.mark.parametrize("store_kind", ["sqlite-memory"], indirect=True)

KEY_A = rsa_key("key-a")
KEY_B = rsa_key("key-b")
EC_KEY = ec_key("ec-1")
INVALID_TOKEN = 'Bearer realm="bench-orchestrator", error="invalid_token"'


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def gitlab(**fields: Any) -> JwtIssuer:
    """A CI issuer: fixed role ci, subject "<project>@<ref>", team from the namespace."""
    base: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "subject": "{project_path}@{ref}",
        "role": {"fixed": "ci"},
        "team": "namespace_path",
    }
    return JwtIssuer.model_validate({**base, **fields})


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    with JwksServer().running() as server:
        yield server


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return write_jwks(tmp_path / "jwks.json", KEY_A, EC_KEY)


@asynccontextmanager
async def running(
    settings: Settings, store: Store, clock: ManualClock, *issuers: JwtIssuer
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        settings.model_copy(update={"jwt_issuers": list(issuers)}), store=store, clock=clock
    )
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


def assert_refused(response: httpx.Response, detail_part: str) -> None:
    problem = assert_problem(response, 401)
    assert detail_part in problem["detail"], problem["detail"]
    assert response.headers["www-authenticate"] == INVALID_TOKEN


async def test_a_ci_token_acts_as_its_pipeline_with_role_ci(
    settings: Settings, store: Store, clock: ManualClock, key_file: Path
) -> None:
    token = KEY_A.sign(claims())
    async with running(settings, store, clock, gitlab(jwks_file=key_file)) as client:
        assert (await client.get("/v1/benches", headers=bearer(token))).status_code == 200
        await add_bench(client)
        booked = await client.post(
            "/v1/reservations",
            json={"bench_id": "rig-1", "start": TOMORROW_9, "end": TOMORROW_11},
            headers=bearer(token),
        )
        assert booked.status_code == 201, booked.text
        assert booked.json()["user_id"] == "lab/firmware@main"
        # The fixed role shows in what the role may not do.
        refused = await client.post("/v1/benches", json={}, headers=bearer(token))
        assert "role 'ci' may not do this" in assert_problem(refused, 403)["detail"]


async def test_es256_keys_and_the_tokens_file_work_side_by_side(
    settings: Settings, store: Store, clock: ManualClock, key_file: Path
) -> None:
    issuer = gitlab(jwks_file=key_file, algorithms=["ES256"])
    async with running(settings, store, clock, issuer) as client:
        ok = await client.get("/v1/benches", headers=bearer(EC_KEY.sign(claims())))
        assert ok.status_code == 200, ok.text
        # RS256 is not among this issuer's algorithms, though its key is in the JWKS.
        rs = await client.get("/v1/benches", headers=bearer(KEY_A.sign(claims())))
        assert_refused(rs, "not accepted for its issuer")
        opaque = await client.get("/v1/benches", headers=bearer("alice-token"))
        assert opaque.status_code == 200


@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        ({"exp": -100}, "has expired"),  # beyond the 30 s leeway
        ({"nbf": 120}, "not valid yet"),
        ({"iat": 120}, "not valid yet"),
        ({"exp": None}, "'exp'"),
        ({"iat": None}, "'iat'"),
        ({"aud": "https://someone-else.example.com"}, "not meant for this service"),
        ({"iss": "https://gitlab.evil.example"}, "issuer is not trusted"),
        ({"iss": None}, "issuer is not trusted"),
    ],
)
async def test_bad_claims_are_401_invalid_token(
    settings: Settings,
    store: Store,
    clock: ManualClock,
    key_file: Path,
    overrides: dict[str, Any],
    detail: str,
) -> None:
    now = claims()["iat"]
    times = {"exp", "nbf", "iat"}
    shifted = {k: (now + v if k in times and v is not None else v) for k, v in overrides.items()}
    token = KEY_A.sign(claims(**shifted))
    async with running(settings, store, clock, gitlab(jwks_file=key_file)) as client:
        assert_refused(await client.get("/v1/benches", headers=bearer(token)), detail)


async def test_times_within_the_leeway_pass(
    settings: Settings, store: Store, clock: ManualClock, key_file: Path
) -> None:
    now = claims()["iat"]
    token = KEY_A.sign(claims(exp=now - 10, nbf=now + 10, iat=now + 10))
    async with running(settings, store, clock, gitlab(jwks_file=key_file)) as client:
        assert (await client.get("/v1/benches", headers=bearer(token))).status_code == 200
    strict = gitlab(jwks_file=key_file, leeway_s=0)
    async with running(settings, store, clock, strict) as client:
        assert_refused(await client.get("/v1/benches", headers=bearer(token)), "")


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda: unsigned(claims(), KEY_A.kid), id="alg-none"),
        pytest.param(lambda: hs256_with_public_key(KEY_A, claims()), id="hs256-public-pem"),
        pytest.param(lambda: KEY_B.sign(claims(), kid=KEY_A.kid), id="other-key-same-kid"),
        pytest.param(lambda: KEY_A.sign(claims())[:-4] + "AAAA", id="tampered-signature"),
        pytest.param(lambda: "garbageheader.garbagepayload.garbagesig", id="garbage"),
    ],
)
async def test_forged_tokens_are_401(
    settings: Settings,
    store: Store,
    clock: ManualClock,
    key_file: Path,
    forge: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token: str = forge()
    async with running(settings, store, clock, gitlab(jwks_file=key_file)) as client:
        logging.getLogger().addHandler(caplog.handler)
        try:
            response = await client.get("/v1/benches", headers=bearer(token))
        finally:
            logging.getLogger().removeHandler(caplog.handler)
    assert_refused(response, "the token")
    assert token not in response.text
    assert "refused" in caplog.text
    assert token not in caplog.text and token.split(".")[1] not in caplog.text


async def test_unknown_kid_refetches_the_url_once_then_401(
    settings: Settings, store: Store, clock: ManualClock, jwks_server: JwksServer
) -> None:
    jwks_server.serve(KEY_A)
    async with running(settings, store, clock, gitlab(jwks_url=jwks_server.url)) as client:
        good = await client.get("/v1/benches", headers=bearer(KEY_A.sign(claims())))
        assert good.status_code == 200, good.text
        assert jwks_server.hits == 1
        unknown = KEY_B.sign(claims())
        assert_refused(await client.get("/v1/benches", headers=bearer(unknown)), "(kid)")
        assert jwks_server.hits == 2
        for _ in range(3):  # a flood of unknown kids makes no more fetches
            assert_refused(await client.get("/v1/benches", headers=bearer(unknown)), "(kid)")
        assert jwks_server.hits == 2
        clock.advance(timedelta(seconds=60))
        assert_refused(await client.get("/v1/benches", headers=bearer(unknown)), "(kid)")
        assert jwks_server.hits == 3


async def test_rotated_keys_take_over_after_one_refetch(
    settings: Settings, store: Store, clock: ManualClock, jwks_server: JwksServer
) -> None:
    jwks_server.serve(KEY_A)
    old, new = KEY_A.sign(claims()), KEY_B.sign(claims())
    async with running(settings, store, clock, gitlab(jwks_url=jwks_server.url)) as client:
        assert (await client.get("/v1/benches", headers=bearer(old))).status_code == 200
        jwks_server.serve(KEY_B)  # the issuer rotates: the old key is gone
        assert (await client.get("/v1/benches", headers=bearer(new))).status_code == 200
        assert jwks_server.hits == 2
        assert_refused(await client.get("/v1/benches", headers=bearer(old)), "(kid)")
        assert (await client.get("/v1/benches", headers=bearer(new))).status_code == 200
        assert jwks_server.hits == 2


async def test_the_key_set_is_refetched_when_its_cache_time_is_up(
    settings: Settings, store: Store, clock: ManualClock, jwks_server: JwksServer
) -> None:
    jwks_server.serve(KEY_A, KEY_B)
    old, new = KEY_A.sign(claims()), KEY_B.sign(claims())
    issuer = gitlab(jwks_url=jwks_server.url, jwks_cache_s=600)
    async with running(settings, store, clock, issuer) as client:
        assert (await client.get("/v1/benches", headers=bearer(old))).status_code == 200
        jwks_server.serve(KEY_B)  # the old key retires; the cached set still has it
        clock.advance(timedelta(seconds=599))
        assert (await client.get("/v1/benches", headers=bearer(old))).status_code == 200
        assert jwks_server.hits == 1
        clock.advance(timedelta(seconds=1))
        assert_refused(await client.get("/v1/benches", headers=bearer(old)), "(kid)")
        assert jwks_server.hits == 2  # one fetch: the expired set, not another for the kid
        assert (await client.get("/v1/benches", headers=bearer(new))).status_code == 200
        assert jwks_server.hits == 2


async def test_an_unreachable_jwks_is_503_until_it_answers(
    settings: Settings, store: Store, clock: ManualClock, jwks_server: JwksServer
) -> None:
    jwks_server.status = 500
    token = KEY_A.sign(claims())
    async with running(settings, store, clock, gitlab(jwks_url=jwks_server.url)) as client:
        down = await client.get("/v1/benches", headers=bearer(token))
        assert_problem(down, 503)
        assert down.headers["retry-after"] == "60"
        jwks_server.status = 200
        jwks_server.serve(KEY_A)
        clock.advance(timedelta(seconds=60))
        assert (await client.get("/v1/benches", headers=bearer(token))).status_code == 200
        assert jwks_server.hits == 2


async def test_roles_come_from_the_mapping(
    settings: Settings, store: Store, clock: ManualClock, key_file: Path
) -> None:
    idp = gitlab(jwks_file=key_file, subject="email", role="orch_role", bench_id="bench", team=None)
    assert not isinstance(idp.role, FixedRole)
    async with running(settings, store, clock, idp) as client:

        async def call(**extra: Any) -> httpx.Response:
            token = KEY_A.sign(claims(email="carol@example.com", **extra))
            return await client.get("/v1/benches", headers=bearer(token))

        assert_refused(await call(), "'orch_role' claim names no role")
        assert_refused(await call(orch_role="superuser"), "names no role")
        assert_refused(await call(orch_role="agent"), "agent token must name a valid bench id")
        assert_refused(await call(orch_role="agent", bench="Not A Bench!"), "valid bench id")
        assert (await call(orch_role="agent", bench="rig-1")).status_code == 200
        admin = await call(orch_role="admin")
        assert admin.status_code == 200
        await add_bench(client)
        patched = await client.patch(
            "/v1/benches/rig-1",
            json={"name": "renamed"},
            headers={
                **bearer(KEY_A.sign(claims(email="c@x", orch_role="admin"))),
                "If-Match": '"1"',
            },
        )
        assert patched.status_code == 200, patched.text


async def test_a_subject_claim_that_is_missing_is_401(
    settings: Settings, store: Store, clock: ManualClock, key_file: Path
) -> None:
    token = KEY_A.sign(claims(ref=None))
    async with running(settings, store, clock, gitlab(jwks_file=key_file)) as client:
        assert_refused(await client.get("/v1/benches", headers=bearer(token)), "'ref' claim")


async def test_without_issuers_a_jwt_is_401(
    settings: Settings, store: Store, clock: ManualClock
) -> None:
    async with running(settings, store, clock) as client:
        response = await client.get("/v1/benches", headers=bearer(KEY_A.sign(claims())))
        assert_refused(response, "trusts no JWT issuer")


async def test_a_broken_jwks_file_refuses_to_start(
    settings: Settings, store: Store, clock: ManualClock, tmp_path: Path
) -> None:
    broken = tmp_path / "jwks.json"
    broken.write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')  # symmetric: never
    with pytest.raises(RuntimeError, match="no usable RS256 or ES256"):
        async with running(settings, store, clock, gitlab(jwks_file=broken)):
            pass
