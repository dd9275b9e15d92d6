"""The browser of the dashboard's tests: Playwright driving Debian's Chromium.

Playwright's own browser download cannot work on our machines, so it launches
``/usr/bin/chromium`` (or ``$CHROMIUM``), which ``make browser`` installs from the
distribution's packages. Missing, the tests fail saying so: they never skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "var" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"Chromium is not installed at {path}: the browser tests need it. Run "
            "`make browser` (it installs Debian's chromium package), or set CHROMIUM to a "
            "Chromium binary.",
            pytrace=False,
        )
    return path
