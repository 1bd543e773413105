"""The layering as tests: no import cycle anywhere, and the core imports nothing else of ours.

import-linter (`make lint`, contracts in `.importlinter`) checks the layers; these facts are checked here as
well so that `pytest` alone catches them, including imports made only for type checking.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import grimp
import pytest

GATEWAY = Path(__file__).resolve().parents[1] / "gateway"


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("gateway", cache_dir=None)  # type-checking imports included


def _cycle(graph: grimp.ImportGraph) -> list[str]:
    """The modules of one import cycle (sorted), or [] when there is none."""
    sorter = TopologicalSorter({m: graph.find_modules_directly_imported_by(m) for m in graph.modules})
    try:
        sorter.prepare()
    except CycleError as exc:
        return sorted(set(exc.args[1]))
    return []


def test_no_import_cycle_anywhere(graph: grimp.ImportGraph) -> None:
    assert _cycle(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert _cycle(graph) == ["pkg.a", "pkg.b"]


def test_core_imports_nothing_else_of_ours() -> None:
    offenders = []
    for path in sorted((GATEWAY / "core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith("gateway.") and not name.startswith("gateway.core"):
                    offenders.append(f"{path.relative_to(GATEWAY.parent)}:{node.lineno}: {name}")
    assert offenders == []


def test_web_and_reconcile_never_import_the_runtime(graph: grimp.ImportGraph) -> None:
    """No god object: the web side and the reconciliation get narrow views (gateway/core/views.py)."""
    importers = {
        module
        for module in graph.modules
        if module.startswith("gateway.web") or module == "gateway.reconcile"
    }
    bad = sorted(
        f"{importer} -> {imported}"
        for importer in importers
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported.startswith(("gateway.runtime", "gateway.cli", "gateway.demo"))
    )
    assert bad == []
