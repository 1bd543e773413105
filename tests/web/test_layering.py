"""The web side, the reconciliation and the housekeeping never import the runtime (no god object): they get
narrow, typed views (gateway/core/views.py). A short AST check until import-linter contracts cover it."""

from __future__ import annotations

import ast
from pathlib import Path

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
FORBIDDEN = ("gateway.runtime", "gateway.dispatcher", "gateway.app", "gateway.cli", "gateway.demo")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_web_reconcile_and_retention_do_not_import_the_runtime():
    files = [*sorted((GATEWAY / "web").glob("*.py")), GATEWAY / "reconcile.py", GATEWAY / "retention.py"]
    bad = {
        f"{path.relative_to(GATEWAY.parent)}: {name}"
        for path in files
        for name in _imports(path)
        if name.startswith(FORBIDDEN)
    }
    assert bad == set()


def test_core_imports_nothing_else_of_ours():
    bad = {
        f"{path.name}: {name}"
        for path in sorted((GATEWAY / "core").glob("*.py"))
        for name in _imports(path)
        if name.startswith("gateway") and not name.startswith("gateway.core")
    }
    assert bad == set()
