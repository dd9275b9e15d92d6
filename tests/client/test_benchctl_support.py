"""Helpers for the benchctl tests (no tests here): run benchctl as a subprocess with its
own environment, poll with a deadline, register benches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench_client import Client

from tests.client.cli_forker import FORKER
from tests.client.conftest import LiveApi

T = TypeVar("T")
CLI_TIMEOUT_S = 60.0
COMMAND = [sys.executable, "-m", "bench_client.cli.main"]


@dataclass
class Benchctl:
    """benchctl against one service, with a private XDG_CONFIG_HOME and a fixed TZ."""

    api: LiveApi
    home: Path
    tz: str = "Europe/Berlin"

    def env(self, token: str | None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "CI_"))}
        env |= {"XDG_CONFIG_HOME": str(self.home / "xdg"), "HOME": str(self.home), "TZ": self.tz}
        if token is not None:
            env |= {"BENCH_URL": self.api.url, "BENCH_TOKEN": self.api.tokens[token]}
        return env | extra

    def __call__(
        self, *args: str, token: str | None = "USER_TOKEN", **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """A process of its own per call, forked from one that imported the CLI already."""
        return FORKER.run(args, self.env(token, **extra), CLI_TIMEOUT_S)

    def start(
        self, *args: str, token: str | None = "USER_TOKEN", **extra: str
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*COMMAND, *args],
            env=self.env(token, **extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def json(self, *args: str, token: str | None = "USER_TOKEN") -> Any:
        done = self("-o", "json", *args, token=token)
        assert done.returncode == 0, done.stderr + done.stdout
        return json.loads(done.stdout)

    def client(self, token: str = "USER_TOKEN") -> Client:
        return Client(self.api.url, self.api.tokens[token], max_retries=2)


def poll(what: str, probe: Callable[[], T | None], deadline_s: float = 20.0) -> T:
    """``probe()`` until it answers something other than None (or False), else fail."""
    deadline = time.monotonic() + deadline_s
    while True:
        found = probe()
        if found is not None and found is not False:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def register(
    api: LiveApi, bench_id: str, capabilities: Sequence[str] = ("can-bus", "arm64")
) -> None:
    with Client(api.url, api.tokens["ADMIN_TOKEN"]) as admin:
        admin.create_bench(bench_id, f"HIL {bench_id}", "hil", capabilities=capabilities)


def finish(process: subprocess.Popen[str], timeout_s: float = 30.0) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout_s)
    return process.returncode, out, err
