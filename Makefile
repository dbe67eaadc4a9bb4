# Two commands on a fresh machine: `make demo` and `make test`.
# Quality gates: `make lint` (ruff check + ruff format --check) and `make typecheck`
# (mypy --strict); `make test-min` runs the core tests on the declared minimum versions.
# .ci/run runs all four.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A second venv holding the lowest versions pyproject.toml declares (constraints-min.txt).
MIN_VENV := .venv-min
MIN_STAMP := $(MIN_VENV)/.installed
# The core needs no browser: protocol endpoints, termination, the RP library, storage.
CORE_TESTS := tests/op tests/termination tests/rp tests/storage

# Third-party peers of the conformance runner (tests/interop), installed from the lock file
# when node is present; without node their tests skip (and fail under CI=true).
NODE_PEERS := tests/interop/node
NODE_STAMP := $(NODE_PEERS)/node_modules/.installed

.PHONY: demo test test-min lint typecheck format bench install clean node-peers bench-anchor

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[op,serve,postgres,redis,test,dev]'
	touch $(STAMP)

$(MIN_STAMP): pyproject.toml constraints-min.txt
	rm -rf $(MIN_VENV)
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/pip install -q --upgrade pip
	$(MIN_VENV)/bin/pip install -q -c constraints-min.txt -e '.[op,postgres,redis,test]'
	touch $(MIN_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/oidc-logout demo --dev $(DEMO_ARGS)

$(NODE_STAMP): $(NODE_PEERS)/package.json $(NODE_PEERS)/package-lock.json
	cd $(NODE_PEERS) && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

node-peers:
	@if command -v node >/dev/null 2>&1; then $(MAKE) --no-print-directory $(NODE_STAMP); \
	else echo "node not found: tests/interop will skip"; fi

# Four workers on two cores: the suite waits on loopback servers, worker subprocesses,
# PostgreSQL and Chromium far more than it computes (1,846 tests: 9 min 39 s with -n 4 on two
# cores, measured 2026-12-03; -n 2 was on course for over 25 min).
test: $(STAMP) node-peers
	$(BIN)/pytest -p no:cacheprovider -n 4 $(PYTEST_ARGS)

# The tests wait on loopback servers and PostgreSQL far more than they compute: two workers
# keep this under three minutes on two cores.
test-min: $(MIN_STAMP)
	$(MIN_VENV)/bin/pip freeze --exclude-editable | grep -iE '^(authlib|flask|werkzeug|sqlalchemy|alembic|jwcrypto|requests|urllib3|h11|psycopg|redis)=='
	$(MIN_VENV)/bin/pytest -p no:cacheprovider -n 4 $(CORE_TESTS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Not a gate: rewrites files (safe fixes and formatting).
format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The anchor of the benchmarks: node-oidc-provider, installed from bench/anchor's lock file
# (bench.against_node skips it, saying so, where node/npm are missing).
ANCHOR := bench/anchor
ANCHOR_STAMP := $(ANCHOR)/node_modules/.installed

$(ANCHOR_STAMP): $(ANCHOR)/package.json $(ANCHOR)/package-lock.json
	cd $(ANCHOR) && npm ci --no-audit --no-fund --loglevel=error
	touch $(ANCHOR_STAMP)

bench-anchor:
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
	$(MAKE) --no-print-directory $(ANCHOR_STAMP); \
	else echo "node/npm not found: the node-oidc-provider anchor of the benchmarks will be skipped"; fi

bench: $(STAMP) bench-anchor
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(MIN_VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
