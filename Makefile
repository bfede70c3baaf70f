# shopml: two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= all,dev
STAMP  := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export OPENBLAS_NUM_THREADS ?= 1

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint format bench clean

help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[$(EXTRAS)]'
	@touch $(STAMP)

# promtool checks deploy/prometheus (config, alert rule tests, dashboard queries). Where it is not
# on PATH it is taken from Debian's prometheus package into .venv/bin, without installing the
# package; without apt (not Debian) the deploy tests that need it skip and say why.
$(BIN)/promtool: | $(STAMP)
	@if command -v promtool >/dev/null; then ln -sf "$$(command -v promtool)" $@; \
	elif command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then \
	  tmp=$$(mktemp -d) && (cd $$tmp && apt-get download -q prometheus >/dev/null 2>&1) && \
	  dpkg-deb -x $$tmp/prometheus_*.deb $$tmp/x && cp $$tmp/x/usr/bin/promtool $@; \
	  rm -rf $$tmp; test -x $@ || echo "promtool not fetched: the promtool tests will skip"; \
	else echo "no promtool and no apt-get: the promtool tests will skip"; fi

install: $(STAMP) ## Create .venv and install shopml with every extra (re-runs when pyproject.toml changes)

run: $(STAMP) ## Run the main job on the embedded default (simulated shop, local stores)
	$(BIN)/shopml run

test: $(STAMP) $(BIN)/promtool ## Run the whole test suite (slow and integration tests included)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP) ## Run the tests not marked slow
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: $(STAMP) ## Run the benchmarks and update benchmarks/results
	$(BIN)/python -m benchmarks

clean: ## Remove local state (.shopml) and caches, keep .venv
	rm -rf .shopml .pytest_cache .ruff_cache .mypy_cache
