"""The committed OpenAPI document: rendered from the app, compared by a test, written by
``make openapi``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from app.main import create_app
from app.settings import Settings

SNAPSHOT = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def render() -> str:
    document: dict[str, Any] = create_app(Settings()).openapi()
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    if "--write" in sys.argv:
        SNAPSHOT.write_text(render())
        print(f"wrote {SNAPSHOT}")
    else:
        print(render(), end="")
