"""The hashed lock files under requirements/ against pyproject.toml (README.md, "Dependencies").

``make run`` and the image install from requirements/runtime.txt, ``make test`` from
requirements/dev.txt, both with ``pip install --require-hashes``. These checks are static
(no network, no resolver): a dependency that pyproject.toml names but a lock lacks, a pin
that no longer satisfies pyproject.toml's range, a pin without a hash, or a runtime pin that
differs from the one the tests ran against, each fails here with "run `make lock`".
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
DEV_LOCK = ROOT / "requirements" / "dev.txt"
PROJECT = "bench-orchestrator"

# What the locks are resolved for (`make lock`: --python-version 3.11, x86_64 Linux):
# a dependency whose marker is false there is rightly absent from them.
TARGET = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}

HINT = "run `make lock` (README.md, Dependencies)"


@dataclass(frozen=True)
class Pin:
    name: str  # normalised (PEP 503)
    version: str
    hashes: tuple[str, ...]
    line: str


def _logical_lines(path: Path) -> list[str]:
    """Requirement lines with their backslash continuations joined and comments dropped."""
    out: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line and not pending:
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        stmt = (pending + line).strip()
        pending = ""
        if stmt:
            out.append(stmt)
    if pending.strip():
        out.append(pending.strip())
    return out


def _parse_lock(path: Path) -> dict[str, Pin]:
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: {HINT}"
    pins: dict[str, Pin] = {}
    for stmt in _logical_lines(path):
        assert not stmt.startswith("-"), (
            f"{path.name}: option line {stmt!r}: the locks hold pins only (no -e, -r, "
            "--index-url or --find-links: machine-local paths and the editable project "
            "stay out)"
        )
        words = stmt.split()
        spec, options = words[0], words[1:]
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", spec)
        assert match, f"{path.name}: {spec!r} is not an exact `name==version` pin"
        hashes = tuple(opt.removeprefix("--hash=") for opt in options if opt.startswith("--hash="))
        others = [opt for opt in options if not opt.startswith("--hash=")]
        assert not others, f"{path.name}: {spec}: unexpected {others}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{path.name}: {name} is pinned twice"
        pins[name] = Pin(name, match.group(2), hashes, stmt)
    return pins


def _pyproject() -> dict[str, object]:
    with PYPROJECT.open("rb") as fh:
        return tomllib.load(fh)


def _declared(group: str) -> list[Requirement]:
    """``[project] dependencies`` (group "runtime") or one extra of optional-dependencies."""
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    if group == "runtime":
        raw = project.get("dependencies", [])
    else:
        raw = project.get("optional-dependencies", {}).get(group, [])
    assert isinstance(raw, list)
    return [Requirement(item) for item in raw]


def _applies(req: Requirement, extra: str = "") -> bool:
    return req.marker is None or req.marker.evaluate({**TARGET, "extra": extra})


@pytest.fixture(scope="module")
def runtime_lock() -> dict[str, Pin]:
    return _parse_lock(RUNTIME_LOCK)


@pytest.fixture(scope="module")
def dev_lock() -> dict[str, Pin]:
    return _parse_lock(DEV_LOCK)


# --------------------------------------------------------------------------- the locks


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK], ids=["runtime", "dev"])
def test_every_pin_is_exact_and_hashed(lock: Path) -> None:
    pins = _parse_lock(lock)
    assert pins, f"{lock.name} pins nothing"
    unhashed = [pin.name for pin in pins.values() if not pin.hashes]
    assert not unhashed, f"{lock.name}: no --hash for {unhashed}: {HINT}"
    for pin in pins.values():
        for digest in pin.hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{pin.name}: {digest}"
    # The project itself is installed separately, editable or as a wheel, with --no-deps.
    assert canonicalize_name(PROJECT) not in pins, f"{lock.name} pins the project itself"


@pytest.mark.parametrize(
    ("groups", "lock"),
    [(["runtime"], RUNTIME_LOCK), (["runtime", "dev"], DEV_LOCK)],
    ids=["runtime", "dev"],
)
def test_lock_pins_everything_pyproject_names(groups: list[str], lock: Path) -> None:
    pins = _parse_lock(lock)
    missing: list[str] = []
    outside: list[str] = []
    for group in groups:
        extra = "" if group == "runtime" else group
        for req in _declared(group):
            if not _applies(req, extra):
                continue
            pin = pins.get(canonicalize_name(req.name))
            if pin is None:
                missing.append(str(req))
            elif not req.specifier.contains(Version(pin.version), prereleases=True):
                outside.append(f"{req} (locked {pin.version})")
    assert not missing, f"{lock.name} lacks {missing}: {HINT}"
    assert not outside, f"{lock.name} pins outside pyproject.toml's range: {outside}: {HINT}"


def test_runtime_pins_are_the_dev_pins(
    runtime_lock: dict[str, Pin], dev_lock: dict[str, Pin]
) -> None:
    """The image (runtime lock) ships the very versions and files `make test` ran against."""
    absent = sorted(set(runtime_lock) - set(dev_lock))
    assert not absent, f"pinned for runtime but not in the dev lock: {absent}: {HINT}"
    differ = [
        f"{name}: runtime {pin.version}, dev {dev_lock[name].version}"
        + ("" if pin.version != dev_lock[name].version else " (other hashes)")
        for name, pin in runtime_lock.items()
        if (pin.version, set(pin.hashes)) != (dev_lock[name].version, set(dev_lock[name].hashes))
    ]
    assert not differ, f"{differ}: {HINT}"


def test_parser_rejects_what_a_lock_must_not_hold(tmp_path: Path) -> None:
    """Guards the guard: an unhashed pin, a range and an editable line are all caught."""
    unhashed = tmp_path / "unhashed.txt"
    unhashed.write_text("fastapi==0.115.0\n    # via x\n")
    assert _parse_lock(unhashed)["fastapi"].hashes == ()
    for bad in ["fastapi>=0.115 \\\n    --hash=sha256:" + "0" * 64 + "\n", "-e .\n"]:
        path = tmp_path / "bad.txt"
        path.write_text(bad)
        with pytest.raises(AssertionError):
            _parse_lock(path)


# --------------------------------------------------------------------------- the installs


def _make_recipe(target: str) -> str:
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:(.*)\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert match, f"no {target} rule in the Makefile"
    return match.group(1) + "\n" + match.group(2)


@pytest.mark.parametrize(
    ("stamp", "lock"),
    [
        ("$(VENV)/.runtime-installed", "$(LOCK_RUNTIME)"),
        ("$(VENV)/.dev-installed", "$(LOCK_DEV)"),
    ],
)
def test_make_installs_from_the_lock(stamp: str, lock: str) -> None:
    prerequisites, _, recipe = _make_recipe(stamp).partition("\n")
    # Re-installs when the lock changes; `make test` skips the install when nothing did.
    assert lock in prerequisites.split("|")[0].split(), prerequisites
    assert f"--require-hashes -r {lock}" in recipe, recipe
    assert "--no-deps -e ." in recipe, recipe


def test_dockerfile_installs_from_the_runtime_lock() -> None:
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    assert "COPY requirements/runtime.txt" in text
    assert re.search(r"pip install [^\n]*--require-hashes -r requirements/runtime\.txt", text)
    assert re.search(r"pip install [^\n]*--no-deps [^\n]*\.whl", text)
