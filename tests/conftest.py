"""Process-wide settings and fixtures shared by every test dir. Helpers are in helpers.py, which the test modules
import (pytest puts tests/ on sys.path for this file, under the default rootdir/prepend import mode)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import compose_cfg, make_results

# one torch thread in the tests and in every process they start: these models gain little from a second
# thread, and two threads on a loaded 2-core machine run several times slower than one
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


# Work starts in collection order (pyproject.toml's addopts): the longest first. tests/cluster comes first by name;
# the validation fuzz (a minute of small runs in one test) would come last, and run on alone after the rest.
FIRST = ("tests/cluster/", "tests/unit/test_validation_fuzz.py")


def pytest_collection_modifyitems(items):
    rank = {prefix: k for k, prefix in enumerate(FIRST)}
    items.sort(key=lambda item: next((rank[p] for p in FIRST if item.nodeid.startswith(p)), len(FIRST)))


@pytest.fixture
def cfg_factory():
    return compose_cfg


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> Path:
    """This test run's directory for what is made once and read by many tests: under xdist, every worker's (their
    basetemps share a parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def results_root(shared_dir) -> Path:
    """helpers.make_results, once per test run: shared read-only by the test modules and, under xdist, by every
    worker. Copy a sweep before changing it."""
    return make_results(shared_dir / "results")


@pytest.fixture(scope="module")
def float64_one_thread():
    """float64, so that 'equal' means 1e-6 after many steps; one thread, as the local launcher runs each cell."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh tmpfs of that size under tmp_path: a disk that really fills up (skips without root)."""
    mounted = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"disk{len(mounted)}"
        mnt.mkdir()
        if subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True
        ).returncode:
            if os.environ.get("CI"):  # the full-disk claims of docs/reliability.md run in CI, or CI fails
                pytest.fail("cannot mount a tmpfs: CI runs as root (.ci/run) and must run the full-disk tests")
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)])
