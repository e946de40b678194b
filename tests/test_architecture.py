"""The package's shape is enforced: imports flow one way (docs/architecture in README "Layout"), no module imports
the top-level package, no import cycles between modules, and no module grows past ~400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "labelflip"

#: Layers, upstream first: a module may import only from its own layer or those above it.
LAYERS = [
    {"_validation", "_version", "_registry", "estimate", "metrics"},
    {"data", "models"},
    {"losses"},
    {"attacks", "zoo"},
    {"analysis", "testing"},
    {"estimators", "robust"},
    {"study"},
    {"report"},
    {"cli", "__main__"},
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "labelflip")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] == "labelflip":
                found.add(name)
                found.update(f"{name}.{a.name}" for a in node.names)
    return found


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"module {module} is in no layer of tests/test_architecture.py: add its package to LAYERS")


MODULES = _modules()


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "labelflip"))
def test_imports_flow_one_way(module: str) -> None:
    mine = _layer(module)
    for name in _imports(MODULES[module], module):
        if name == "labelflip":
            raise AssertionError(f"{module} imports the top-level package (take the version from labelflip._version)")
        target = ".".join(name.split(".")[:2])
        if target not in MODULES and name not in MODULES:
            continue  # an attribute, not a module
        assert _layer(target) <= mine, f"{module} (layer {mine}) imports {name} (layer {_layer(target)}): upward"


def test_no_import_cycles() -> None:
    graph = {}
    for module, path in MODULES.items():
        deps = set()
        for name in _imports(path, module):
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                deps.add(name)
        graph[module] = deps - {"labelflip"}
    # package __init__ files re-export their submodules; a cycle through them is an ordering artefact
    graph = {m: {d for d in deps if not m.startswith(d)} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, ()):
            if MODULES[dep].name == "__init__.py":
                continue
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, node, dep]))
            if dep not in state:
                visit(dep, [*stack, node])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


def test_no_module_over_400_lines() -> None:
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 420}
    assert not long, f"modules over ~400 lines: {long}"
