"""`make bench`: start moto's server (as the tests do) and run every benchmark script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.moto_server import running_moto_server

HERE = Path(__file__).resolve().parent


def main() -> int:
    with running_moto_server() as endpoint:
        status = subprocess.call(
            [sys.executable, "-m", "bench.api_throughput", "--dynamodb-endpoint", endpoint]
        )
        for script in sorted(HERE.glob("*.py")):
            if script.stem in ("run_all", "api_throughput", "__init__"):
                continue
            status |= subprocess.call(
                [sys.executable, "-m", f"bench.{script.stem}"],
                env={**os.environ, "ORCH_BENCH_DYNAMODB_ENDPOINT": endpoint},
            )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
