# MATS build / CI entry points.  `make` (or `make help`) lists the targets.
#
# Two virtualenvs, because apache-airflow 3.3 and faust-streaming pin
# incompatible croniter versions:
#   .venv          streams side: runtime deps + `dev`, `streams`, `gateways` and `batch`
#                  extras, mats (editable)
#   .venv-airflow  Airflow 3 side: runtime deps + `airflow` and `batch` extras, mats (editable)
# Both import the same extension module, python/mats/_core*.so, which
# `maturin develop` builds in place (python-source = "python").
# Kafka (a single-node broker for tests and the demo) runs from Maven Central jars that
# infra/kafka/pom.xml names; `make kafka-deps` (or `mats kafka up`) fetches them.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
# Both venvs' maturin builds write the same python/mats/_core*.so: never in parallel.
.NOTPARALLEL:
MAKEFLAGS += --no-builtin-rules --no-builtin-variables

PYTHON ?= python3

VENV := $(CURDIR)/.venv
VENV_BIN := $(VENV)/bin
VENV_AIRFLOW := $(CURDIR)/.venv-airflow
AIRFLOW_BIN := $(VENV_AIRFLOW)/bin

VENV_STAMP := $(VENV)/.stamp
BUILD_STAMP := $(VENV)/.build-stamp
AIRFLOW_STAMP := $(VENV_AIRFLOW)/.stamp

# pyo3 (feature `python`, enabled by clippy's --all-features) must find an interpreter.
export PYO3_PYTHON := $(VENV_BIN)/python
export CARGO_TERM_COLOR := never

RUST_SRC := $(shell find core_rs/src -name '*.rs' 2>/dev/null) \
	core_rs/Cargo.toml Cargo.toml $(wildcard Cargo.lock core_rs/build.rs)

# Python trees to lint; empty directories are not in a git clone, so keep existing ones only.
PY_PATHS := $(wildcard python tests bench dags streams)

# The build backend requirement (maturin) as written in pyproject.toml [build-system].
MATURIN_REQ = $(shell $(PYTHON) -c 'import shlex, tomllib; print(*map(shlex.quote, tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')

# $(call in_venv,VENV_DIR): environment that activates a virtualenv for one command.
in_venv = VIRTUAL_ENV=$(1) PATH=$(1)/bin:$$PATH

define RUST_LINT
cargo fmt --all --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
endef

define PY_LINT
$(VENV_BIN)/python -m mypy.stubtest mats._core --allowlist stubtest-allowlist.txt
$(VENV_BIN)/ruff check $(PY_PATHS)
$(VENV_BIN)/mypy
endef

.PHONY: help
help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*?## "}; {printf "\033[36m%-14s\033[0m %s\n", $$1, $$2}'

.PHONY: venv
venv: $(VENV_STAMP) ## Create .venv: runtime deps, dev/streams/gateways/batch extras, mats built and installed editable

# `maturin develop --extras dev,streams,...` installs [project].dependencies and those extras
# from pyproject.toml itself, then installs mats as an editable package.
$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV_BIN)/python -m pip install --upgrade pip
	$(VENV_BIN)/python -m pip install $(MATURIN_REQ)
	$(call in_venv,$(VENV)) maturin develop --release --extras dev,streams,gateways,batch
	touch $@

.PHONY: build
build: $(BUILD_STAMP) ## (Re)build the Rust extension into python/mats/ when core_rs changed

$(BUILD_STAMP): $(VENV_STAMP) $(RUST_SRC)
	$(call in_venv,$(VENV)) maturin develop --release --skip-install
	touch $@

.PHONY: venv-airflow
venv-airflow: $(AIRFLOW_STAMP) ## Create .venv-airflow: Airflow 3 (`airflow` and `batch` extras) + mats

# maturin (taken from .venv) builds against .venv-airflow's interpreter and installs the
# `airflow` extra there.  The target dir is shared, so this costs one pyo3 rebuild (pyo3
# is keyed on the interpreter path).  No dependency on the Rust sources: both venvs import
# the same in-place python/mats/_core*.so, which `make build` keeps current.
$(AIRFLOW_STAMP): pyproject.toml $(VENV_STAMP)
	$(PYTHON) -m venv $(VENV_AIRFLOW)
	$(AIRFLOW_BIN)/python -m pip install --upgrade pip
	$(call in_venv,$(VENV_AIRFLOW)) $(VENV_BIN)/maturin develop --release --extras airflow,batch
	$(AIRFLOW_BIN)/python -c 'import airflow, mats._core; print("airflow", airflow.__version__)'
	touch $@

.PHONY: kafka-deps
kafka-deps: venv ## Fetch the Kafka broker's jars (infra/kafka/pom.xml) with Maven, if not there yet
	$(VENV_BIN)/mats kafka deps

# The SQL store's integration tests run Debian's PostgreSQL server (python/mats/pg.py): apt-get
# installs the package `postgresql` when no /usr/lib/postgresql/*/bin/postgres is there (as root).
.PHONY: pg-deps
pg-deps: venv ## Install Debian's PostgreSQL server (apt-get, needs root) if it is not there yet
	$(VENV_BIN)/python -m mats.pg deps

.PHONY: test
test: venv build venv-airflow kafka-deps pg-deps ## Everything CI runs: rustfmt, clippy, cargo test, stubtest, ruff, mypy, pytest
	$(RUST_LINT)
	cargo test --workspace
	$(PY_LINT)
	$(VENV_BIN)/python -m pytest

.PHONY: lint
lint: venv build ## Static checks only: rustfmt, clippy, stubtest, ruff, mypy
	$(RUST_LINT)
	$(PY_LINT)

.PHONY: fmt
fmt: venv ## Format Rust (cargo fmt) and Python (ruff format, ruff import sorting)
	cargo fmt --all
	$(VENV_BIN)/ruff format $(PY_PATHS)
	$(VENV_BIN)/ruff check --select I --fix $(PY_PATHS)

.PHONY: demo
demo: venv build venv-airflow kafka-deps ## The trading day end to end: SOD DAG, Kafka, worker, gateways, brokers, EOD DAG (python -m mats.live)
	$(VENV_BIN)/python -m mats.demo
	$(VENV_BIN)/python -m mats.live

.PHONY: bench
bench: venv build kafka-deps ## Run the benchmarks: core, stream, FIX gateway, end of day (bench/results/*.json)
	$(VENV_BIN)/python bench/core_bench.py
	$(VENV_BIN)/python bench/stream_bench.py
	$(VENV_BIN)/python bench/fix_bench.py
	$(VENV_BIN)/python bench/eod_bench.py

.PHONY: clean
clean: ## Remove virtualenvs, build output, stamps, caches, Kafka jars and run/ (stops Kafka first)
	if [ -x $(VENV_BIN)/mats ]; then $(VENV_BIN)/mats kafka down; $(VENV_BIN)/mats db down || true; fi
	rm -rf .venv .venv-airflow target run infra/kafka/lib infra/fix/lib infra/fix/spec
	rm -f python/mats/_core*.so
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
