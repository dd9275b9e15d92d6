"""The API console works in an air-gapped lab: every asset comes from the app itself."""

from __future__ import annotations

import re

import httpx
import pytest


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_console_loads_nothing_from_outside(client: httpx.AsyncClient, page: str) -> None:
    html = await client.get(page)
    assert html.status_code == 200
    assert "text/html" in html.headers["content-type"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert assets, html.text
    external = [asset for asset in assets if re.match(r"(https?:)?//", asset)]
    assert external == []
    for asset in assets:
        served = await client.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 1000, asset


async def test_redoc_keeps_its_badge_image_local(client: httpx.AsyncClient) -> None:
    # ReDoc's sidebar badge is an <img> on cdn.redoc.ly; the page's policy blocks it.
    page = await client.get("/redoc")
    assert page.headers["content-security-policy"] == "img-src 'self' data:"


async def test_try_it_out_calls_the_server_that_served_the_console(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    assert document["servers"] == [{"url": "/", "description": "this server"}]
