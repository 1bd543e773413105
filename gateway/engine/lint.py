"""The checks `mw-gateway check` adds to the loader's, so that every problem of a rule file shows in one pass.

The loader stops at a rule's schema errors: what else is wrong with that rule (an unknown signal, an unknown
name in a template, a description too short, an id used twice) would only show once the schema errors are
fixed. `lint_rules` reads the same files and reports, for the rules the schema rejects, what the loader would
have said about them; and, for every rule, what the loader does not check:

- an empty `assignees:` list (written, but naming nobody);
- a comparison that can never hold because of the signal's declared type (`type:` in gateway.yaml, or the
  Modbus register type): a number signal against a string literal, a string signal against a number
  (`equals:`, `in:`, `above:`, `below:`, and `==`, `!=`, `<`... in an `expr:`).

Problems are reported at FILE:LINE:COL like the loader's; `mw-gateway check` merges both lists.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import TemplateError, nodes
from pydantic import ValidationError

from gateway.core.errors import Problem
from gateway.core.yamlfile import YamlDoc, load_yaml
from gateway.engine import templates as tpl
from gateway.engine.loader import rule_files
from gateway.engine.model import Rule
from gateway.engine.triggers import WHEN_MODELS

# when: keys whose string value is a signal, as the trigger kinds declare them
SIGNAL_KEYS = tuple(sorted({key for model in WHEN_MODELS.values() for key in model.signal_keys}))


def _type_of(name: str, types: Mapping[str, str]) -> str | None:
    """number | string | bool, or None when the type is not declared (`any`, unknown, a glob not matching)."""
    kind = types.get(name)
    if kind is None:
        for pattern, declared in types.items():
            if any(c in pattern for c in "*?[") and tpl.matches(name, [pattern]):
                kind = declared
                break
    return kind if kind in ("number", "string", "bool") else None


def _literal_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _mismatch(signal: str, kind: str, literal: Any) -> str | None:
    lit = _literal_kind(literal)
    if lit is None or lit == kind or {lit, kind} == {"bool", "number"}:
        return None  # bools compare with 0 / 1
    return (
        f"{signal} is a {kind} (as declared in gateway.yaml): comparing it with the {lit} {literal!r} is "
        "never true"
    )


class _Linter:
    def __init__(
        self, known: frozenset[str] | None, types: Mapping[str, str], problems: list[Problem]
    ) -> None:
        self.known = known
        self.types = types
        self.problems = problems
        self.ids: dict[str, tuple[str, bool]] = {}  # rule id -> (FILE:LINE:COL of its first use, valid)

    def add(self, doc: YamlDoc, loc: tuple[str | int, ...], message: str) -> None:
        self.problems.append(doc.problem(loc, message))

    def rule(self, doc: YamlDoc, index: int, item: dict[str, Any]) -> None:
        try:
            Rule.model_validate(item)
            valid = True
        except ValidationError:
            valid = False
        self.duplicate(doc, index, item.get("id"), valid)
        when = item.get("when")
        task = item.get("task")
        if not valid:  # what the loader would say once the schema errors are fixed
            if isinstance(when, dict):
                self.when_signals(doc, index, when)
            if isinstance(task, dict):
                self.templates(doc, index, task)
        if isinstance(task, dict) and task.get("assignees") == []:
            self.add(
                doc,
                (index, "task", "assignees"),
                "assignees is empty: the task would be assigned to nobody; list at least one (an e-mail or a "
                "user id) or leave the key out",
            )
        if isinstance(when, dict):
            self.types_in(doc, index, when)

    def duplicate(self, doc: YamlDoc, index: int, rule_id: Any, valid: bool) -> None:
        if not isinstance(rule_id, str) or not rule_id:
            return
        if rule_id not in self.ids:
            where = doc.problem((index, "id"), "")
            self.ids[rule_id] = (f"{where.file}:{where.line}:{where.col}", valid)
            return
        first, first_valid = self.ids[rule_id]
        if not (valid and first_valid):  # between two valid rules the loader says it
            self.add(doc, (index, "id"), f"duplicate rule id {rule_id!r}: already defined at {first}")

    def unknown(self, name: str) -> bool:
        return self.known is not None and not tpl.matches(name, self.known)

    def when_signals(self, doc: YamlDoc, index: int, when: dict[str, Any]) -> None:
        for key in SIGNAL_KEYS:
            name = when.get(key)
            if isinstance(name, str) and "." in name and self.unknown(name):
                self.add(doc, (index, "when", key), f"unknown signal {name!r}")
        sources = [("expr", when.get("expr"))]
        hours = when.get("hours")
        if isinstance(hours, dict):
            sources.append(("hours", hours.get("expr")))
        for key, source in sources:
            if not isinstance(source, str):
                continue
            try:
                expr = tpl.compile_expr(source, self.known)
            except (TemplateError, SyntaxError):
                continue  # the schema pass or the loader says it
            for name in expr.refs.unknown_signals:
                self.add(doc, (index, "when", key), f"unknown signal {name!r} in the expression")

    def templates(self, doc: YamlDoc, index: int, task: dict[str, Any]) -> None:
        for key, what in (("description", "the description"), ("title", "the title")):
            source = task.get(key)
            if not isinstance(source, str):
                continue
            try:
                _template, tree = tpl.compile_template(source)
            except TemplateError:
                continue
            refs = tpl.template_refs(tree, self.known)
            for name in refs.unknown_names:
                self.add(
                    doc,
                    (index, "task", key),
                    f"unknown name {name!r} in {what}: templates see {', '.join(sorted(tpl.CONTEXT_NAMES))} "
                    "and signals as source.signal",
                )
            for name in refs.unknown_signals:
                self.add(doc, (index, "task", key), f"unknown signal {name!r} in {what}")
            if key == "description" and tpl.max_length(tree) < tpl.MIN_DESCRIPTION:
                self.add(
                    doc,
                    (index, "task", key),
                    "the description needs at least 3 characters (the CMMS minimum)",
                )

    def types_in(self, doc: YamlDoc, index: int, when: dict[str, Any]) -> None:
        if not self.types:
            return
        signal = when.get("signal")
        if isinstance(signal, str) and (kind := _type_of(signal, self.types)):
            literals: list[tuple[str, Any]] = [
                (k, when[k]) for k in ("equals", "above", "below") if k in when and when[k] is not None
            ]
            if isinstance(when.get("in"), list):
                literals += [("in", v) for v in when["in"]]
            for key, literal in literals:
                if (why := _mismatch(signal, kind, literal)) is not None:
                    self.add(doc, (index, "when", key), why)
                    break
        source = when.get("expr")
        if isinstance(source, str):
            for why in self.expression_types(source):
                self.add(doc, (index, "when", "expr"), why)

    def expression_types(self, source: str) -> list[str]:
        try:
            tree = tpl.parse_expression(source)
        except (TemplateError, SyntaxError):
            return []
        out: list[str] = []
        compares = [tree] if isinstance(tree, nodes.Compare) else []
        for compare in [*compares, *tree.find_all(nodes.Compare)]:
            operands = [compare.expr, *(op.expr for op in compare.ops)]
            for left, right in itertools.pairwise(operands):
                for a, b in ((left, right), (right, left)):
                    name = _signal_of(a)
                    if name is None or not isinstance(b, nodes.Const):
                        continue
                    kind = _type_of(name, self.types)
                    if kind and (why := _mismatch(name, kind, b.value)) is not None:
                        out.append(why)
        return out


def _signal_of(node: nodes.Node) -> str | None:
    """`press1.temp` (a dotted name of at least two parts) or `signals['press1.temp']`."""
    if isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name) and node.node.name == "signals":
        arg = node.arg
        return arg.value if isinstance(arg, nodes.Const) and isinstance(arg.value, str) else None
    parts: list[str] = []
    while isinstance(node, nodes.Getattr):
        parts.append(node.attr)
        node = node.node
    if isinstance(node, nodes.Name) and parts and node.name not in tpl.CONTEXT_NAMES:
        return ".".join([node.name, *reversed(parts)])
    return None


def lint_rules(
    paths: Path | str | Sequence[Path | str],
    *,
    known_signals: Collection[str] | None = None,
    signal_types: Mapping[str, str] | None = None,
) -> list[Problem]:
    """The problems the loader does not report (see the module's docstring). Never raises for bad input."""
    files, _missing = rule_files(paths)  # the loader reports missing paths
    problems: list[Problem] = []
    linter = _Linter(
        None if known_signals is None else frozenset(known_signals), signal_types or {}, problems
    )
    for path in files:
        doc = load_yaml(path, display_name=str(path))
        if not isinstance(doc.data, list):
            continue
        for index, item in enumerate(doc.data):
            if isinstance(item, dict):
                linter.rule(doc, index, item)
    return problems
