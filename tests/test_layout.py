"""The package's shape: data flows one way (CLI -> study runner -> stage -> engine -> shared infrastructure),
no module imports upward, the two engines never import each other, and there is no import cycle."""

from __future__ import annotations

import ast
from importlib.resources import files
from pathlib import Path

import pytest

PACKAGE = Path(str(files("optuna_nas")))
# Lower rank = more basic. A module imports only modules of a lower rank, or siblings in its own subpackage.
RANKS = {
    "optuna_nas": 0, "errors": 0, "layers": 0,
    "ops": 1, "resources": 1, "cost": 1, "data": 1, "heartbeat": 1, "workers": 1, "distributed": 1,
    "plotting": 2, "train": 2, "storage": 2,
    "artifacts": 3,
    "trials": 4,
    "darts": 5, "randgrow": 5,  # the engines
    "retrain": 6,  # any architecture of either engine
    "study": 7,  # stages, then the runner on top
    "report": 8,
    "cli": 9,
    "__main__": 10,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every optuna_nas module ``path`` imports, at the top or inside a function."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c.startswith("optuna_nas") and _exists(c)}
    return found - {name}


def _exists(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


GRAPH = {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _unit(module: str) -> str:
    """The ranked unit of a module: its top-level module or subpackage."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_upward_or_across_engines(module: str) -> None:
    unit = _unit(module)
    assert unit in RANKS, f"{module} has no place in the layering: add it to RANKS"
    for imported in GRAPH[module]:
        other = _unit(imported)
        if other == unit:
            continue  # a sibling in the same subpackage (cycles are caught below)
        assert RANKS[other] < RANKS[unit], f"{module} imports {imported}: upward or sideways"


def test_there_is_no_import_cycle() -> None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, f"import cycle: {' -> '.join(visiting[visiting.index(module):] + [module])}"
        visiting.append(module)
        for imported in GRAPH.get(module, ()):
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in GRAPH:
        visit(module)


def test_the_layering_check_sees_relative_and_lazy_imports() -> None:
    assert "optuna_nas.darts.supernet" in GRAPH["optuna_nas.darts.trilevel"]  # from .supernet import ...
    assert "optuna_nas.darts.draw" in GRAPH["optuna_nas.darts.objective"]  # imported inside a function
    assert "optuna_nas.errors" in GRAPH["optuna_nas.randgrow.hull"]  # from ..errors import ...
