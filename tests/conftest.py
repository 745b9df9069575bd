"""Process-wide settings and fixtures shared by every test dir. Helpers are in helpers.py, which the test modules
import (pytest puts tests/ on sys.path for this file, under the default rootdir/prepend import mode)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import compose_cfg, make_results

# one torch thread in the tests and in every process they start: these models gain little from a second
# thread, and two threads on a loaded 2-core machine run several times slower than one
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture
def cfg_factory():
    return compose_cfg


@pytest.fixture(scope="session")
def results_root(tmp_path_factory) -> Path:
    """helpers.make_results, once per test run: shared read-only by the test modules and, under xdist, by every
    worker (their basetemps share a parent). Copy a sweep before changing it."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return make_results(base / "results")
