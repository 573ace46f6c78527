"""Imports go down the layers (docs/architecture.md): an upward import anywhere fails this test.

The check reads every ``import`` of every module with :mod:`ast`, including imports inside
functions (lazy imports are still dependencies), so it needs no import of the code itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Top-level package or module -> the project packages it may import (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    "shoprec": frozenset(),
    "serving": frozenset(),
    "transform_module": frozenset({"shoprec"}),
    "trainer_module": frozenset({"shoprec"}),
    "ranking_transform_module": frozenset({"shoprec"}),
    "ranking_trainer_module": frozenset({"shoprec"}),
    "components": frozenset({"shoprec"}),
    "pipeline": frozenset({"shoprec", "components"}),
    "experiments": frozenset({"shoprec", "serving"}),
    "service": frozenset({"shoprec", "serving", "experiments"}),
    "ui": frozenset({"shoprec", "serving", "service", "experiments"}),
    "bench": frozenset({"shoprec", "serving", "service", "experiments", "components", "pipeline",
                        "transform_module", "trainer_module", "ranking_transform_module",
                        "ranking_trainer_module"}),
}
PROJECT = frozenset(ALLOWED) | {"tests"}


def _imported_roots(source: str, path: Path) -> list[tuple[int, str]]:
    """``(line, top-level name)`` of every absolute import in ``source``."""
    roots = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            roots += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.append((node.lineno, node.module.split(".")[0]))
    return roots


def layer_violations(repo: Path) -> list[str]:
    """Every import of a project package that :data:`ALLOWED` does not allow, as ``path:line: ...``."""
    violations = []
    for layer, allowed in ALLOWED.items():
        module_file = repo / f"{layer}.py"
        files = [module_file] if module_file.exists() else sorted((repo / layer).rglob("*.py"))
        for path in files:
            for line, root in _imported_roots(path.read_text(encoding="utf-8"), path):
                if root in PROJECT and root != layer and root not in allowed:
                    violations.append(f"{path.relative_to(repo)}:{line}: {layer} imports {root}; "
                                      f"{layer} may import only {', '.join(sorted(allowed)) or 'no project package'}")
    return violations


def test_imports_go_down_the_layers() -> None:
    assert layer_violations(REPO) == []


@pytest.mark.parametrize("layer, upward", [("shoprec", "service"), ("shoprec", "serving"),
                                           ("serving", "shoprec"), ("service", "bench"),
                                           ("components", "pipeline")])
def test_an_upward_import_is_caught(tmp_path: Path, layer: str, upward: str) -> None:
    package = tmp_path / layer / "sub"
    package.mkdir(parents=True)
    (package / "module.py").write_text(f"def lazy():\n    from {upward}.anything import name\n")
    assert layer_violations(tmp_path) == [
        f"{layer}/sub/module.py:2: {layer} imports {upward}; {layer} may import only "
        f"{', '.join(sorted(ALLOWED[layer])) or 'no project package'}"]


def test_every_top_level_package_has_a_layer() -> None:
    packages = {path.parent.name for path in REPO.glob("*/__init__.py")} - {"tests"}
    assert packages <= set(ALLOWED), f"give {sorted(packages - set(ALLOWED))} a layer in ALLOWED"
