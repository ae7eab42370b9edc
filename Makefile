# Set-up and entry points. `make nightly` and `make test` each create the virtual
# environment first when it is missing or older than pyproject.toml / constraints.txt.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS := synth,mlops,dashboard,airflow,serve,test

.PHONY: venv nightly test dashboard bench

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip wheel setuptools
	$(BIN)/pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

nightly: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/nightly_demo.sh

test: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

dashboard: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/dashboard.sh
