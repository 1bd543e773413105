"""Load rule files into a validated, compiled `RuleSet`, or raise `RuleError` with every problem at once.

Checks, each reported as FILE:LINE:COL: YAML syntax, unknown keys (with a "did you mean"), wrong types,
duplicate rule ids across files, unknown signal names (against the configured signals, when given), templates
that cannot compile or render with strict undefined names, descriptions that can exceed 3000 characters, bad
durations, expressions that do not parse.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import TemplateError, nodes
from jinja2.environment import Template
from pydantic import BaseModel, ValidationError

from gateway.core.durations import format_duration
from gateway.core.errors import Problem, RuleError
from gateway.core.samples import Sample
from gateway.core.yamlfile import YamlDoc, load_yaml
from gateway.engine import templates as tpl
from gateway.engine.context import base_context
from gateway.engine.model import Rule, SparePartModel, TaskModel
from gateway.engine.triggers import TRIGGER_KINDS, WHEN_MODELS, when_kind

Loc = tuple[str | int, ...]


@dataclass(frozen=True, eq=False)
class CompiledRule:
    """A rule with everything the engine needs precompiled: templates, the expression, the signals."""

    rule: Rule
    file: str
    line: int
    description: Template
    title: Template | None
    metadata: dict[str, Any]  # values: Template for template strings, else the literal value
    expr: tpl.CompiledExpr | None  # `expr` triggers and `hours: {expr: ...}`
    trigger_signals: tuple[str, ...]  # the samples that drive the trigger
    template_signals: tuple[str, ...]  # signals only read by templates
    roots: frozenset[str]  # source names used as namespaces in templates and the expression
    prefixes: frozenset[str]

    @property
    def id(self) -> str:
        return self.rule.id


@dataclass
class RuleSet:
    """Every rule of every file, in file order."""

    rules: list[Rule] = field(default_factory=list)
    compiled: dict[str, CompiledRule] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def signals(self) -> set[str]:
        """Every signal any rule refers to (triggers, expressions, templates)."""
        out: set[str] = set()
        for c in self.compiled.values():
            out.update(c.trigger_signals)
            out.update(c.template_signals)
        return out

    def __len__(self) -> int:
        return len(self.rules)


def rule_files(paths: Path | str | Sequence[Path | str]) -> tuple[list[Path], list[Problem]]:
    """A folder gives every *.yaml / *.yml directly in it, sorted (not rules/tests/); a file gives itself."""
    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(
                Problem(
                    str(path),
                    0,
                    0,
                    "no such rule file or folder: create it and put *.yaml rule "
                    "files in it (see docs/rules.md), or point gateway.rules at your rules",
                )
            )
    return files, problems


def load_rules(
    paths: Path | str | Sequence[Path | str],
    *,
    known_signals: Collection[str] | None = None,
    poll_intervals: Mapping[str, float] | None = None,
) -> RuleSet:
    """Load, validate and compile rule files. Raises RuleError carrying every problem found.
    `poll_intervals` (source name -> seconds, where the source polls) lets windows shorter than the poll of
    their signal's source be reported."""
    files, problems = rule_files(paths)
    known = None if known_signals is None else frozenset(known_signals)
    ruleset = RuleSet(files=files)
    first_seen: dict[str, str] = {}
    for path in files:
        doc = load_yaml(path, display_name=str(path))
        problems.extend(doc.problems)
        if doc.data is None:
            continue
        if not isinstance(doc.data, list):
            problems.append(doc.problem((), "a rule file is a list of rules: start each with '- id: ...'"))
            continue
        for i, item in enumerate(doc.data):
            rule = _validate(doc, i, item, problems)
            if rule is None:
                continue
            where = doc.problem((i, "id"), "")
            if rule.id in first_seen:
                problems.append(
                    doc.problem(
                        (i, "id"), f"duplicate rule id {rule.id!r}: already defined at {first_seen[rule.id]}"
                    )
                )
                continue
            first_seen[rule.id] = f"{where.file}:{where.line}:{where.col}"
            compiled = _compile(doc, i, rule, known, problems, poll_intervals or {})
            if compiled is not None:
                ruleset.rules.append(rule)
                ruleset.compiled[rule.id] = compiled
    if problems:
        raise RuleError(problems)
    return ruleset


# ---------------------------------------------------------------- validation errors


def _did_you_mean(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_at(parent: Loc, item: Any) -> type[BaseModel] | None:
    """The model whose keys apply at `parent` (a location inside one rule, tags removed)."""
    if parent == ():
        return Rule
    if parent == ("task",):
        return TaskModel
    if len(parent) == 3 and parent[:2] == ("task", "spare_parts"):
        return SparePartModel
    when = item.get("when") if isinstance(item, dict) else None
    kind = when_kind(when) if isinstance(when, dict) else None
    if parent[:1] == ("when",) and kind:
        model = WHEN_MODELS[kind]
        return model if parent == ("when",) else model.nested.get(tuple(str(p) for p in parent[1:]))
    return None


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "literal", "constrained-str"}


def _clean(loc: Sequence[Any]) -> Loc:
    """Drop pydantic's union tags from a location: the trigger kind after 'when', member type names."""
    parts = list(loc)
    if len(parts) > 1 and parts[0] == "when" and parts[1] in TRIGGER_KINDS:
        del parts[1]
    return tuple(
        p
        for p in parts
        if not (
            isinstance(p, str)
            and ("[" in p or "(" in p or p in _TYPE_TAGS or p.startswith("literal") or p[:1].isupper())
        )
    )


def _validate(doc: YamlDoc, index: int, item: Any, problems: list[Problem]) -> Rule | None:
    if not isinstance(item, dict):
        problems.append(doc.problem((index,), "each rule is a mapping (id:, when:, task:, ...)"))
        return None
    try:
        return Rule.model_validate(item)
    except ValidationError as exc:
        problems.extend(_validation_problems(doc, index, item, exc))
        return None


def _validation_problems(
    doc: YamlDoc, index: int, item: dict[str, Any], exc: ValidationError
) -> list[Problem]:
    out: list[Problem] = []
    seen: set[Loc] = set()
    for err in exc.errors(include_url=False):
        loc = _clean(err["loc"])
        kind = err["type"]
        where = ".".join(str(p) for p in loc)
        if kind == "extra_forbidden":
            key = str(loc[-1])
            model = _model_at(loc[:-1], item)
            allowed = _keys(model) if model else []
            hint = _did_you_mean(key, allowed) or (
                f"; allowed here: {', '.join(sorted(allowed))}" if allowed else ""
            )
            out.append(doc.problem((index, *loc), f"unknown key {key!r}{hint}", key=True))
            continue
        if loc in seen:
            continue  # one message per place (a union reports once per member)
        seen.add(loc)
        if kind == "when_kind":
            when = item.get("when")
            message = err["msg"]
            if isinstance(when, dict):
                known_keys = {k for m in WHEN_MODELS.values() for k in _keys(m)}
                given = [k for k in TRIGGER_KINDS if k in when]
                if len(given) > 1:
                    message += f" (got {', '.join(given)}: write one rule per trigger)"
                for key in when:
                    if key not in known_keys:
                        message += f"; unknown key {key!r}{_did_you_mean(str(key), TRIGGER_KINDS)}"
            out.append(doc.problem((index, "when"), message))
            continue
        if kind == "missing":
            out.append(doc.problem((index, *loc[:-1]), f"missing required key {str(loc[-1])!r}"))
            continue
        message = err["msg"].removeprefix("Value error, ")
        if (
            kind.endswith("_type")
            or kind.startswith("literal")
            or kind in ("greater_than", "less_than_equal")
        ):
            message += f" (got {err['input']!r})"
        out.append(doc.problem((index, *loc), f"{where}: {message}" if where else message))
    return out


# ---------------------------------------------------------------- compilation


def probe_context(
    rule: Rule, signals: Collection[str], roots: Collection[str], prefixes: Collection[str]
) -> dict[str, Any]:
    values = {name: Sample(name, 0.0, 0.0) for name in signals}
    signal = rule.when.signals[0] if rule.when.signals else ""
    return base_context(
        rule,
        values,
        roots,
        prefixes,
        value=rule.when.probe_value(),
        signal=signal,
        fired_at=0.0,
        threshold=rule.when.probe_value(),
        since=0.0,
        evidence=[],
        gateway="probe",
        extra=rule.when.template_values(),
    )


class _Collector:
    """Compiles the templates of one rule, reporting problems at their place."""

    def __init__(
        self, doc: YamlDoc, index: int, rule: Rule, known: frozenset[str] | None, problems: list[Problem]
    ):
        self.doc = doc
        self.index = index
        self.rule = rule
        self.known = known
        self.problems = problems
        self.signals: list[str] = []
        self.roots: set[str] = set()
        self.prefixes: set[str] = set()
        self.ok = True

    def fail(self, loc: Loc, message: str) -> None:
        self.ok = False
        self.problems.append(self.doc.problem((self.index, *loc), message))

    def refs(self, loc: Loc, what: str, refs: tpl.Refs) -> None:
        for name in refs.unknown_names:
            if what == "the expression":
                self.fail(loc, f"unknown name {name!r} in the expression: write signals as source.signal")
                continue
            self.fail(
                loc,
                f"unknown name {name!r} in {what}: templates see {', '.join(sorted(tpl.CONTEXT_NAMES))} "
                "and signals as source.signal",
            )
        for name in refs.unknown_signals:
            self.fail(loc, f"unknown signal {name!r} in {what}{self.hint(name)}")
        for name in refs.signals:
            if name not in self.signals:
                self.signals.append(name)
        self.roots |= refs.roots
        self.prefixes |= refs.prefixes()

    def hint(self, name: str) -> str:
        if not self.known:
            return ""
        exact = [k for k in self.known if not any(c in k for c in "*?[")]
        return _did_you_mean(name, exact) or "; it is not among the signals configured in gateway.yaml"

    def template(self, loc: Loc, source: str, what: str) -> tuple[Template, nodes.Template] | None:
        try:
            template, tree = tpl.compile_template(source)
        except TemplateError as exc:
            self.fail(loc, f"{what} is not a valid template: {exc}")
            return None
        except RecursionError:  # Jinja's parser recurses once per level of nesting
            self.fail(loc, f"{what} is nested too deeply to read (parentheses, brackets, blocks): simplify")
            return None
        self.refs(loc, what, tpl.template_refs(tree, self.known))
        if what != "the description" and tpl.has_loop(tree):  # the description's length check says it
            # Time, not length: nested `range()` loops render for hours, at load and at every firing.
            self.fail(
                loc, f"{what} uses a loop or a macro ({{% for %}}, {{% macro %}}): write it without one"
            )
            return None
        return template, tree

    def render_probe(self, loc: Loc, template: Template, what: str) -> str | None:
        ctx = probe_context(self.rule, self.signals, self.roots, self.prefixes)
        try:
            return tpl.render(template, ctx)
        except Exception as exc:  # anything a template can raise: UndefinedError, TypeError, SecurityError...
            self.fail(loc, f"{what} cannot render: {type(exc).__name__}: {exc}")
            return None


def _compile(
    doc: YamlDoc,
    index: int,
    rule: Rule,
    known: frozenset[str] | None,
    problems: list[Problem],
    polls: Mapping[str, float],
) -> CompiledRule | None:
    c = _Collector(doc, index, rule, known, problems)
    when = rule.when

    for name in when.signals:
        if not tpl.matches(name, known):
            c.fail(("when", when.kind), f"unknown signal {name!r}{c.hint(name)}")
        poll = polls.get(name.split(".", 1)[0])
        for key, seconds in when.windows():
            if poll is not None and seconds < poll:
                c.fail(
                    ("when", key),
                    f"the window {key}: {format_duration(seconds)} is shorter than the poll interval of "
                    f"source {name.split('.', 1)[0]!r} ({format_duration(poll)}): it sees one sample at most",
                )
    trigger_signals: list[str] = list(when.signals)

    expr: tpl.CompiledExpr | None = None
    expression = when.expression()
    if expression is not None:
        expr_source, loc = expression[0], ("when", *expression[1])
        try:
            expr = tpl.compile_expr(expr_source, known)
        except (TemplateError, SyntaxError) as exc:
            c.fail(loc, f"expression does not parse: {exc}")
        except RecursionError:  # Jinja's parser recurses once per level of nesting
            c.fail(loc, "expression nested too deeply to read (parentheses, brackets): simplify it")
        else:
            c.refs(loc, "the expression", expr.refs)
            if not expr.refs.signals and not expr.refs.unknown_signals:
                c.fail(loc, "the expression refers to no signal (write source.signal, e.g. press1.temp > 80)")
            trigger_signals.extend(s for s in expr.refs.signals if s not in trigger_signals)

    desc = c.template(("task", "description"), rule.task.description, "the description")
    title = c.template(("task", "title"), rule.task.title, "the title") if rule.task.title else None
    metadata: dict[str, Any] = {}
    meta_templates: list[tuple[str, Template]] = []
    for key, value in rule.metadata.items():
        if isinstance(value, str) and ("{{" in value or "{%" in value):
            compiled = c.template(("metadata", key), value, f"metadata {key!r}")
            if compiled:
                metadata[key] = compiled[0]
                meta_templates.append((key, compiled[0]))
        else:
            metadata[key] = value

    if desc is not None:
        bound = tpl.max_length(desc[1])
        if bound > tpl.MAX_DESCRIPTION:
            c.fail(
                ("task", "description"),
                "the description can exceed 3000 characters (the CMMS limit)"
                + (": a loop makes it unbounded" if bound == float("inf") else f": up to {int(bound)}")
                + "; shorten it or cap values with | truncate(N)",
            )
        elif bound < tpl.MIN_DESCRIPTION:
            c.fail(("task", "description"), "the description needs at least 3 characters (the CMMS minimum)")
    if c.ok:
        if desc is not None:
            c.render_probe(("task", "description"), desc[0], "the description")
        if title is not None:
            c.render_probe(("task", "title"), title[0], "the title")
        for key, template in meta_templates:
            c.render_probe(("metadata", key), template, f"metadata {key!r}")
    if not c.ok or desc is None:
        return None
    line = doc.locate((index,))[0]
    return CompiledRule(
        rule=rule,
        file=doc.file,
        line=line,
        description=desc[0],
        title=title[0] if title else None,
        metadata=metadata,
        expr=expr,
        trigger_signals=tuple(trigger_signals),
        template_signals=tuple(s for s in c.signals if s not in trigger_signals),
        roots=frozenset(c.roots | {s.split(".", 1)[0] for s in trigger_signals}),
        prefixes=frozenset(c.prefixes),
    )


__all__ = ["CompiledRule", "RuleSet", "base_context", "load_rules", "rule_files"]
