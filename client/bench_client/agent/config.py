"""The agent's TOML configuration, validated into one-line errors.

url = "http://127.0.0.1:8000"
token_file = "agent-token"        # relative paths: from the config file's directory
bench_id = "rig-1"
work_dir = "/var/lib/bench-agent"

[tasks.flash]
command = ["{config_dir}/handlers/flash.sh", "{params.image}"]
timeout_s = 600
env = { FLASH_PORT = "/dev/ttyUSB0" }
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_CONFIG = Path("/etc/bench-agent/agent.toml")

# The placeholders a command may hold; any other text, braces included, stays as it is.
PLACEHOLDER = re.compile(
    r"\{(task_id|execution_id|commit_sha|task_type|attempt|config_dir|params\.([A-Za-z0-9_][A-Za-z0-9_.-]*))\}"
)
BENCH_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class ConfigError(Exception):
    """The configuration cannot be used; ``str()`` is one line naming the file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Command = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]


class HandlerConfig(_Strict):
    """``[tasks.<type>]``: how this bench runs tasks of one type."""

    command: Command
    timeout_s: Annotated[float, Field(gt=0, le=86400)] | None = None
    env: dict[str, str] = {}

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not name or "=" in name or "\0" in name:
                raise ValueError(f"{name!r} is not an environment variable name")
        return env


class HealthConfig(_Strict):
    """``[health]``: a command whose exit status says whether the bench is fit for work."""

    command: Command
    interval_s: Annotated[float, Field(gt=0, le=86400)] = 60.0
    timeout_s: Annotated[float, Field(gt=0, le=3600)] | None = None

    @property
    def effective_timeout_s(self) -> float:
        return self.timeout_s if self.timeout_s is not None else min(self.interval_s, 30.0)


class AgentConfig(_Strict):
    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    token_file: Path
    bench_id: Annotated[str, Field(pattern=BENCH_ID.pattern)]
    work_dir: Path
    agent_version: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    grace_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    kill_grace_s: Annotated[float, Field(ge=0, le=600)] = 5.0
    poll_s: Annotated[float, Field(gt=0, le=3600)] | None = None
    health: HealthConfig | None = None
    tasks: dict[Annotated[str, Field(min_length=1, max_length=100)], HandlerConfig] = {}
    config_dir: Path = Path(".")

    def token(self) -> str:
        """The bearer token, read from ``token_file`` now (so a rotated file is picked up)."""
        try:
            token = self.token_file.read_text().strip()
        except OSError as error:
            raise ConfigError(f"token_file {self.token_file}: {error.strerror}") from error
        if not token:
            raise ConfigError(f"token_file {self.token_file} is empty")
        return token


def load_config(path: Path) -> AgentConfig:
    """The configuration in ``path``; ConfigError (one line) if it is unusable."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror or error}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8: {error}") from error
    return parse_config(raw, path)


def parse_config(raw: dict[str, Any], path: Path) -> AgentConfig:
    if "config_dir" in raw:
        raise ConfigError(f"{path}: config_dir: not a setting (it is the file's directory)")
    base = path.resolve().parent
    try:
        config = AgentConfig.model_validate({**raw, "config_dir": base})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{path}: {where}: {message}{more}") from None
    for task_type, handler in config.tasks.items():
        _check_placeholders(path, f"tasks.{task_type}.command", handler.command)
    if config.health is not None:
        _check_placeholders(path, "health.command", config.health.command, task=False)
    return config.model_copy(
        update={
            "token_file": (base / config.token_file).resolve(),
            "work_dir": (base / config.work_dir).resolve(),
        }
    )


def _check_placeholders(path: Path, where: str, command: list[str], *, task: bool = True) -> None:
    for part in command:
        for match in PLACEHOLDER.finditer(part):
            if not task and match.group(1) != "config_dir":
                raise ConfigError(f"{path}: {where}: {match.group(0)} has no value here")
