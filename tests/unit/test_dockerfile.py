"""The Dockerfile lints clean and installs the project the way the README does."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import ROOT


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint not installed (pip install -e '.[dev]')"
    return found


def test_hadolint_passes():
    result = subprocess.run([_hadolint(), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_install_step_matches_the_readme():
    docker = (ROOT / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    step = re.search(r"python -m pip install --no-cache-dir \.", docker)
    assert step, "Dockerfile lost its install step"
    assert "python -m pip install --no-cache-dir ." in readme
    assert "torch==2.13.0" in (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^USER \d+$", docker, re.M), "non-root numeric user"
    assert '"launch.py"' in docker
