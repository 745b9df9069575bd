# make run: set up and run the default grokking run.  make test: set up and run the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup run test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,llc]"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) launch.py $(ARGS)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) outputs multirun
