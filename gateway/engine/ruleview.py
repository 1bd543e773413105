"""The rule as the trigger runtimes and the template context read it.

The rule model (engine/model.py) is built from the trigger registry: its `when:` is the union of every kind's
schema. So the trigger modules must not import the model back, not even for type hints; they name what they
read here instead, as protocols that `Rule` (engine/model.py) and `CompiledRule` (engine/loader.py) satisfy.
mypy checks that they do where the engine builds a runtime (engine/triggers/__init__.py: make_runtime).
"""

from __future__ import annotations

from typing import Any, Protocol

from jinja2.environment import Template

from gateway.engine import templates as tpl


class RuleView(Protocol):
    """One rule of a rule file, validated (engine/model.py: Rule)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def when(self) -> Any: ...  # the kind's own WhenModel; each runtime knows which
    @property
    def task(self) -> Any: ...  # engine/model.py: TaskModel
    @property
    def cooldown(self) -> float: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def priority(self) -> str: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
    @property
    def while_open(self) -> str: ...
    @property
    def mode(self) -> str: ...  # live | shadow | approve
    @property
    def kind(self) -> str: ...
    @property
    def title(self) -> str: ...
    def trigger_fingerprint(self) -> str: ...


class CompiledView(Protocol):
    """A rule with its templates and expression compiled (engine/loader.py: CompiledRule)."""

    @property
    def rule(self) -> RuleView: ...
    @property
    def id(self) -> str: ...
    @property
    def file(self) -> str: ...
    @property
    def line(self) -> int: ...
    @property
    def description(self) -> Template: ...
    @property
    def title(self) -> Template | None: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
    @property
    def expr(self) -> tpl.CompiledExpr | None: ...
    @property
    def trigger_signals(self) -> tuple[str, ...]: ...
    @property
    def template_signals(self) -> tuple[str, ...]: ...
    @property
    def roots(self) -> frozenset[str]: ...
    @property
    def prefixes(self) -> frozenset[str]: ...
