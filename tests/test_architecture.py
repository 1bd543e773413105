"""The layering as tests: no import cycle anywhere, and the core imports nothing else of ours.

import-linter (`make lint`, contracts in `.importlinter`) checks the layers; these facts are checked here as
well so that `pytest` alone catches them, including imports made only for type checking.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

GATEWAY = Path(__file__).resolve().parents[1] / "gateway"


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_anywhere() -> None:
    graph = grimp.build_graph("gateway", cache_dir=None)  # type-checking imports included
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert _cycles(graph) == [["pkg.a", "pkg.b"]]


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


def test_web_and_reconcile_never_import_the_runtime() -> None:
    """No god object: the web side and the reconciliation get narrow views (gateway/core/views.py)."""
    graph = grimp.build_graph("gateway", cache_dir=None)
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
