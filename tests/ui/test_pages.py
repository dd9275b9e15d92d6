"""The dashboard's pages, server side (in process, on an in-memory store): every page for
every role, the sign-in redirect, escaping, CSRF, the session cookie's properties, and
that the authorisation rules of the API apply unchanged."""

from __future__ import annotations

import fnmatch
import re
from datetime import timedelta

import httpx
import pytest

from app.clock import ManualClock
from app.ui.templating import accepts_gzip
from tests.conftest import ADMIN, AGENT1, ALICE, BOB, CI, START
from tests.ui.conftest import csrf_of, sign_in

ROLES = ["admin-token", "alice-token", "ci-token", "agent1-token"]
SCRIPT = "<script>alert(1)</script>"


def at(hours: float) -> str:
    return (START + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def lab(http: httpx.AsyncClient) -> dict[str, str]:
    """Two benches (one named like a script), a booking active now with a run on it, one
    tomorrow; returns their ids."""
    for bench_id, name in (("rig-1", SCRIPT), ("rig-2", "HIL rig 2")):
        made = await http.post(
            "/v1/benches",
            json={"bench_id": bench_id, "name": name, "type": "hil", "capabilities": ["can"]},
            headers=ADMIN,
        )
        assert made.status_code == 201, made.text
    beat = await http.post(
        "/v1/benches/rig-1/heartbeats", json={"agent_version": "1"}, headers=AGENT1
    )
    assert beat.status_code == 200
    now = await http.post(
        "/v1/reservations",
        json={"bench_id": "rig-1", "start": at(0), "end": at(2), "purpose": SCRIPT},
        headers=ALICE,
    )
    assert now.status_code == 201, now.text
    later = await http.post(
        "/v1/reservations",
        json={"bench_id": "rig-2", "start": at(24), "end": at(26), "purpose": "soak"},
        headers=BOB,
    )
    run = await http.post(
        "/v1/executions",
        json={
            "reservation_id": now.json()["reservation_id"],
            "commit_sha": "9fceb02",
            "tasks": [{"type": "flash"}],
        },
        headers=CI,
    )
    assert run.status_code == 201, run.text
    return {
        "now": now.json()["reservation_id"],
        "later": later.json()["reservation_id"],
        "run": run.json()["execution_id"],
    }


def pages(ids: dict[str, str]) -> list[str]:
    return [
        "/ui",
        "/ui/timeline",
        "/ui/timeline?view=week&capability=can&type=hil",
        "/ui/benches/rig-1",
        "/ui/runs",
        "/ui/runs?status=queued&bench_id=rig-1&period=7d",
        f"/ui/runs/{ids['run']}",
        f"/ui/reservations/{ids['now']}",
        "/ui/mine",
        "/ui/book?bench_id=rig-2",
        "/ui/fragments/summary",
        "/ui/fragments/board",
        "/ui/fragments/card/rig-1",
        "/ui/fragments/row/rig-1?view=week",
        f"/ui/runs/{ids['run']}?fragment=true",
    ]


@pytest.mark.parametrize("token", ROLES)
async def test_every_page_answers_200_for_each_role(web: httpx.AsyncClient, token: str) -> None:
    ids = await lab(web)
    await sign_in(web, token)
    for path in pages(ids):
        page = await web.get(path)
        assert page.status_code == 200, f"{path}: {page.status_code} {page.text[:500]}"
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"


async def test_without_a_session_every_page_is_a_303_to_the_sign_in_form(
    web: httpx.AsyncClient,
) -> None:
    ids = await lab(web)
    for path in pages(ids):
        page = await web.get(path)
        assert page.status_code == 303, path
        assert page.headers["location"].startswith("/ui/sign-in?next=%2Fui"), path
    # A bearer token is no session: /ui is for browsers.
    assert (await web.get("/ui", headers=ADMIN)).status_code == 303
    # A script's request is told 401, as the API would.
    script = await web.get("/ui/fragments/summary", headers={"Accept": "application/json"})
    assert script.status_code == 401
    assert script.headers["content-type"] == "application/problem+json"
    assert (await web.get("/ui/events")).status_code == 303


async def test_user_controlled_strings_render_as_text(web: httpx.AsyncClient) -> None:
    ids = await lab(web)
    await sign_in(web, "alice-token")
    for path in ("/ui", "/ui/timeline", "/ui/benches/rig-1", f"/ui/reservations/{ids['now']}"):
        html = (await web.get(path)).text
        assert SCRIPT not in html, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path
    # Not the sign-in form's `next` either.
    form = await web.get('/ui/sign-in?next=/ui/"><script>x</script>')
    assert "<script>x" not in form.text


async def test_the_session_cookie_is_httponly_strict_signed_and_expiring(
    web: httpx.AsyncClient,
) -> None:
    form = await web.get("/ui/sign-in")
    answer = await web.post(
        "/ui/sign-in", data={"token": "alice-token", "csrf": csrf_of(form.text), "next": "/ui"}
    )
    cookie = next(
        value
        for name, value in answer.headers.multi_items()
        if name == "set-cookie" and value.startswith("orch_session=")
    )
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Path=/ui" in cookie
    assert re.search(r"Max-Age=28800\b", cookie)
    assert "Secure" not in cookie  # plain http here; https requests get Secure


async def test_behind_https_the_cookie_is_secure(web: httpx.AsyncClient) -> None:
    form = await web.get("https://test/ui/sign-in")
    answer = await web.post(
        "https://test/ui/sign-in",
        data={"token": "alice-token", "csrf": csrf_of(form.text), "next": "/ui"},
    )
    assert answer.status_code == 303
    assert "Secure" in answer.headers["set-cookie"]


async def test_a_wrong_token_or_a_forged_form_does_not_sign_in(web: httpx.AsyncClient) -> None:
    form = await web.get("/ui/sign-in")
    wrong = await web.post(
        "/ui/sign-in", data={"token": "nobody", "csrf": csrf_of(form.text), "next": "/ui"}
    )
    assert wrong.status_code == 401
    assert "the token is not known" in wrong.text
    web.cookies.clear()
    forged = await web.post("/ui/sign-in", data={"token": "alice-token", "csrf": "x"})
    assert forged.status_code == 403
    assert "orch_session" not in forged.headers.get("set-cookie", "")


async def test_a_tampered_or_expired_cookie_is_no_session(
    web: httpx.AsyncClient, ui_clock: ManualClock
) -> None:
    await sign_in(web, "alice-token")
    value = web.cookies["orch_session"]
    payload, tag = value.split(".")
    web.cookies.clear()
    web.cookies.set("orch_session", f"{payload}.{tag[:-2]}AA", path="/ui")
    assert (await web.get("/ui")).status_code == 303
    # The payload says admin's token now; the tag does not fit it.
    import base64
    import json

    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    fields["t"] = "admin-token"
    forged = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    web.cookies.clear()
    web.cookies.set("orch_session", f"{forged}.{tag}", path="/ui")
    assert (await web.get("/ui")).status_code == 303
    # Expired: the expiry inside is in the past (the signature is right).
    from app.ui.session import SessionCodec

    codec = SessionCodec(b"k" * 32, 60)
    _, old = codec.new("alice-token", now=0)
    assert codec.read(old, now=30) is not None
    assert codec.read(old, now=61) is None


async def test_a_change_without_the_csrf_token_is_refused(web: httpx.AsyncClient) -> None:
    await lab(web)
    csrf = await sign_in(web, "alice-token")
    booking = {"bench_id": "rig-2", "start": at(48), "end": at(49), "purpose": "x"}
    refused = await web.post(
        "/ui/reservations", data=booking, headers={"Accept": "application/json"}
    )
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert "CSRF" in refused.json()["detail"]
    other = await web.post("/ui/reservations", data={**booking, "csrf": "not-it"})
    assert other.status_code == 403
    assert "CSRF" in other.text  # a page, for a form without script
    booked = await web.post(
        "/ui/reservations",
        data=booking,
        headers={"Accept": "application/json", "X-CSRF-Token": csrf},
    )
    assert booked.status_code == 201, booked.text
    assert booked.json()["reservation"]["user_id"] == "alice"


async def test_forms_work_without_script_and_show_the_api_errors(web: httpx.AsyncClient) -> None:
    ids = await lab(web)
    csrf = await sign_in(web, "alice-token")
    # Booking a slot that bob holds: the form again, with the 409's detail.
    taken = await web.post(
        "/ui/reservations",
        data={"csrf": csrf, "bench_id": "rig-2", "start": at(25), "end": at(27), "tz": "UTC"},
    )
    assert taken.status_code == 409
    assert "bench &#39;rig-2&#39; is already reserved in that window" in taken.text
    assert ids["later"] in taken.text
    # A free one: booked, and back to the timeline.
    free = await web.post(
        "/ui/reservations",
        data={
            "csrf": csrf,
            "bench_id": "rig-2",
            "start": "2026-11-27T10:00",  # datetime-local: in the form's zone
            "end": "2026-11-27T11:00",
            "tz": "Europe/Berlin",
            "next": "/ui/timeline",
        },
    )
    assert free.status_code == 303
    assert free.headers["location"] == "/ui/timeline"
    mine = (await web.get("/v1/reservations?user_id=me", headers=ALICE)).json()["items"]
    assert any(r["start"] == "2026-11-27T09:00:00Z" for r in mine)
    # Bob's booking is not alice's to cancel: the API's 403, as a page.
    other = await web.post(f"/ui/reservations/{ids['later']}/cancel", data={"csrf": csrf})
    assert other.status_code == 403
    assert "only the owner of a reservation or an admin may change it" in other.text
    # Her own: extended, checked in, released; each redirects back.
    for action, fields in (("extend", {"minutes": "30"}), ("checkin", {}), ("release", {})):
        done = await web.post(
            f"/ui/reservations/{ids['now']}/{action}", data={"csrf": csrf, **fields}
        )
        assert done.status_code == 303, (action, done.text[:300])
    state = (await web.get(f"/v1/reservations/{ids['now']}", headers=ALICE)).json()
    assert state["status"] == "released"
    assert state["checked_in_at"] is not None


async def test_agents_do_not_book_from_the_dashboard_either(web: httpx.AsyncClient) -> None:
    await lab(web)
    csrf = await sign_in(web, "agent1-token")
    page = (await web.get("/ui/timeline")).text
    assert "Book…" not in page
    refused = await web.post(
        "/ui/reservations",
        data={"csrf": csrf, "bench_id": "rig-2", "start": at(50), "end": at(51)},
        headers={"Accept": "application/json"},
    )
    assert refused.status_code == 403
    assert "role 'agent' may not do this" in refused.json()["detail"]


async def test_signing_out_ends_the_session(web: httpx.AsyncClient) -> None:
    csrf = await sign_in(web, "alice-token")
    kept = web.cookies["orch_session"]
    out = await web.post("/ui/sign-out", data={"csrf": csrf})
    assert out.status_code == 303
    assert out.headers["location"] == "/ui/sign-in?signed_out=1"
    assert (
        'orch_session=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    )
    assert (await web.get("/ui")).status_code == 303
    # A copy of the cookie kept from before is refused too (by this process).
    web.cookies.set("orch_session", kept, path="/ui")
    assert (await web.get("/ui")).status_code == 303


async def test_the_events_of_the_session(web: httpx.AsyncClient) -> None:
    await sign_in(web, "alice-token")
    bad = await web.get("/ui/events?type=nonsense.*", headers={"Accept": "text/event-stream"})
    assert bad.status_code == 422
    assert "matches no event type" in bad.json()["detail"]


async def test_the_dashboard_is_not_in_the_openapi_document(web: httpx.AsyncClient) -> None:
    spec = (await web.get("/openapi.json")).json()
    assert not [path for path in spec["paths"] if path.startswith("/ui")]


# --- bench health --------------------------------------------------------------------------

IMG = "<img src=x onerror=alert(1)>"
SCRIPT_JSON = {"Accept": "application/json"}


async def beat(http: httpx.AsyncClient, bench_id: str, health: str, message: str = "") -> None:
    details = {"health": health, "health_message": message}
    answer = await http.post(
        f"/v1/benches/{bench_id}/heartbeats",
        json={"agent_version": "1", "details": details},
        headers=ADMIN,
    )
    assert answer.status_code == 200, answer.text


async def quarantined_lab(http: httpx.AsyncClient) -> dict[str, str]:
    """``lab()``, and rig-3 (online, healthy, with rig-1's capability); alice books rig-1
    by id in four hours; then rig-1's agent fails its health check three times with a
    message like markup: rig-1 is quarantined, and her bookings on it are at risk."""
    ids = await lab(http)
    made = await http.post(
        "/v1/benches",
        json={"bench_id": "rig-3", "name": "HIL rig 3", "type": "hil", "capabilities": ["can"]},
        headers=ADMIN,
    )
    assert made.status_code == 201, made.text
    await beat(http, "rig-3", "ok")
    soon = await http.post(
        "/v1/reservations",
        json={"bench_id": "rig-1", "start": at(4), "end": at(5), "purpose": "soon"},
        headers=ALICE,
    )
    assert soon.status_code == 201, soon.text
    for _ in range(3):
        await beat(http, "rig-1", "failing", IMG)
    bench = (await http.get("/v1/benches/rig-1", headers=ADMIN)).json()
    assert bench["admin_state"] == "quarantined", bench
    return {**ids, "soon": soon.json()["reservation_id"]}


async def test_the_bench_page_shows_health_and_escapes_the_health_message(
    web: httpx.AsyncClient,
) -> None:
    await quarantined_lab(web)
    await sign_in(web, "alice-token")
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    for path in ("/ui/benches/rig-1", "/ui", "/ui/fragments/card/rig-1"):
        html = (await web.get(path)).text
        assert IMG not in html, path
        assert escaped in html, path
    page = (await web.get("/ui/benches/rig-1")).text
    assert "3 failing reports in a row" in page
    assert "Quarantined</b> since" in page
    assert "health-monitor" in page
    assert "consecutive failures" in page  # the evidence
    assert 'id="record"' in page and "Infrastructure-failure rate" in page
    assert "2 other hil benches" in page  # the peers
    # Admins only: the forms are not there for alice.
    assert "Clear quarantine" not in page
    assert "Schedule maintenance" not in page
    card = (await web.get("/ui/fragments/card/rig-1")).text
    assert 'data-admin-state="quarantined"' in card
    assert "Quarantined</b>" in card and "Health check failing</b>" in card
    await sign_in(web, "admin-token")
    admin_page = (await web.get("/ui/benches/rig-1")).text
    assert "Clear quarantine" in admin_page
    assert "Schedule maintenance" in admin_page


async def test_clearing_a_quarantine_needs_the_csrf_token_an_admin_and_the_version(
    web: httpx.AsyncClient,
) -> None:
    await quarantined_lab(web)
    version = str((await web.get("/v1/benches/rig-1", headers=ADMIN)).json()["version"])
    path = "/ui/benches/rig-1/clear-quarantine"
    csrf = await sign_in(web, "alice-token")
    no_token = await web.post(path, data={"version": version}, headers=SCRIPT_JSON)
    assert no_token.status_code == 403
    assert "CSRF" in no_token.json()["detail"]
    not_admin = await web.post(path, data={"csrf": csrf, "version": version}, headers=SCRIPT_JSON)
    assert not_admin.status_code == 403
    assert "role 'user' may not do this" in not_admin.json()["detail"]
    csrf = await sign_in(web, "admin-token")
    assert (await web.post(path, data={"version": version})).status_code == 403
    stale = await web.post(path, data={"csrf": csrf, "version": str(int(version) - 1)})
    assert stale.status_code == 412, stale.text[:300]
    assert (await web.get("/v1/benches/rig-1", headers=ADMIN)).json()["admin_state"] == (
        "quarantined"
    )
    cleared = await web.post(path, data={"csrf": csrf, "version": version})
    assert cleared.status_code == 303
    assert cleared.headers["location"] == "/ui/benches/rig-1"
    bench = (await web.get("/v1/benches/rig-1", headers=ADMIN)).json()
    assert bench["admin_state"] == "active"
    again = await web.post(path, data={"csrf": csrf, "version": str(bench["version"])})
    assert again.status_code == 409
    assert "not quarantined" in again.text


async def test_scheduling_maintenance_needs_the_csrf_token_and_an_admin_and_a_dry_run_changes_nothing(  # noqa: E501
    web: httpx.AsyncClient,
) -> None:
    ids = await lab(web)
    await beat(web, "rig-1", "ok")
    path = "/ui/benches/rig-2/maintenance"
    # Over bob's booking on rig-2 (at 24-26 h): rig-1 has its capability and is free.
    window = {"start": at(23), "end": at(27), "reason": "firmware <b>update</b>", "tz": "UTC"}
    csrf = await sign_in(web, "alice-token")
    assert (await web.post(path, data=window, headers=SCRIPT_JSON)).status_code == 403
    not_admin = await web.post(path, data={**window, "csrf": csrf}, headers=SCRIPT_JSON)
    assert not_admin.status_code == 403
    assert "role 'user' may not do this" in not_admin.json()["detail"]
    csrf = await sign_in(web, "admin-token")
    assert (await web.post(path, data={**window, "dry_run": "true"})).status_code == 403

    dry = await web.post(
        path, data={**window, "csrf": csrf, "dry_run": "true"}, headers=SCRIPT_JSON
    )
    assert dry.status_code == 200, dry.text
    answer = dry.json()
    assert answer["dry_run"] is True
    assert "1 booking moved, 0 cancelled" in answer["message"]
    assert "Dry run: nothing changed." in answer["plan_html"]
    assert "moved to" in answer["plan_html"] and "rig-1" in answer["plan_html"]
    assert "firmware &lt;b&gt;update&lt;/b&gt;" in answer["plan_html"]
    later = (await web.get(f"/v1/reservations/{ids['later']}", headers=BOB)).json()
    assert later["bench_id"] == "rig-2"  # nothing moved
    # Without script, a dry run is the bench page with the plan in its form.
    plain = await web.post(path, data={**window, "csrf": csrf, "dry_run": "true"})
    assert plain.status_code == 200
    assert "Dry run: nothing changed." in plain.text
    assert "Schedule maintenance" in plain.text
    assert (await web.get(f"/v1/reservations/{ids['later']}", headers=BOB)).json()[
        "bench_id"
    ] == "rig-2"

    done = await web.post(
        path, data={**window, "csrf": csrf, "dry_run": "false"}, headers=SCRIPT_JSON
    )
    assert done.status_code == 201, done.text
    assert "maintenance scheduled: 1 booking moved" in done.json()["message"]
    moved = (await web.get(f"/v1/reservations/{ids['later']}", headers=BOB)).json()
    assert moved["bench_id"] == "rig-1"
    # Everybody sees the window on the timeline: a hatched bar with its reason.
    await sign_in(web, "bob-token")
    timeline = (await web.get(f"/ui/timeline?from={at(22)}")).text
    row = timeline[timeline.index('id="row-rig-2"') :]
    row = row[: row.find('class="t-row', 1)]
    assert 'class="bar maint' in row
    assert '<span class="sr">maintenance:</span> firmware &lt;b&gt;update&lt;/b&gt;' in row
    bench = (await web.get("/ui/benches/rig-2")).text
    assert "⚒ firmware &lt;b&gt;update&lt;/b&gt;" in bench
    # Overlapping another window: the service's 409, as a page.
    csrf = await sign_in(web, "admin-token")
    overlap = await web.post(path, data={**window, "csrf": csrf})
    assert overlap.status_code == 409
    assert "a maintenance window overlaps" in overlap.text


async def test_an_at_risk_booking_offers_its_holder_the_alternatives_and_moves(
    web: httpx.AsyncClient,
) -> None:
    ids = await quarantined_lab(web)
    soon = ids["soon"]
    csrf = await sign_in(web, "alice-token")
    timeline = (await web.get("/ui/timeline")).text
    bar = re.search(
        rf'<a class="([^"]*)" href="/ui/reservations/{soon}"[^>]*title="([^"]*)"', timeline
    )
    assert bar, "no bar for the booking"
    assert "at-risk" in bar.group(1).split()
    assert "at risk: the bench is quarantined" in bar.group(2)
    details = (await web.get(f"/ui/reservations/{soon}?fragment=true")).text
    assert 'data-at-risk="quarantined"' in details
    assert 'data-alternative="rig-3"' in details and "Move here" in details
    assert 'data-alternative="rig-2"' not in details  # never heartbeated: not online
    path = f"/ui/reservations/{soon}/swap"
    no_token = await web.post(path, data={"bench_id": "rig-3"}, headers=SCRIPT_JSON)
    assert no_token.status_code == 403
    assert "CSRF" in no_token.json()["detail"]
    # Not bob's to move: no alternatives for him, and the API's 403.
    bob_csrf = await sign_in(web, "bob-token")
    assert "Move here" not in (await web.get(f"/ui/reservations/{soon}?fragment=true")).text
    refused = await web.post(
        path, data={"csrf": bob_csrf, "bench_id": "rig-3"}, headers=SCRIPT_JSON
    )
    assert refused.status_code == 403
    assert "only the owner of a reservation or an admin" in refused.json()["detail"]
    # Alice moves it: on rig-3, at risk no more.
    csrf = await sign_in(web, "alice-token")
    unknown = await web.post(path, data={"csrf": csrf, "bench_id": "rig-9"}, headers=SCRIPT_JSON)
    assert unknown.status_code == 404
    assert "bench 'rig-9' does not exist" in unknown.json()["detail"]
    moved = await web.post(path, data={"csrf": csrf, "bench_id": "rig-3"}, headers=SCRIPT_JSON)
    assert moved.status_code == 200, moved.text
    assert moved.json()["message"] == "moved to rig-3"
    state = (await web.get(f"/v1/reservations/{soon}", headers=ALICE)).json()
    assert state["bench_id"] == "rig-3"
    assert state["at_risk"] is None
    after = (await web.get(f"/ui/reservations/{soon}?fragment=true")).text
    assert "Move here" not in after
    assert "data-at-risk" not in after


HEALTH_EVENTS = [
    "bench.quarantined",
    "reservation.at_risk",
    "reservation.recovered",
    "reservation.swapped",
    "reservation.displaced",
]


async def test_the_live_pages_follow_the_health_events(web: httpx.AsyncClient) -> None:
    """Each page's stream asks for them, the script listens to them, and the parts of the
    page that show benches and reservations refresh on them."""
    ids = await lab(web)
    await sign_in(web, "alice-token")
    for path in (
        "/ui",
        "/ui/timeline",
        "/ui/benches/rig-1",
        f"/ui/reservations/{ids['now']}",
        "/ui/mine",
    ):
        html = (await web.get(path)).text
        body = re.search(
            r'<body data-page="[^"]*" data-live="([^"]*)" data-event-types="([^"]*)"', html
        )
        assert body, path
        live, listened = body.group(1).split(), body.group(2).split()
        fragments = [m.split() for m in re.findall(r'data-on="([^"]*)"', html)]
        for event_type in HEALTH_EVENTS:
            if path.endswith(("/mine", ids["now"])) and event_type.startswith("bench."):
                continue
            assert event_type in listened, (path, event_type)
            assert any(fnmatch.fnmatchcase(event_type, glob) for glob in live), (path, event_type)
            assert any(
                any(fnmatch.fnmatchcase(event_type, glob) for glob in on) for on in fragments
            ), (path, event_type)


async def test_pages_are_gzipped_for_browsers_that_accept_it_and_the_api_is_not(
    web: httpx.AsyncClient,
) -> None:
    await lab(web)
    await sign_in(web, "alice-token")
    zipped = await web.get("/ui/timeline?view=week", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in zipped.headers["vary"]
    assert int(zipped.headers["content-length"]) < len(zipped.content)
    assert "Timeline" in zipped.text
    for refused in ("identity", "gzip;q=0, deflate", "br"):
        plain = await web.get("/ui/timeline?view=week", headers={"Accept-Encoding": refused})
        assert "content-encoding" not in plain.headers, refused
        assert plain.text == zipped.text.replace(csrf_of(zipped.text), csrf_of(plain.text))
    api = await web.get("/v1/benches", headers={**ALICE, "Accept-Encoding": "gzip"})
    assert api.status_code == 200
    assert "content-encoding" not in api.headers


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip, deflate, br", True),
        ("deflate, gzip;q=0.5", True),
        ("GZIP", True),
        ("gzip;q=0", False),
        ("*", True),
        ("*;q=0", False),
        ("gzip;q=0, *", False),
        ("br, *;q=0.1", True),
        ("identity", False),
        ("", False),
        (None, False),
    ],
)
def test_accept_encoding(header: str | None, expected: bool) -> None:
    assert accepts_gzip(header) is expected
