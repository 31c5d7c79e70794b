# The quick start: `make up` (a mounted local cluster), `make test` (the test suite).
VENV := .venv/bin
STATE ?= $(HOME)/.local/share/dfs/local

.PHONY: up down status test test-fast lint typecheck check bench chaos chaos-long

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

# The seeded chaos test on network-namespace hosts: the short form (one seed, ~2 minutes) and
# the long form (SEEDS seeds of 50 faults each, a summary table).
chaos:
	$(VENV)/pytest -q -s tests/e2e/test_chaos.py

SEEDS ?= 10
chaos-long:
	$(VENV)/python -m tests.e2e.test_chaos --seeds $(SEEDS) --faults 50
