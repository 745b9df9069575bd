"""Every test here needs the real SLURM cluster (scripts/slurm_up.sh): skipped when none answers, unless CI is set:
then a missing cluster is a failure."""

from __future__ import annotations

import os

import pytest
from helpers import cluster_answers


@pytest.fixture(scope="session", autouse=True)
def cluster():
    if not cluster_answers():
        if os.environ.get("CI"):
            pytest.fail("no SLURM cluster answers: .ci/run starts one with scripts/slurm_up.sh")
        pytest.skip("no SLURM cluster answers (start one with scripts/slurm_up.sh)")
