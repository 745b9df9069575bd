"""Imports: no cycle among grokpipe's modules and plugins (function-level imports counted), and plugins that Hydra
can discover without importing torch, W&B, matplotlib or the training code."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

PACKAGES = (ROOT / "grokpipe", ROOT / "hydra_plugins" / "grokpipe_plugins")
PLUGINS = sorted(p for p in PACKAGES[1].glob("*.py") if p.name != "__init__.py")
# what plugin discovery (every `launch.py --help`) must not pay for
HEAVY = (
    "torch",
    "wandb",
    "matplotlib",
    *(f"grokpipe.{m}" for m in ("train", "packed", "models", "tasks", "optim", "validate")),
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may load: `from a.b import c` may load a.b.c as well as a.b."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: resolved against this module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[: len(package) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph(roots: tuple[Path, ...], base: Path) -> dict[str, set[str]]:
    """Module -> the modules of `roots` it imports anywhere in its body: at module level, in functions, in branches."""
    files = {module_name(f, base): f for root in roots for f in root.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets.update(imported(node, name, path.name == "__init__.py"))
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None when the graph is acyclic (depth-first, three colours)."""
    done, path = set(), []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if cycle := visit(nxt):
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        if cycle := visit(start):
            return cycle
    return None


def test_no_import_cycle_in_grokpipe_or_its_plugins():
    graph = import_graph(PACKAGES, ROOT)
    assert {"grokpipe.job", "grokpipe.sweep", "hydra_plugins.grokpipe_plugins.grid_sweeper"} <= graph.keys()
    assert "grokpipe.sweep" in graph["grokpipe.job"]  # the graph sees real edges
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import c\n")
    (pkg / "c.py").write_text("import pkg.d\n")
    (pkg / "d.py").write_text("def g():\n    if True:\n        from .a import x\n")
    graph = import_graph((pkg,), tmp_path)
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.a"]
    (pkg / "d.py").write_text("import json\n")
    assert find_cycle(import_graph((pkg,), tmp_path)) is None


def _heavy_loaded_after(code: str) -> list[str]:
    """The HEAVY modules in sys.modules after running `code` in a fresh interpreter."""
    report = f"import json, sys; print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    r = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["grokpipe.sweep", *(module_name(p, ROOT) for p in PLUGINS)])
def test_plugins_and_the_sweep_bookkeeping_import_nothing_heavy(module):
    assert _heavy_loaded_after(f"import {module}") == []


def test_launch_help_discovers_the_plugins_without_anything_heavy():
    help_run = (
        "import runpy, sys\n"
        "sys.argv = ['launch.py', '--help']\n"
        "try:\n    runpy.run_path('launch.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        # Hydra discovered the plugins: an empty list below says they are light
        "assert all(f'hydra_plugins.grokpipe_plugins.{m}' in sys.modules for m in ('grid_sweeper', 'slurm_launcher'))"
    )
    assert _heavy_loaded_after(help_run) == []


def test_the_heavy_check_sees_a_heavy_import():
    assert _heavy_loaded_after("import torch") == ["torch"]
