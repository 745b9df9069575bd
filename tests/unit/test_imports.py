"""Imports: each module imports only its own layer and the layers below it (docs/architecture.md's table, imports
inside functions counted), no cycle, and plugins that Hydra can discover without importing torch, W&B, matplotlib or
the training code."""

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
    *(f"grokpipe.{m}" for m in ("run.train", "run.stack", "models", "tasks", "optim", "config.validate")),
)
# docs/architecture.md's layers, bottom first: a module may import its own layer and those listed before it
LAYERS = (
    ("core", ("grokpipe.core",)),
    ("parts", tuple(f"grokpipe.{p}" for p in ("tasks", "models", "losses", "optim", "measures", "loggers"))),
    ("config", ("grokpipe.config",)),
    ("run", ("grokpipe.run",)),
    ("results", ("grokpipe.results",)),
    ("sweep", ("grokpipe.sweep",)),
    ("entry", ("grokpipe", "hydra_plugins.grokpipe_plugins")),  # the package's face, `python -m grokpipe`, plugins
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


def layer_of(module: str, layers=LAYERS) -> int:
    """The index of the layer holding `module`: the longest matching package prefix."""
    best, best_len = None, -1
    for i, (_name, packages) in enumerate(layers):
        for pkg in packages:
            if (module == pkg or module.startswith(pkg + ".")) and len(pkg) > best_len:
                best, best_len = i, len(pkg)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to a sub-package (docs/architecture.md)")
    return best


def upward_imports(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Every import of a module from a layer above the importer's, as `a (layer) imports b (layer)`."""
    out = []
    for module, targets in sorted(graph.items()):
        mine = layer_of(module, layers)
        for t in sorted(targets):
            if (theirs := layer_of(t, layers)) > mine:
                out.append(f"{module} ({layers[mine][0]}) imports {t} ({layers[theirs][0]})")
    return out


def test_every_module_imports_only_its_layer_and_those_below():
    graph = import_graph(PACKAGES, ROOT)
    assert upward_imports(graph) == []


LAYER_PACKAGES = ("core", "config", "run", "results", "sweep")


def test_every_module_sits_in_a_sub_package_with_a_one_line_docstring():
    flat = sorted(p.name for p in PACKAGES[0].glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert flat == [], f"modules outside a layer's sub-package: {flat}"
    for sub in LAYER_PACKAGES:
        doc = ast.get_docstring(ast.parse((PACKAGES[0] / sub / "__init__.py").read_text()))
        assert doc and len(doc.splitlines()) == 1, f"grokpipe/{sub}/ needs a one-line docstring"


def layer_table(doc: str) -> list[str]:
    """docs/architecture.md's layer table: its rows, top first."""
    section = doc.split("## The layers", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith(("| layer", "|--"))]


def test_the_architecture_table_names_every_module_in_its_layer_in_order():
    rows = layer_table((ROOT / "docs" / "architecture.md").read_text())
    for sub in LAYER_PACKAGES:
        row = next((r for r in rows if f"`grokpipe/{sub}/`" in r), None)
        assert row is not None, f"docs/architecture.md's layer table has no row for grokpipe/{sub}/"
        missing = [
            p.name
            for p in sorted((PACKAGES[0] / sub).glob("*.py"))
            if p.name != "__init__.py" and f"`{p.name}`" not in row
        ]
        assert missing == [], f"the grokpipe/{sub}/ row does not name {missing}"
    # the table lists the layers top first: the reverse of LAYERS
    order = [next(i for i, r in enumerate(rows) if f"`grokpipe/{sub}/`" in r) for sub in LAYER_PACKAGES]
    assert order == sorted(order, reverse=True), "the table's rows are not in the layers' order (top first)"


def test_an_upward_import_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    for sub in ("low", "high"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "high" / "a.py").write_text("from pkg.low import b\n")
    (pkg / "low" / "b.py").write_text("def f():\n    import pkg.high.a\n")
    layers = (("low", ("pkg.low",)), ("high", ("pkg.high",)), ("top", ("pkg",)))
    graph = import_graph((pkg,), tmp_path)
    assert upward_imports(graph, layers) == ["pkg.low.b (low) imports pkg.high.a (high)"]
    (pkg / "low" / "b.py").write_text("import json\n")
    assert upward_imports(import_graph((pkg,), tmp_path), layers) == []


def test_no_import_cycle_in_grokpipe_or_its_plugins():
    graph = import_graph(PACKAGES, ROOT)
    assert {"grokpipe.run.job", "grokpipe.core.cells", "hydra_plugins.grokpipe_plugins.grid_sweeper"} <= graph.keys()
    assert "grokpipe.core.cells" in graph["grokpipe.run.job"]  # the graph sees real edges
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


@pytest.mark.parametrize("module", ["grokpipe.core.cells", *(module_name(p, ROOT) for p in PLUGINS)])
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
