# Everything from nothing: `make test` and `make demo` create .venv, install torch
# (the local CPU wheel, installed first so that nothing pulls a CUDA build), then sara.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sara-installed
TORCH ?= torch==2.13.0

.PHONY: setup test test-fast lint demo repro-base repro bench vbench-env clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

test: setup lint
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check sara tests
	$(VENV)/bin/ruff format --check sara tests

test-fast: setup
	$(PY) -m pytest -m "not slow"

demo: setup
	$(VENV)/bin/sara demo --config configs/demo.yaml

# VBench in an environment of its own (it pins transformers 4.33.2 and numpy<2), for a CUDA
# machine: `sara eval vbench` runs its `vbench evaluate` from here
vbench-env:
	test -x .venv-vbench/bin/python || $(PYTHON) -m venv .venv-vbench
	.venv-vbench/bin/python -m pip install --quiet --upgrade pip
	.venv-vbench/bin/python -m pip install --quiet vbench

repro-base: setup
	$(VENV)/bin/sara repro base --config configs/repro.yaml

repro: setup
	$(VENV)/bin/sara repro study --config configs/repro.yaml

bench: setup
	$(VENV)/bin/sara bench trd

clean:
	rm -rf $(VENV) outputs .pytest_cache
