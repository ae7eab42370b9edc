# Set-up and entry points. `make nightly` and `make test` each create the virtual
# environment first when it is missing or older than pyproject.toml / constraints.txt.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS := synth,mlops,dashboard,airflow,serve,test

.PHONY: venv nightly test test-fast dashboard bench bench-venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip wheel setuptools
	$(BIN)/pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

# Separate venv for peer benchmarks (bench/peer_*.py): anomalib and its pins never enter
# exdd's own environment; exdd goes in without its dependencies.
BENCH_VENV ?= .bench-venv

bench-venv: $(BENCH_VENV)/.installed

$(BENCH_VENV)/.installed: bench/requirements-peers.txt pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q -U pip wheel setuptools
	$(BENCH_VENV)/bin/pip install -q -r bench/requirements-peers.txt
	$(BENCH_VENV)/bin/pip install -q --no-deps -e .
	touch $@

nightly: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/nightly_demo.sh

test: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

# The unit tests only (tests/unit: the library on arrays and temp files; no workspace,
# registry, server, DAG or browser): a few minutes instead of the full suite's quarter hour.
test-fast: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q tests/unit

dashboard: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/dashboard.sh
