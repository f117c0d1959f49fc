"""The library's imports flow one way, from the layers below to the layers above (docs/architecture.md),
and the library never imports streamlit."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "calib_core"
# Lowest first; a module may import its own layer and the layers below it.
LAYERS = [
    {"__init__", "errors", "paths", "hub", "files", "processes", "provenance", "devices", "half_matmul"},  # the package's __init__ holds only __version__
    {"models", "assets", "scoring", "housekeeping"},
    {"data"},
    {"prune"},
    {"metrics"},
    {"runs"},
    {"experiments"},
    {"studies"},
    {"jobs"},
    {"access", "cli", "__main__"},
]


def layer_of(module: str) -> int:
    top = module.split(".")[0] or "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(imported calib_core module relative to the package, line) for every import, lazy ones included."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = [*base, *(node.module.split(".") if node.module else [])]
            if node.module:
                found.append((".".join(target), node.lineno))
            else:  # `from . import name`: a submodule, or an attribute of the package's __init__
                for alias in node.names:
                    is_module = (PACKAGE.joinpath(*target, alias.name).is_dir()
                                 or PACKAGE.joinpath(*target, alias.name + ".py").exists())
                    found.append((".".join([*target, alias.name] if is_module else [*target, "__init__"]),
                                  node.lineno))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [(n[len("calib_core."):], node.lineno) for n in names if n.startswith("calib_core.")]
            assert not any(n.split(".")[0] == "streamlit" for n in names), f"{path} imports streamlit"
    return found


def test_imports_flow_from_lower_layers_to_higher_ones():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for target, line in imports_of(path):
            if target and layer_of(target) > layer_of(module):
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not upward, "\n".join(upward)


def _module_of(target: str) -> str:
    """`target` as a module file's name: a package is its `__init__`."""
    parts = target.split(".")
    return f"{target}.__init__" if PACKAGE.joinpath(*parts).is_dir() else target


def test_no_import_cycle_lazy_imports_included():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        graph[module] = {_module_of(t) for t, _ in imports_of(path) if t} - {module}
    cycles, state = [], {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        layer_of(".".join(path.relative_to(PACKAGE).with_suffix("").parts))  # StopIteration if unplaced
