"""Fixtures of the dashboard's tests: an in-process app on an in-memory store (server-side
tests), and one live server with one browser for the whole session (browser tests)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from app.clock import ManualClock
from app.main import create_app
from app.settings import Settings
from app.store.base import Store
from tests.conftest import START, store_settings
from tests.support.api_server import (
    START_DEADLINE_S,
    STOP_DEADLINE_S,
    ApiServer,
    settings_env,
    spawn_api,
)
from tests.ui.browser import CHROMIUM_ARGS, SCREENSHOTS, chromium_path

CSRF_INPUT = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def ui_settings(tmp_path: Path, tokens_file: Path) -> Settings:
    return store_settings("sqlite-memory", tmp_path, None, tokens_file)


@pytest.fixture
async def ui_store(ui_settings: Settings) -> AsyncIterator[Store]:
    from app.store.factory import open_store

    opened = await open_store(ui_settings)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def ui_clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def web(
    ui_settings: Settings, ui_store: Store, ui_clock: ManualClock
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app, as a browser is: it keeps cookies, follows no redirect."""
    app = create_app(ui_settings, store=ui_store, clock=ui_clock)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


def csrf_of(html: str) -> str:
    found = CSRF_INPUT.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def sign_in(http: httpx.AsyncClient, token: str) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    form = await http.get("/ui/sign-in")
    assert form.status_code == 200
    answer = await http.post(
        "/ui/sign-in", data={"token": token, "csrf": csrf_of(form.text), "next": "/ui"}
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui"
    page = await http.get("/ui")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory, tokens_file: Path) -> Iterator[ApiServer]:
    """One ``orchestrator serve`` for the browser tests, on a SQLite file: housekeeping
    every 0.2 s (liveness shows at once), streams polled every 50 ms, no rate limit."""
    folder = tmp_path_factory.mktemp("ui-server")
    settings = store_settings("sqlite-file", folder, None, tokens_file).model_copy(
        update={"housekeeping_interval_s": 0.2, "event_poll_ms": 50}
    )
    server = spawn_api(settings_env(settings), folder / "api.log")
    try:
        try:
            ready = httpx.get(f"{server.url}/readyz", timeout=START_DEADLINE_S)
        except httpx.TransportError as error:
            raise RuntimeError(f"the API did not start:\n{server.log_text()[-4000:]}") from error
        assert ready.status_code == 200, ready.text
        yield server
    finally:
        server.kill()
        server.process.wait(timeout=STOP_DEADLINE_S)


@pytest.fixture(scope="session")
def api(live_server: ApiServer) -> Iterator[httpx.Client]:
    """The live server's API, for the data the browser is to show."""
    with httpx.Client(base_url=live_server.url, timeout=10) as http:
        yield http


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One browser for the browser tests. Module-scoped, not session: Playwright's sync API
    runs an event loop of its own while it is open, and the async tests (pytest-asyncio)
    of another module cannot run inside it."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


ZONE = "Europe/Berlin"  # not UTC: times are shown in the browser's zone


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    made = browser.new_context(
        viewport={"width": 1280, "height": 800}, timezone_id=ZONE, locale="en-GB"
    )
    made.set_default_timeout(10_000)
    try:
        yield made
    finally:
        made.close()


def signed_in_page(context: BrowserContext, url: str, token: str) -> Page:
    """A page of ``context``, signed in through the form with ``token``."""
    page = context.new_page()
    page.goto(f"{url}/ui")
    page.wait_for_url("**/ui/sign-in**")
    page.fill("#token", token)
    page.click("form button[type=submit]")
    page.wait_for_url(f"{url}/ui")
    return page


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
