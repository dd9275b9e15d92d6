"""The API console: Swagger UI at /docs (from fastapi-offline) and ReDoc at /redoc, both
from assets an installed package ships, so an air-gapped lab sees them too."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html
from starlette.responses import HTMLResponse

# Where fastapi-offline mounts its assets.
ASSETS = "/static-offline-docs"
# ReDoc's sidebar shows a badge fetched from cdn.redoc.ly: the page's policy keeps its
# images local, so the console never reaches outside.
_LOCAL_IMAGES = "img-src 'self' data:"


def install_redoc(app: FastAPI, path: str = "/redoc") -> None:
    assert app.openapi_url is not None

    @app.get(path, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=str(app.openapi_url),
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = _LOCAL_IMAGES
        return page
