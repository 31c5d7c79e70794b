# The quick start: `make up` (a mounted local cluster), `make test` (the test suite).
VENV := .venv/bin
STATE ?= $(HOME)/.local/share/dfs/local

.PHONY: up down status test test-fast lint typecheck check bench

up:
	@scripts/bootstrap
	$(VENV)/dfs local up --dir $(STATE)

down:
	$(VENV)/dfs local down --dir $(STATE)

status:
	$(VENV)/dfs local status --dir $(STATE)

# The whole suite, exactly as CI runs it.
test:
	@scripts/bootstrap
	$(VENV)/ruff check .
	$(VENV)/mypy
	$(VENV)/pytest -q

# Unit tier only (seconds).
test-fast:
	$(VENV)/pytest -q -m "unit"

lint:
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .

typecheck:
	$(VENV)/mypy

bench:
	$(VENV)/python tools/bench.py $(BENCH_ARGS)
