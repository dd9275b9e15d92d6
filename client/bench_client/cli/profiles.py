"""Writing profiles into ``$XDG_CONFIG_HOME/bench-orchestrator/config.toml``.

tomllib only reads, so this holds a small TOML writer for what that file holds: top-level
keys, tables (``[profiles.<name>]``) and strings, numbers, booleans and lists of them.
Other keys and profiles already in the file are kept.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench_client.config import config_path

__all__ = ["dumps", "save_profile"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def save_profile(
    name: str, *, url: str, token_file: str, make_default: bool, path: Path | None = None
) -> Path:
    """Adds or replaces ``[profiles.<name>]``; atomically, the file private to the user."""
    target = path or config_path()
    document: dict[str, Any] = {}
    if target.exists():
        document = tomllib.loads(target.read_text(encoding="utf-8"))
    profiles = document.setdefault("profiles", {})
    if not isinstance(profiles, dict):
        raise ValueError(f"{target}: 'profiles' is not a table")
    profiles[name] = {"url": url, "token_file": token_file}
    if make_default or "default_profile" not in document:
        document["default_profile"] = name
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(dumps(document))
    os.replace(scratch, target)
    return target


def dumps(document: Mapping[str, Any]) -> str:
    lines: list[str] = []
    _table(lines, [], document)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(lines: list[str], path: list[str], table: Mapping[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    if path and (scalars or not tables):
        lines += ["", "[" + ".".join(_key(part) for part in path) + "]"]
    lines += [f"{_key(key)} = {_value(value)}" for key, value in scalars.items()]
    for key, sub in tables.items():
        _table(lines, [*path, key], sub)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("TOML here holds finite numbers only")
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise ValueError(f"cannot write a {type(value).__name__} to TOML")


def _string(text: str) -> str:
    out = ['"']
    for char in text:
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)
