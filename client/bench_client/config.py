"""Where the client's URL and token come from.

For each of ``url`` and ``token``, the first that is set wins:

1. the argument (``Client(url=..., token=...)``);
2. the environment: ``BENCH_URL``; ``BENCH_TOKEN``, else the file ``BENCH_TOKEN_FILE`` names;
3. the profile: the one named (argument ``profile``, else ``BENCH_PROFILE``), else the
   config file's ``default_profile``, in ``$XDG_CONFIG_HOME/bench-orchestrator/config.toml``
   (``~/.config/bench-orchestrator/config.toml``; ``BENCH_CONFIG`` names another file)::

       default_profile = "lab"

       [profiles.lab]
       url = "https://orchestrator.lab.example"
       token_file = "~/.config/bench-orchestrator/lab.token"   # or: token = "..."

A relative ``token_file`` is relative to the config file's folder.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_CONFIG",
    "ENV_PROFILE",
    "ENV_TOKEN",
    "ENV_TOKEN_FILE",
    "ENV_URL",
    "ClientConfig",
    "ConfigError",
    "Profile",
    "config_path",
    "load_profiles",
    "resolve_config",
]

ENV_URL = "BENCH_URL"
ENV_TOKEN = "BENCH_TOKEN"
ENV_TOKEN_FILE = "BENCH_TOKEN_FILE"
ENV_PROFILE = "BENCH_PROFILE"
ENV_CONFIG = "BENCH_CONFIG"


class ConfigError(Exception):
    """No URL anywhere, an unknown profile, an unreadable token file, a broken config file."""


@dataclass(frozen=True)
class Profile:
    name: str
    url: str | None = None
    token: str | None = None
    token_file: Path | None = None

    def read_token(self) -> str | None:
        if self.token is not None:
            return self.token
        if self.token_file is not None:
            return _read_token_file(self.token_file, f"profile {self.name!r}")
        return None


@dataclass(frozen=True)
class ClientConfig:
    """What a client connects with: ``url`` without a trailing slash; ``token`` may be None
    (every ``/v1`` call then answers 401). ``profile``: the profile used, if any."""

    url: str
    token: str | None
    profile: str | None = None


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base).expanduser() / "bench-orchestrator" / "config.toml"


def _read_token_file(path: Path, what: str) -> str:
    try:
        token = path.expanduser().read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read token file {path}: {exc.strerror}") from exc
    if not token:
        raise ConfigError(f"{what}: token file {path} is empty")
    return token


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def load_profiles(
    path: Path | None = None, env: Mapping[str, str] | None = None
) -> tuple[dict[str, Profile], str | None]:
    """The config file's profiles and its ``default_profile`` (both empty when no file)."""
    path = config_path(env) if path is None else path
    data = _load(path)
    raw = data.get("profiles", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [profiles] must be a table")
    profiles: dict[str, Profile] = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [profiles.{name}] must be a table")
        token_file = table.get("token_file")
        token_path: Path | None = None
        if token_file is not None:
            token_path = Path(str(token_file)).expanduser()
            if not token_path.is_absolute():
                token_path = path.parent / token_path
        url = table.get("url")
        token = table.get("token")
        profiles[name] = Profile(
            name,
            url=None if url is None else str(url),
            token=None if token is None else str(token),
            token_file=token_path,
        )
    default = data.get("default_profile")
    return profiles, None if default is None else str(default)


def resolve_config(
    url: str | None = None,
    token: str | None = None,
    *,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> ClientConfig:
    """Arguments, then the environment, then the profile (see the module's doc)."""
    env = os.environ if env is None else env
    url = url or env.get(ENV_URL) or None
    if token is None and env.get(ENV_TOKEN):
        token = env[ENV_TOKEN]
    if token is None and env.get(ENV_TOKEN_FILE):
        token = _read_token_file(Path(env[ENV_TOKEN_FILE]), ENV_TOKEN_FILE)
    used: str | None = None
    wanted = profile or env.get(ENV_PROFILE) or None
    if url is None or token is None or wanted is not None:
        path = config_path(env) if config_file is None else config_file
        profiles, default = load_profiles(path, env)
        name = wanted or default
        if name is not None:
            chosen = profiles.get(name)
            if chosen is None:
                if wanted is not None or url is None:
                    known = ", ".join(sorted(profiles)) or "none"
                    raise ConfigError(f"no profile {name!r} in {path} (profiles: {known})")
            else:
                used = name
                url = url or chosen.url
                if token is None:
                    token = chosen.read_token()
    if not url:
        raise ConfigError(
            f"no service URL: pass url=, set {ENV_URL}, or add a profile to {config_path(env)}"
        )
    return ClientConfig(url=url.rstrip("/"), token=token, profile=used)
