# Everything a fresh machine needs goes through these targets: `make run`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# uv, pinned, in a venv of its own: it installs from the locks and makes them.
UV_VERSION ?= 0.13.9
LOCK_TOOLS := $(VENV)/lock-tools
UV := $(LOCK_TOOLS)/bin/uv
# `make run PORT=8001 HOST=0.0.0.0`: given on make's command line, these win; otherwise
# ORCH_PORT / ORCH_HOST from the environment apply, else the settings' 127.0.0.1:8000.
# Only the command line counts: some shells export HOST as the machine's name.
HOST_ARG = $(if $(filter command line,$(origin HOST)),$(if $(HOST),--host $(HOST)))
PORT_ARG = $(if $(filter command line,$(origin PORT)),$(if $(PORT),--port $(PORT)))

.PHONY: run dev test lint typecheck imports lint-openapi pytest browser openapi client-models bench create-tables clean

# Installs come from the hashed lock files (see "Dependencies" in README.md): every
# package pinned, in hash-checking mode; then the project and the client, editable, --no-deps.
# The dev lock is the runtime lock plus the dev extra, at the same versions.
LOCK_RUNTIME := requirements/runtime.txt
LOCK_DEV := requirements/dev.txt

# The stamp files make the install step run again only when a lock file or pyproject.toml
# changes. The check fails the install when pyproject.toml names a runtime dependency
# that the lock lacks (run `make lock`; tests/ops/test_lock_files.py checks the dev extra).
# uv installs (the pinned one that `make lock` uses): the same hash-checked lock as pip
# would, in seconds rather than a minute or two.
INSTALL = $(UV) pip install --quiet --python $(BIN)/python
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime-installed: $(LOCK_RUNTIME) pyproject.toml client/pyproject.toml | $(BIN)/python $(LOCK_TOOLS)/.uv-$(UV_VERSION)
	$(INSTALL) --require-hashes -r $(LOCK_RUNTIME)
	$(INSTALL) --no-deps -e . -e ./client
	$(UV) pip check --quiet --python $(BIN)/python || { echo "$(LOCK_RUNTIME) is out of date with pyproject.toml: run make lock" >&2; exit 1; }
	touch $@

$(VENV)/.dev-installed: $(LOCK_DEV) pyproject.toml client/pyproject.toml | $(BIN)/python $(LOCK_TOOLS)/.uv-$(UV_VERSION)
	$(INSTALL) --require-hashes -r $(LOCK_DEV)
	$(INSTALL) --no-deps -e . -e ./client
	$(UV) pip check --quiet --python $(BIN)/python || { echo "$(LOCK_DEV) is out of date with pyproject.toml: run make lock" >&2; exit 1; }
	touch $@ $(VENV)/.runtime-installed

# Regenerating the locks from pyproject.toml, with uv's resolver. The dev lock first; the runtime lock is constrained
# to it, so the image ships the very versions that `make test` ran against. Resolved for
# the platform that CI and the image run on, wherever `make lock` runs.
#   make lock                    add or drop what pyproject.toml changed, keep other pins
#   make upgrade-deps            every package to its newest allowed version
#   make lock UPGRADE=fastapi    just that one (space-separate several)
LOCK_PLATFORM := --python-version 3.11 --python-platform x86_64-manylinux_2_36
UV_COMPILE = $(UV) pip compile --quiet --generate-hashes $(LOCK_PLATFORM) \
	--custom-compile-command 'make lock' pyproject.toml

.PHONY: lock upgrade-deps

$(LOCK_TOOLS)/.uv-$(UV_VERSION):
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)
	touch $@

lock: $(LOCK_TOOLS)/.uv-$(UV_VERSION)
	$(UV_COMPILE) --extra dev --extra client $(if $(UPGRADE),$(addprefix --upgrade-package ,$(UPGRADE))) \
		--output-file $(LOCK_DEV)
	$(UV_COMPILE) --extra client --constraints $(LOCK_DEV) --output-file $(LOCK_RUNTIME)

upgrade-deps: $(LOCK_TOOLS)/.uv-$(UV_VERSION)
	$(UV_COMPILE) --extra dev --extra client --upgrade --output-file $(LOCK_DEV)
	$(UV_COMPILE) --extra client --constraints $(LOCK_DEV) --output-file $(LOCK_RUNTIME)

run: $(VENV)/.runtime-installed
	$(strip $(BIN)/orchestrator serve $(HOST_ARG) $(PORT_ARG))

# The checks and the suite at once: the suite is the long pole, and the linters' minute
# fits in beside it on the 2-core machines (their few lines may interleave its dots).
CHECKS := lint typecheck imports lint-openapi pytest
test: $(VENV)/.dev-installed
	$(MAKE) --no-print-directory -j $(words $(CHECKS)) $(CHECKS)

# The development tools (moto, pytest, the linters) without running anything.
dev: $(VENV)/.dev-installed

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check app tests bench examples client
	$(BIN)/ruff format --check app tests bench examples client

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

# The layering contracts in pyproject.toml ([tool.importlinter]).
imports: $(VENV)/.dev-installed
	$(BIN)/lint-imports

# Spectral (npm) with the spectral:oas ruleset, on the committed spec: 0 errors, 0 warnings.
# npm ci installs exactly tools/spectral/package-lock.json.
SPECTRAL_DIR := tools/spectral
SPECTRAL := $(SPECTRAL_DIR)/node_modules/.bin/spectral
$(SPECTRAL): $(SPECTRAL_DIR)/package-lock.json
	npm ci --prefix $(SPECTRAL_DIR) --no-audit --no-fund --loglevel=error
	touch $@

lint-openapi: $(SPECTRAL)
	$(SPECTRAL) lint --ruleset .spectral.yaml --fail-severity=warn openapi/openapi.json

# The browser tests (tests/ui) drive Debian's Chromium through Playwright: Playwright's own
# browser download cannot work on our machines. Installed from the distribution's packages
# when missing; where that cannot be done, this fails saying so (the tests never skip).
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { echo "installing Chromium from Debian's packages (for tests/ui)"; \
		$(SUDO) apt-get install -y -q chromium >/dev/null 2>&1 \
		|| { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium >/dev/null; } \
		|| true; }
	@test -x $(CHROMIUM) || { echo "make browser: $(CHROMIUM) is missing and 'apt-get install chromium'" \
		"failed (no apt-get, no sudo, or no package mirror): install Debian's chromium package," \
		"or give CHROMIUM=/path/to/chromium; the browser tests in tests/ui need it" >&2; exit 1; }

# moto's server for the DynamoDB tests is started by the test session itself: with
# pytest-xdist each worker is a session, with a server of its own. loadgroup keeps the
# tests of one xdist_group on one worker (the replicas they share start once).
# One worker more than the cores: much of the suite waits on subprocesses
# (servers, agents, moto's single thread), and an extra worker keeps the cores busy.
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 2 ? 3 : n + 1 )))
pytest: $(VENV)/.dev-installed browser
	CHROMIUM=$(CHROMIUM) \
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadgroup --durations=15

openapi: $(VENV)/.dev-installed
	$(BIN)/python -m tests.support.openapi_snapshot --write

# The client's models (client/bench_client/models.py), generated from the committed spec.
client-models: $(VENV)/.dev-installed
	$(BIN)/python tools/client_models.py --write

# The service against its floor app, per scenario and store, growth and memory, as
# ratios measured in the same run (the machines are noisy); writes docs/performance.md.
# wrk is the load generator: installed from Debian's packages when it is missing.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
bench: $(VENV)/.dev-installed
	@command -v wrk >/dev/null 2>&1 || $(SUDO) apt-get install -y -q wrk >/dev/null 2>&1 \
		|| { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q wrk >/dev/null; }
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

create-tables: $(VENV)/.runtime-installed
	$(BIN)/orchestrator create-tables

clean:
	rm -rf $(VENV) $(SPECTRAL_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache
