"""The package's folders are layers, and imports only run down them (README, "The package").

Every `import` of every module is read from its source, including imports inside functions, so a
lazy import cannot hide an upward arrow or a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minilineage"

# Lowest first. A module may import from its own layer or any layer below, never above.
LAYERS = (
    ("minilineage",),  # the root __init__: fast mode, chapter set-up
    ("minilineage.data", "minilineage.layers"),  # datasets and batches; neural building blocks
    ("minilineage.models",),  # the networks
    ("minilineage.diffusion",),  # schedules, forward process, losses, samplers, pipeline
    ("minilineage.checkpoint", "minilineage.distributed", "minilineage.train"),  # saving and loading; processes; the training loop
    ("minilineage.metrics", "minilineage.recipes"),  # evaluation; named training runs
    ("minilineage.widgets", "minilineage.cli", "minilineage.video_cli", "minilineage.bench", "minilineage.checks", "minilineage.exercises"),  # what users touch
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_imports(root: Path) -> dict[str, set[str]]:
    """Module name -> the package modules it imports (anywhere in its source), resolved to modules."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .x import y, from .. import z
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:  # `from pkg import sub` imports the module pkg.sub when there is one
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def layer_of(module: str) -> int:
    """The layer whose longest entry is `module` or a package containing it (the root counts only as itself)."""
    claims = [prefix for layer in LAYERS for prefix in layer
              if module == prefix or (prefix != "minilineage" and module.startswith(prefix + "."))]
    if not claims:
        raise ValueError(f"{module} belongs to no layer: add it to LAYERS in tests/test_layering.py")
    best = max(claims, key=len)
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                  for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_every_module_belongs_to_a_layer():
    for module in read_imports(PACKAGE):
        layer_of(module)  # raises if no layer claims it
    with pytest.raises(ValueError, match="minilineage.newthing belongs to no layer"):
        layer_of("minilineage.newthing")


def test_imports_only_run_down_the_layers():
    assert upward_imports(read_imports(PACKAGE)) == []


def test_the_package_has_no_import_cycle():
    assert find_cycle(read_imports(PACKAGE)) is None


def test_the_check_catches_a_planted_cycle_and_an_upward_lazy_import(tmp_path):
    root = tmp_path / "minilineage"
    (root / "data").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "data" / "__init__.py").write_text("from .arrays import ArrayData\n")
    (root / "data" / "arrays.py").write_text("def f():\n    from minilineage.data import captions\n")
    (root / "data" / "captions.py").write_text("from minilineage.data.arrays import f\n")
    (root / "cli.py").write_text("import minilineage.data\n")
    (root / "train.py").write_text("def g():\n    from minilineage import cli  # lazily, inside a function\n")
    graph = read_imports(root)
    assert graph["minilineage.data.arrays"] == {"minilineage.data.captions"}
    assert find_cycle(graph) == ["minilineage.data.arrays", "minilineage.data.captions", "minilineage.data.arrays"]
    assert upward_imports(graph) == ["minilineage.train (layer 4) imports minilineage.cli (layer 6)"]
