# makima contracts — one target per gate; `make test` runs them all (it is what CI runs).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
BIN := $(VENV)/bin
SAM := $(SAM_VENV)/bin/sam
AARCH64 := .aarch64
SAM_CLI_VERSION := 1.170.0
# cfn-lint comes with the SAM CLI (sam validate --lint); pinned as well, because tests/infra also runs it
# on the CloudFormation that aws-sam-translator makes of the template.
CFN_LINT_VERSION := 1.58.0
# sam build needs an interpreter matching the Lambda runtime (python3.12) on PATH.
PY312_BIN := $(shell for d in "$$(pyenv root 2>/dev/null)/versions/"3.12*/bin /usr/local/bin /usr/bin; do \
	[ -x "$$d/python3.12" ] && { echo "$$d"; break; }; done)
PORT ?= 8000
# The web dashboard tests drive Debian's chromium through Playwright, which never downloads a browser.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(CHROMIUM):
	command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

$(SAM_VENV)/.installed:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION) cfn-lint==$(CFN_LINT_VERSION)
	touch $@

# tests/infra imports the arm64 layer with an aarch64 CPython: on an x86_64 machine, Debian's arm64
# python3.13 under qemu-user-static (about 20 s and 80 MB; the script says why 3.13).
$(AARCH64)/.installed: tests/infra/aarch64_python.sh
	SUDO="$(SUDO)" bash tests/infra/aarch64_python.sh $(AARCH64)
	touch $@

# axe-core for the web page's accessibility tests, from the npm registry (npm pack), pinned and checked
# against its sha512 integrity (tests/e2e/axe.py), into the git-ignored .cache/.
AXE := .cache/axe-core-4.10.3/axe.min.js
$(AXE): tests/e2e/axe.py
	command -v npm >/dev/null || ($(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm)
	$(PYTHON) -m tests.e2e.axe

.PHONY: install
install: $(VENV)/.installed $(SAM_VENV)/.installed $(AARCH64)/.installed $(AXE) ## Install the app (and the SAM CLI in its own venv)

.PHONY: dev
dev: $(VENV)/.installed ## Start the local stack (embedded PostgreSQL unless DATABASE_URL is set); DEMO=N adds a demo fleet
	$(BIN)/makima dev --port $(PORT) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(DEMO),--demo $(DEMO))

.PHONY: format
format: $(VENV)/.installed ## Format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: lint
lint: $(VENV)/.installed ## ruff: formatting and lint
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

.PHONY: typecheck
typecheck: $(VENV)/.installed ## mypy, strict
	$(BIN)/mypy layers/shared/makima functions tests examples

.PHONY: unit
unit: $(VENV)/.installed ## Unit tests (no I/O)
	$(BIN)/pytest tests/unit -q

.PHONY: integration
integration: $(VENV)/.installed ## Integration tests (real PostgreSQL, in-process)
	$(BIN)/pytest tests/integration -q

.PHONY: e2e
e2e: $(VENV)/.installed $(CHROMIUM) $(AXE) ## End-to-end tests against the local stack (includes schemathesis, the web page)
	MAKIMA_REQUIRE_BROWSER=1 $(BIN)/pytest tests/e2e -q

.PHONY: infra
infra: $(VENV)/.installed $(SAM_VENV)/.installed $(AARCH64)/.installed ## Template tests: routes, the translated stack (IAM, alarms...), cfn-lint, sam build
	PATH="$(PY312_BIN):$$PATH" MAKIMA_REQUIRE_SAM=1 $(BIN)/pytest tests/infra -q

.PHONY: test
test: install lint typecheck $(CHROMIUM) $(AXE) ## The whole suite: lint, types, unit, integration, e2e, infra
	PATH="$(PY312_BIN):$$PATH" MAKIMA_REQUIRE_SAM=1 MAKIMA_REQUIRE_BROWSER=1 $(BIN)/pytest tests -q

.PHONY: pr
pr: test ## Everything a change must pass

# Every benchmark in tests/bench, each sized to finish in a minute or two on 2 cores (their defaults are
# the figures of docs/performance.md, and take longer), then bench_api with its floors (docs/performance.md,
# "API benchmark (issue 15)"): exits non-zero when the API falls too far behind the raw SQL of the same
# statements. Each makes its own fresh database (DATABASE_URL server, else embedded). Not part of `make test`.
BENCH := $(BIN)/python -m tests.bench
.PHONY: bench
bench: $(VENV)/.installed ## Run every benchmark, then bench_api --check (fails below a ratio floor)
	$(BENCH).bench_contracts --contracts 10000 --requests 100
	$(BENCH).bench_dashboard --contracts 10000 --supervisors 100 --events 50000 --requests 50
	$(BENCH).bench_heartbeats --supervisors 1000 --seconds 3
	$(BENCH).bench_idempotency --requests 100
	$(BENCH).bench_monitor --connections 100 --events 20
	$(BENCH).bench_revocation --connections 200 --rounds 50
	$(BENCH).bench_supervisor_state --saves 5 --messages 100
	$(BENCH).bench_langgraph
	$(BENCH).bench_api --check

.PHONY: clean
clean: ## Remove build output (keeps the venvs and .makima data)
	rm -rf .aws-sam build .pytest_cache .mypy_cache .ruff_cache
