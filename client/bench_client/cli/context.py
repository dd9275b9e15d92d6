"""What every benchctl command starts from: the global options (``Settings``, on the root
context) and a Client made from them (``--url``, ``--token-file``, ``--profile``, else the
environment and the config file, as bench_client.config resolves them)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import typer

from bench_client import Client
from bench_client.cli.output import Output

__all__ = [
    "ClickException",
    "Settings",
    "UsageError",
    "open_client",
    "read_token",
    "settings_of",
    "usage_error",
]


@dataclass
class Settings:
    url: str | None
    token_file: Path | None
    profile: str | None
    out: Output


def _click_error(name: str) -> type[Exception]:
    """Typer's click exception classes (vendored by newer Typer, click's own before)."""
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == name and issubclass(cls, Exception):
            return cls
    raise ImportError(f"typer has no {name}")


UsageError = _click_error("UsageError")
ClickException = _click_error("ClickException")


def usage_error(ctx: typer.Context, message: str) -> Exception:
    """A usage error of this command (benchctl prints it with a pointer to its --help)."""
    return UsageError(message, ctx)


def settings_of(ctx: typer.Context) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


def read_token(path: Path) -> str:
    try:
        token = path.expanduser().read_text().strip()
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="--token-file"
        ) from exc
    if not token:
        raise typer.BadParameter(f"{path} is empty", param_hint="--token-file")
    return token


@contextmanager
def open_client(settings: Settings) -> Iterator[Client]:
    token = read_token(settings.token_file) if settings.token_file else None
    client = Client(url=settings.url, token=token, profile=settings.profile)
    try:
        yield client
    finally:
        client.close()
