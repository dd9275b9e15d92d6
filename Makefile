# Everything a fresh machine needs goes through these targets: `make run`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck imports pytest openapi bench create-tables clean

# The stamp files make the install step run again only when pyproject.toml changes.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.runtime-installed

run: $(VENV)/.runtime-installed
	ORCH_HOST=$(HOST) ORCH_PORT=$(PORT) $(BIN)/orchestrator serve

test: $(VENV)/.dev-installed lint typecheck imports pytest

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check app tests bench examples
	$(BIN)/ruff format --check app tests bench examples

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

# The layering contracts in pyproject.toml ([tool.importlinter]).
imports: $(VENV)/.dev-installed
	$(BIN)/lint-imports

# moto's server for the DynamoDB tests is started by the test session itself: with
# pytest-xdist each worker is a session, with a server of its own. loadgroup keeps the
# tests of one xdist_group on one worker (the replicas they share start once).
PYTEST_WORKERS ?= auto
pytest: $(VENV)/.dev-installed
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadgroup

openapi: $(VENV)/.dev-installed
	$(BIN)/python -m tests.support.openapi_snapshot --write

# Throughput as ratios to a baseline measured in the same run (the machines are noisy).
bench: $(VENV)/.dev-installed
	$(BIN)/python -m bench.run_all

create-tables: $(VENV)/.runtime-installed
	$(BIN)/orchestrator create-tables

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
