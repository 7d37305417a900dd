"""The package is layered (docs/architecture.md): a module imports only modules of lower
layers or of its own package, and no chain of imports — at module level or inside a
function — comes back to where it started. Read from the source with ``ast``; nothing is
imported."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "biohsic"

# Bottom to top: a top-level module or sub-package of biohsic and its layer.
LAYERS = {
    "errors": 0, "seeding": 0, "functional": 0,
    "runs": 1, "data": 1, "architecture": 1, "memory": 1, "nonfinite": 1,
    "network": 2,
    "config": 3, "plots": 3,
    "presets": 4, "modulators": 4,
    "reservoir": 5, "rules": 5,
    "engine": 6,
    "train": 7,
    "sweep": 8,
    "compare": 9,
    "__init__": 10,
    "cli": 11,
    "__main__": 12,
}


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package_dir: Path, modules: set[str]) -> set[str]:
    """Every biohsic module imported anywhere in the file (functions included): ``from a
    import b`` imports the module ``a.b`` where there is one, else the module ``a``."""
    name = _module_name(path, package_dir)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                          for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c == "biohsic" or c.startswith("biohsic."))
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module name → the package's modules it imports; a module's own parent packages are
    not counted (they are initialised before it)."""
    files = {_module_name(p, package): p for p in package.rglob("*.py")}
    return {name: {t for t in _imports(path, package, set(files))
                   if t in files and t != name and not name.startswith(t + ".")}
            for name, path in files.items()}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(graph: dict[str, set[str]], module: str) -> list[str]:
    return sorted(t for t in graph[module]
                  if _unit(t) != _unit(module) and LAYERS[_unit(t)] >= LAYERS[_unit(module)])


def import_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One chain of imports that returns to its start, or None (depth-first search)."""
    state: dict[str, str] = {}

    def visit(path: list[str]) -> list[str] | None:
        state[path[-1]] = "open"
        for target in sorted(graph[path[-1]]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (circle := visit(path + [target])):
                return circle
        state[path[-1]] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (circle := visit([module])):
            return circle
    return None


GRAPH = import_graph()


def test_every_top_level_module_has_a_layer():
    missing = sorted({_unit(m) for m in GRAPH} - set(LAYERS))
    assert not missing, f"give {missing} a layer in LAYERS (and a line in docs/architecture.md)"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_layers(module):
    assert not upward_imports(GRAPH, module), f"{module} imports modules that are not below it"


def test_no_import_circle():
    circle = import_circle(GRAPH)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path):
    """The checks above can fail: a tiny package with both faults is caught, and the
    import inside a function counts."""
    package = tmp_path / "biohsic"
    (package / "functional").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "functional" / "__init__.py").write_text("from . import kernels\n")
    (package / "functional" / "kernels.py").write_text("def f():\n    from biohsic.train import x\n")
    (package / "train.py").write_text("from biohsic.functional import kernels\n")
    graph = import_graph(package)
    assert import_circle(graph) == ["biohsic.functional.kernels", "biohsic.train", "biohsic.functional.kernels"]
    assert upward_imports(graph, "biohsic.functional.kernels") == ["biohsic.train"]
    assert upward_imports(graph, "biohsic.train") == []
