# make run: set up and run the default grokking run.  make test: set up and run the test suite.
# make lock: re-resolve requirements.lock from pyproject.toml (LOCK_ARGS=--upgrade: every package to its newest).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# where `make lock` finds torch's CPU build: PyTorch's page of torch files, or a folder of wheels
TORCH_WHEELS ?= https://download.pytorch.org/whl/cpu/torch/
LOCK_ARGS ?=
# pip's --quiet, for every pip run below
export PIP_QUIET := 1

.PHONY: setup run test lint clean lock

# The README's install: a current pip (one that takes hashes from a -c file); torch's CPU build alone from PyTorch's
# index; the rest of requirements.lock from PyPI, the locked pip with it; then grokpipe itself, editable, built by the
# locked setuptools. Every file but the first pip's is checked against the lock's hashes.
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install --no-deps --index-url https://download.pytorch.org/whl/cpu -c requirements.lock torch
	$(PY) -m pip install --require-hashes -r requirements.lock
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) launch.py $(ARGS)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Python 3.11 on x86_64 Linux, whatever machine resolves it; torch's +cpu build is the newest 2.13.0 it sees
lock: setup
	UV_CUSTOM_COMPILE_COMMAND="make lock" $(PY) -m uv pip compile --quiet pyproject.toml --all-extras --generate-hashes \
	    --python-version 3.11 --python-platform x86_64-manylinux_2_28 --find-links $(TORCH_WHEELS) $(LOCK_ARGS) \
	    --output-file requirements.lock

clean:
	rm -rf $(VENV) outputs multirun
