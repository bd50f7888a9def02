# Skillquest: `make run` runs the system, `make test` passes the tests.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run demo test lint schemas bench clean

install: $(STAMP) prometheus

# The virtualenv is rebuilt only when the dependency list changes (idempotent).
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Prometheus comes from the OS packages; install it when missing and we may.
prometheus:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing prometheus (Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else \
		echo "prometheus not found: install it with 'sudo apt-get install --no-install-recommends prometheus'; running without it"; \
	fi

run: install
	$(BIN)/python -m deploy.local.launcher

# Seeds a demo organisation through the gateway of a running `make run`.
demo: install
	$(BIN)/python -m deploy.local.demo

# The linters first: a style or type error fails the tests, so it never reaches main.
test: lint
	$(BIN)/python -m tests.parallel

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy contracts services deploy bench

# Throughput, latency and read figures on the local stack (BENCH_QUICK=1: about a minute).
bench: install
	$(BIN)/python -m bench

schemas: install
	$(BIN)/python -m contracts.schemas_export

clean:
	rm -rf $(VENV) .data .bench
