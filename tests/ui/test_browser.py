"""The dashboard in a real browser (Chromium, driven by Playwright) against a live server
with real data: sign in, live liveness, booking from the timeline, a 409, cancelling, a
run going to `passed`, a failing bench quarantined and its bookings moving (by
themselves, or by their holder's hand), an admin clearing the quarantine, CSRF, signing
out. Each page's screenshot is left in var/screenshots/.

One server and one browser for the whole session (a context of its own per test, so no
test leans on another's session); nothing sleeps: Playwright's expectations wait.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import BrowserContext, Dialog, Page, expect

from tests.conftest import ADMIN, AGENT1, AGENT2, ALICE, BOB, CI
from tests.support.api_server import ApiServer
from tests.ui.conftest import ZONE, screenshot, signed_in_page

pytestmark = [pytest.mark.system, pytest.mark.xdist_group("ui-browser")]

LIVE_S = 10_000  # ms: how long a change may take to show on a page


def register(api: httpx.Client, bench_id: str, name: str | None = None) -> None:
    answer = api.post(
        "/v1/benches",
        json={
            "bench_id": bench_id,
            "name": name or f"HIL {bench_id}",
            "type": "hil",
            "capabilities": ["can-bus", "arm64"],
        },
        headers=ADMIN,
    )
    assert answer.status_code in (201, 409), answer.text


def instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_input(moment: datetime) -> str:
    """A datetime-local value, as the browser in ZONE shows that instant."""
    return moment.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%dT%H:%M")


def live(page: Page) -> None:
    """The page's event stream is open: changes from now on reach it."""
    expect(page.locator("#live")).to_have_attribute("data-state", "on", timeout=LIVE_S)


def report(api: httpx.Client, bench_id: str, health: str, message: str) -> None:
    """A heartbeat carrying a health report, as the bench's agent sends it (as an admin)."""
    answer = api.post(
        f"/v1/benches/{bench_id}/heartbeats",
        json={
            "agent_version": "1.0.0",
            "details": {"health": health, "health_message": message},
        },
        headers=ADMIN,
    )
    assert answer.status_code == 200, answer.text


def errors_of(page: Page) -> list[str]:
    found: list[str] = []
    page.on("pageerror", lambda error: found.append(str(error)))
    return found


def test_the_overview_shows_a_bench_turning_online_without_a_reload(
    context: BrowserContext, live_server: ApiServer, api: httpx.Client
) -> None:
    register(api, "rig-1", "HIL rig 1")
    page = signed_in_page(context, live_server.url, "alice-token")
    errors = errors_of(page)
    card = page.locator("#card-rig-1")
    expect(card).to_contain_text("HIL rig 1")
    liveness = card.locator("[data-liveness]")
    expect(liveness).not_to_have_attribute("data-liveness", "online")
    live(page)
    page.evaluate("window.notReloaded = true")

    beat = api.post("/v1/benches/rig-1/heartbeats", json={"agent_version": "1.0.0"}, headers=AGENT1)
    assert beat.status_code == 200, beat.text

    expect(page.locator("#card-rig-1 [data-liveness]")).to_have_attribute(
        "data-liveness", "online", timeout=LIVE_S
    )
    expect(page.locator("#card-rig-1")).to_contain_text("online")
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator('[data-figure="online"]')).to_have_text(
        re.compile(r"^[1-9]\d*/"), timeout=LIVE_S
    )
    screenshot(page, "overview")
    assert errors == []


def test_booking_from_the_timeline_a_conflict_and_cancelling(
    context: BrowserContext, live_server: ApiServer, api: httpx.Client
) -> None:
    register(api, "rig-3", "HIL rig 3")
    page = signed_in_page(context, live_server.url, "alice-token")
    errors = errors_of(page)
    page.goto(f"{live_server.url}/ui/timeline")
    live(page)

    # A click on a free slot opens the booking form, prefilled with the bench and the time.
    lane = page.locator('.t-lane[data-lane="rig-3"]')
    box = lane.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2)
    dialog = page.locator("#book-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator('select[name="bench_id"]')).to_have_value("rig-3")
    expect(dialog.locator('input[name="start"]')).not_to_have_value("")
    dialog.locator('input[name="purpose"]').fill("browser booking")
    dialog.locator('button[type="submit"]').click()
    bar = page.locator("#row-rig-3 a.bar", has_text="browser booking")
    expect(bar).to_have_count(1)
    expect(dialog).to_be_hidden()
    mine = api.get("/v1/reservations", params={"bench_id": "rig-3"}, headers=ALICE).json()
    [booked] = [r for r in mine["items"] if r["purpose"] == "browser booking"]
    assert booked["user_id"] == "alice"
    screenshot(page, "timeline")

    # Someone else's slot: the API's 409 detail shows in the form. From the keyboard.
    start = datetime.fromisoformat(booked["start"]) + timedelta(minutes=30)
    page.locator('a[data-book="rig-3"]').focus()
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    dialog.locator('input[name="start"]').fill(local_input(start))
    dialog.locator('input[name="end"]').fill(local_input(start + timedelta(hours=1)))
    dialog.locator('input[name="purpose"]').fill("overlapping")
    dialog.locator('button[type="submit"]').click()
    error = dialog.locator(".form-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("bench 'rig-3' is already reserved in that window")
    screenshot(page, "timeline-conflict")
    dialog.locator("[data-close]").click()
    expect(dialog).to_be_hidden()

    # The bar's details, and cancelling it there.
    bar.click()
    details = page.locator("#details-dialog")
    expect(details).to_be_visible()
    expect(details).to_contain_text("browser booking")
    screenshot(page, "reservation")
    page.once("dialog", lambda question: question.accept())
    details.get_by_role("button", name="Cancel").click()
    expect(details.locator(".reservation")).to_contain_text("cancelled")
    expect(page.locator("#row-rig-3 a.bar", has_text="browser booking")).to_have_count(0)
    cancelled = api.get(f"/v1/reservations/{booked['reservation_id']}", headers=ALICE).json()
    assert cancelled["status"] == "cancelled"
    assert errors == []


def test_a_run_progresses_to_passed_on_its_page_live(
    context: BrowserContext, live_server: ApiServer, api: httpx.Client
) -> None:
    register(api, "rig-2", "HIL rig 2")
    now = datetime.now(UTC)
    held = api.post(
        "/v1/reservations",
        json={
            "bench_id": "rig-2",
            "start": instant(now),
            "end": instant(now + timedelta(hours=1)),
            "purpose": "CI",
        },
        headers=ALICE,
    )
    assert held.status_code == 201, held.text
    run = api.post(
        "/v1/executions",
        json={
            "reservation_id": held.json()["reservation_id"],
            "commit_sha": "9fceb02",
            "tasks": [{"type": "flash"}, {"type": "test"}],
        },
        headers=CI,
    )
    assert run.status_code == 201, run.text
    execution_id = run.json()["execution_id"]
    page = signed_in_page(context, live_server.url, "bob-token")
    errors = errors_of(page)
    page.goto(f"{live_server.url}/ui/runs/{execution_id}")
    status = page.locator("#run-status")
    expect(status).to_have_attribute("data-status", "queued")
    live(page)
    page.evaluate("window.notReloaded = true")

    for result in ({"flashed": True}, {"passed": 112}):
        task = api.post("/v1/benches/rig-2/tasks/claim", headers=AGENT2)
        assert task.status_code == 200, task.text
        task_id = task.json()["task_id"]
        row = page.locator(f'tr[data-task="{task_id}"]')
        expect(row).to_have_attribute("data-status", "leased", timeout=LIVE_S)
        expect(status).to_have_attribute("data-status", "running", timeout=LIVE_S)
        done = api.post(f"/v1/tasks/{task_id}/complete", json={"result": result}, headers=AGENT2)
        assert done.status_code == 200, done.text

    expect(status).to_have_attribute("data-status", "passed", timeout=LIVE_S)
    expect(page.locator("tr[data-task]")).to_have_count(2)
    for row in page.locator("tr[data-task]").all():
        expect(row).to_have_attribute("data-status", "succeeded")
    expect(page.locator(".run")).to_contain_text('"passed": 112')
    assert page.evaluate("window.notReloaded") is True
    screenshot(page, "run")
    assert errors == []


def test_every_page_for_a_person_at_desk_and_phone_width(
    context: BrowserContext, live_server: ApiServer, api: httpx.Client
) -> None:
    register(api, "rig-2", "HIL rig 2")
    register(api, "rig-4", "<script>alert(1)</script>")
    now = datetime.now(UTC)
    api.post(
        "/v1/reservations",
        json={
            "bench_id": "rig-4",
            "start": instant(now + timedelta(hours=2)),
            "end": instant(now + timedelta(hours=5)),
            "purpose": "<b>not bold</b>",
        },
        headers=BOB,
    )
    page = signed_in_page(context, live_server.url, "alice-token")
    errors = errors_of(page)
    dialogs: list[str] = []

    def note(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", note)
    for name, path, heading in (
        ("bench", "/ui/benches/rig-2", "HIL rig 2"),
        ("runs", "/ui/runs", "Runs"),
        ("mine", "/ui/mine", "Mine"),
        ("timeline-week", "/ui/timeline?view=week", "Timeline"),
    ):
        page.goto(f"{live_server.url}{path}")
        expect(page.locator("h1").first).to_contain_text(heading)
        screenshot(page, name)
    # A bench named <script> is text, and so is a purpose with markup.
    page.goto(f"{live_server.url}/ui/timeline")
    expect(page.locator("#row-rig-4 .t-name")).to_have_text("<script>alert(1)</script>")
    expect(page.locator("#row-rig-4 a.bar")).to_contain_text("<b>not bold</b>")
    assert dialogs == []
    # The browser's zone, UTC on hover.
    first_time = page.locator(".range-label time").first
    expect(first_time).to_have_attribute("title", re.compile(r"^UTC: \d{4}-\d\d-\d\d \d\d:\d\d"))

    phone = context.browser
    assert phone is not None
    small = phone.new_context(viewport={"width": 390, "height": 844}, timezone_id=ZONE)
    try:
        small_page = signed_in_page(small, live_server.url, "alice-token")
        expect(small_page.locator("#board")).to_be_visible()
        width = small_page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the overview is {width} px wide on a phone"
        screenshot(small_page, "overview-phone")
    finally:
        small.close()
    assert errors == []


def test_a_failing_bench_is_quarantined_its_bookings_move_and_an_admin_clears_it(
    context: BrowserContext, live_server: ApiServer, api: httpx.Client
) -> None:
    # Two equivalent benches, online and healthy, with a capability of their own.
    for bench_id in ("hq-1", "hq-2"):
        made = api.post(
            "/v1/benches",
            json={
                "bench_id": bench_id,
                "name": f"Health rig {bench_id[-1]}",
                "type": "hil",
                "capabilities": ["health-lab"],
            },
            headers=ADMIN,
        )
        assert made.status_code == 201, made.text
        report(api, bench_id, "ok", "all good")
    now = datetime.now(UTC).replace(microsecond=0)
    by_capability = api.post(
        "/v1/reservations",
        json={
            "capabilities": ["health-lab"],
            "start": instant(now + timedelta(hours=1)),
            "end": instant(now + timedelta(hours=2)),
            "purpose": "by capability",
        },
        headers=ALICE,
    )
    assert by_capability.status_code == 201, by_capability.text
    # The bench it landed on is the one to fail; its bench-mate is the spare.
    bad = by_capability.json()["bench_id"]
    good = "hq-2" if bad == "hq-1" else "hq-1"
    by_bench = api.post(
        "/v1/reservations",
        json={
            "bench_id": bad,
            "start": instant(now + timedelta(hours=3)),
            "end": instant(now + timedelta(hours=4)),
            "purpose": "by bench",
        },
        headers=ALICE,
    )
    assert by_bench.status_code == 201, by_bench.text
    overview = signed_in_page(context, live_server.url, "alice-token")
    timeline = context.new_page()
    errors = {"overview": errors_of(overview), "timeline": errors_of(timeline)}
    timeline.goto(f"{live_server.url}/ui/timeline")
    moving = timeline.locator("a.bar", has_text="by capability")
    staying = timeline.locator("a.bar", has_text="by bench")
    expect(timeline.locator(f"#row-{bad} a.bar", has_text="by capability")).to_have_count(1)
    expect(overview.locator(f"#card-{bad}")).to_have_attribute("data-admin-state", "active")
    for page in (overview, timeline):
        live(page)
        page.evaluate("window.notReloaded = true")

    for _ in range(3):
        report(api, bad, "failing", "probe: CAN bus timeout on can0")

    card = overview.locator(f"#card-{bad}")
    expect(card).to_have_attribute("data-admin-state", "quarantined", timeout=LIVE_S)
    expect(card.locator('[data-alert="quarantined"]')).to_contain_text("Quarantined")
    expect(card.locator('[data-alert="health"]')).to_contain_text("CAN bus timeout")
    # The booking by capability moved to the spare: its bar changed rows, live.
    expect(timeline.locator(f"#row-{good} a.bar", has_text="by capability")).to_have_count(
        1, timeout=LIVE_S
    )
    expect(moving).to_have_count(1)
    # The one booked by bench stays, marked, with the reason in its title.
    expect(staying).to_have_class(re.compile(r"\bat-risk\b"), timeout=LIVE_S)
    expect(staying).to_have_attribute(
        "title", re.compile("at risk: the bench is quarantined"), timeout=LIVE_S
    )
    expect(timeline.locator(f"#row-{bad} .t-states")).to_contain_text("quarantined")
    for page in (overview, timeline):
        assert page.evaluate("window.notReloaded") is True
    screenshot(timeline, "timeline-at-risk")
    expect(overview.locator('[data-figure="maintenance"]')).to_have_text(
        re.compile(r"/ [1-9]"), timeout=LIVE_S
    )
    screenshot(overview, "overview-quarantined")

    # Its holder moves it by hand: the details list the spare.
    staying.click()
    details = timeline.locator("#details-dialog")
    expect(details.locator("[data-at-risk]")).to_contain_text("quarantined")
    alternative = details.locator(f'[data-alternative="{good}"]')
    expect(alternative).to_be_visible()
    screenshot(timeline, "reservation-alternatives")
    alternative.get_by_role("button", name="Move here").click()
    expect(details.locator(".reservation h2")).to_contain_text(good)
    expect(details.locator("[data-at-risk]")).to_have_count(0)
    expect(timeline.locator(f"#row-{good} a.bar", has_text="by bench")).to_have_count(1)
    expect(timeline.locator(f"#row-{bad} a.bar")).to_have_count(0)
    details.locator("[data-close]").click()

    # An admin reads the bench's health and clears the quarantine.
    browser = context.browser
    assert browser is not None
    admin_context = browser.new_context(
        viewport={"width": 1280, "height": 800}, timezone_id=ZONE, locale="en-GB"
    )
    admin_context.set_default_timeout(10_000)
    try:
        admin = signed_in_page(admin_context, live_server.url, "admin-token")
        errors["bench"] = errors_of(admin)
        admin.goto(f"{live_server.url}/ui/benches/{bad}")
        health = admin.locator("#health")
        expect(health.locator(".health-message")).to_have_text("probe: CAN bus timeout on can0")
        expect(health).to_contain_text("3 failing reports in a row")
        expect(health.locator("#quarantine")).to_contain_text("health-monitor")
        expect(health.locator("#record")).to_contain_text("Uptime")
        live(admin)
        form = health.locator("form.maintenance-form")
        form.locator('input[name="reason"]').fill("swap the CAN transceiver")
        form.get_by_role("button", name="Dry run").click()
        expect(form.locator(".form-result")).to_contain_text("Dry run: nothing changed.")
        screenshot(admin, "bench-health")
        admin.once("dialog", lambda question: question.accept())
        health.get_by_role("button", name="Clear quarantine").click()
        expect(admin.locator("#admin-state")).to_contain_text("active", timeout=LIVE_S)
        expect(admin.locator("#quarantine")).to_have_count(0)
        # What was typed in the maintenance form is kept across the refresh.
        expect(admin.locator('form.maintenance-form input[name="reason"]')).to_have_value(
            "swap the CAN transceiver"
        )
        bench = api.get(f"/v1/benches/{bad}", headers=ADMIN).json()
        assert bench["admin_state"] == "active"
        # And books it for maintenance: every viewer's timeline shows the window.
        admin.once("dialog", lambda question: question.accept())
        form.get_by_role("button", name="Schedule").click()
        expect(form.locator(".form-result")).to_contain_text("Scheduled.")
        expect(admin.locator("#maintenance-windows")).to_contain_text("swap the CAN transceiver")
        screenshot(admin, "bench-health-cleared")
    finally:
        admin_context.close()
    window = timeline.locator(f"#row-{bad} a.bar.maint")
    expect(window).to_contain_text("maintenance: swap the CAN transceiver", timeout=LIVE_S)
    expect(window).to_have_attribute("title", re.compile("^Maintenance: swap the CAN"))
    screenshot(timeline, "timeline-maintenance")
    expect(overview.locator(f"#card-{bad}")).to_have_attribute(
        "data-admin-state", "active", timeout=LIVE_S
    )
    expect(overview.locator(f"#card-{bad}")).to_contain_text("swap the CAN transceiver")
    assert errors == {"overview": [], "timeline": [], "bench": []}


def test_a_change_without_the_csrf_token_is_refused(
    context: BrowserContext, live_server: ApiServer, api: httpx.Client
) -> None:
    register(api, "rig-3", "HIL rig 3")
    page = signed_in_page(context, live_server.url, "alice-token")
    start = datetime.now(UTC) + timedelta(days=2)
    status, body = page.evaluate(
        """async ([start, end]) => {
            const answer = await fetch("/ui/reservations", {
                method: "POST",
                headers: { Accept: "application/json" },
                body: new URLSearchParams({ bench_id: "rig-3", start: start, end: end }),
            });
            return [answer.status, await answer.json()];
        }""",
        [instant(start), instant(start + timedelta(hours=1))],
    )
    assert status == 403
    assert "CSRF" in body["detail"]
    taken = api.get("/v1/reservations", params={"bench_id": "rig-3"}, headers=ALICE).json()
    assert not [r for r in taken["items"] if r["start"].startswith(instant(start)[:16])]


def test_signing_out_ends_the_session(context: BrowserContext, live_server: ApiServer) -> None:
    page = signed_in_page(context, live_server.url, "admin-token")
    page.locator("form.sign-out button").click()
    page.wait_for_url("**/ui/sign-in?signed_out=1")
    expect(page.locator(".notice")).to_contain_text("signed out")
    screenshot(page, "sign-in")
    page.goto(f"{live_server.url}/ui/mine")
    page.wait_for_url(re.compile(r".*/ui/sign-in\?next=%2Fui%2Fmine$"))
    expect(page.locator("#token")).to_be_visible()
