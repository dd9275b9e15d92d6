"""client/bench_client/models.py is what tools/client_models.py makes from the committed
openapi/openapi.json (as tests/unit/test_openapi_snapshot.py keeps the spec in sync)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "client" / "bench_client" / "models.py"


def test_committed_client_models_match_the_spec(tmp_path: Path) -> None:
    fresh = tmp_path / "models.py"
    with fresh.open("w") as out:
        subprocess.run(
            [sys.executable, str(ROOT / "tools" / "client_models.py")],
            stdout=out,
            check=True,
            cwd=ROOT,
            timeout=120,
        )
    assert fresh.read_text() == MODELS.read_text(), (
        "client/bench_client/models.py is stale: run `make client-models`"
    )
