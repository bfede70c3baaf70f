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
.PHONY: help install run test test-fast lint format bench docs screenshots clean

help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[$(EXTRAS)]'
	@touch $(STAMP)

# promtool checks deploy/prometheus (config, alert rule tests, dashboard queries); prometheus
# and the node exporter (textfile collector) run in the production integration test as they do
# in compose. Where they are not on PATH they are taken from Debian's packages into .venv/bin,
# without installing the packages; without apt (not Debian) the tests that need them skip and
# say why.
PROM_TOOLS := $(BIN)/promtool $(BIN)/prometheus $(BIN)/prometheus-node-exporter
$(PROM_TOOLS): | $(STAMP)
	@name=$(notdir $@); pkg=$$([ $$name = prometheus-node-exporter ] && echo $$name || echo prometheus); \
	if command -v $$name >/dev/null; then ln -sf "$$(command -v $$name)" $@; \
	elif command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then \
	  tmp=$$(mktemp -d) && (cd $$tmp && apt-get download -q $$pkg >/dev/null 2>&1) && \
	  dpkg-deb -x $$tmp/$${pkg}_*.deb $$tmp/x && cp $$tmp/x/usr/bin/$$name $@; \
	  rm -rf $$tmp; test -x $@ || echo "$$name not fetched: the tests that need it will skip"; \
	else echo "no $$name and no apt-get: the tests that need it will skip"; fi

# The control tower's browser tests (and `shopml ui --screenshots`) drive Debian's chromium with
# Playwright (Playwright's own browser download is not used). Where chromium is not on PATH it is
# installed from Debian's package when this runs as root with apt-get; otherwise the browser
# tests skip and say why. .venv/bin/chromium points at it.
$(BIN)/chromium: | $(STAMP)
	@found=$$(command -v chromium || command -v chromium-browser); \
	if [ -z "$$found" ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's chromium for the browser tests"; \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1)); \
	  found=$$(command -v chromium); \
	fi; \
	if [ -n "$$found" ]; then ln -sf "$$found" $@; \
	else echo "no chromium (apt-get install chromium): the browser tests will skip"; fi

# checkov scans deploy/ (Dockerfiles, compose, Kubernetes) and .github/workflows. Its own pins
# (an old boto3, packaging, networkx) would downgrade shopml's, so it lives in a venv of its own.
TOOLS := .venv-tools
$(TOOLS)/bin/checkov: | $(STAMP)
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(BIN)/uv pip install -q --python $(TOOLS)/bin/python 'checkov>=3.2,<4'

install: $(STAMP) ## Create .venv and install shopml with every extra (re-runs when pyproject.toml changes)

run: $(STAMP) ## Run the main job on the embedded default (simulated shop, local stores)
	$(BIN)/shopml run

# The suite runs on TEST_WORKERS pytest-xdist workers (a file's tests stay on one worker, so
# its module fixtures are built once); TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
PYTEST_WORKERS = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

test: $(STAMP) $(PROM_TOOLS) $(TOOLS)/bin/checkov $(BIN)/chromium ## Run the whole test suite (slow and integration tests included)
	$(BIN)/python -m pytest -q $(PYTEST_WORKERS) --durations=40

test-fast: $(STAMP) ## Run the tests not marked slow
	$(BIN)/python -m pytest -q $(PYTEST_WORKERS) -m "not slow"

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: $(STAMP) ## Run the benchmarks and update benchmarks/results
	$(BIN)/python -m benchmarks

docs: $(STAMP) ## Build the documentation site into site/ (strict: a broken link fails)
	DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

screenshots: $(STAMP) $(BIN)/chromium ## Retake the control tower's screenshots for the docs (from .shopml: `make run` first)
	$(BIN)/shopml ui --screenshots docs/img/tower --usecase returns

clean: ## Remove local state (.shopml) and caches, keep .venv
	rm -rf .shopml .pytest_cache .ruff_cache .mypy_cache site
