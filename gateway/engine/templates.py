"""Sandboxed Jinja2 for task templates and `expr` triggers, with strict undefined names.

Signals are reached two ways in both templates and expressions:
- dotted, as written in rules: `press1.temp`, `oven.zone1.temp` (each source name is a namespace);
- by full name: `signals['press1.temp']` (for names a dotted path cannot spell, e.g. with '-').
A signal's value is its last sample's value (None while its quality is bad).

Expressions are compiled once, at load, with `SandboxedEnvironment.compile_expression`: no Python `eval`, no
attribute starting with '_', no access to Python internals.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from jinja2 import StrictUndefined, meta, nodes
from jinja2.environment import Template
from jinja2.parser import Parser
from jinja2.sandbox import SandboxedEnvironment

from gateway.core.samples import Quality, Sample
from gateway.engine import bounded
from gateway.engine.pyexpr import Evaluator, Unsupported, compile_python
from gateway.engine.pyexpr import chain as name_chain

# Names every template sees; a dotted name rooted at one of them is not a signal.
CONTEXT_NAMES = frozenset(
    {"value", "signal", "rule", "fired_at", "threshold", "every", "since", "signals", "gateway", "evidence"}
    | {"window", "coverage"}
)
MAX_DESCRIPTION = 3000
MIN_DESCRIPTION = 3
_EXPR_OUTPUT_BOUND = 100  # characters assumed for one {{ ... }} when bounding a description's length


class _Sandbox(SandboxedEnvironment):
    """Jinja's sandbox, with what can build a huge result from small inputs bounded (bounded.py): the `*`,
    `**` and `%` operators, `str` methods, `str.format`, and the filters that pad or repeat."""

    intercepted_binops = frozenset({"*", "**", "%"})
    _BINOPS: ClassVar[dict[str, Callable[[Any, Any], Any]]] = {
        "*": bounded.mul,
        "**": bounded.power,
        "%": bounded.mod,
    }

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        return self._BINOPS[operator](left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        bounded.check_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt: str = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            bounded.check_format(fmt, args, kwargs)
            return wrapped(*args, **kwargs)

        return checked


def _checked(check: Callable[..., None], fn: Callable[..., Any]) -> Callable[..., Any]:
    def filter_(*args: Any, **kwargs: Any) -> Any:
        check(*args, **kwargs)
        return fn(*args, **kwargs)

    return filter_


ENV = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
ENV.globals.pop("lipsum", None)  # lorem ipsum of any length: nothing a task needs
for _name, _check in bounded.filter_checks().items():
    ENV.filters[_name] = _checked(_check, ENV.filters[_name])


class Namespace:
    """`press1` in `press1.temp`: resolves the next name part against the last values, at access time."""

    __slots__ = ("_prefix", "_prefixes", "_values")

    def __init__(self, values: Mapping[str, Sample], prefix: str, prefixes: Collection[str]) -> None:
        self._values = values
        self._prefix = prefix
        self._prefixes = prefixes

    def __getitem__(self, key: str) -> Any:
        name = f"{self._prefix}.{key}"
        sample = self._values.get(name)
        if sample is not None:
            return sample.value if sample.quality is Quality.GOOD else None
        if name in self._prefixes:
            return Namespace(self._values, name, self._prefixes)
        raise KeyError(name)

    def __repr__(self) -> str:
        return f"<signals under {self._prefix}>"


class SignalsView(Mapping[str, Any]):
    """`signals['press1.temp']`: every signal's last value by full name."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Sample]) -> None:
        self._values = values

    def __getitem__(self, key: str) -> Any:
        sample = self._values[key]
        return sample.value if sample.quality is Quality.GOOD else None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def signal_context(
    values: Mapping[str, Sample], roots: Collection[str], prefixes: Collection[str]
) -> dict[str, Any]:
    """The part of a template/expression context that reaches signals."""
    ctx: dict[str, Any] = {root: Namespace(values, root, prefixes) for root in roots}
    ctx["signals"] = SignalsView(values)
    return ctx


# ---------------------------------------------------------------- analysis


def matches(name: str, known: Collection[str] | None) -> bool:
    """True when `name` is a known signal: an exact name or an fnmatch glob such as `cmms.stock.*`."""
    if known is None:
        return True
    if name in known:
        return True
    return any(("*" in k or "?" in k or "[" in k) and fnmatch.fnmatchcase(name, k) for k in known)


@dataclass
class Refs:
    """Signals and names an expression or a template refers to."""

    signals: list[str] = field(default_factory=list)
    roots: set[str] = field(default_factory=set)  # source names used as namespaces
    unknown_names: list[str] = field(default_factory=list)  # bare names that are neither context nor signals
    unknown_signals: list[str] = field(default_factory=list)  # dotted names not among the known signals

    def prefixes(self) -> set[str]:
        """Every dotted prefix (beyond the root) of the referenced signals: the nested namespaces."""
        out: set[str] = set()
        for name in self.signals:
            parts = name.split(".")
            for i in range(2, len(parts)):
                out.add(".".join(parts[:i]))
        return out


def find_refs(tree: nodes.Node, free: Collection[str], known: Collection[str] | None) -> Refs:
    """Walk an AST and resolve every dotted name rooted at a free (undeclared) variable."""
    refs = Refs()

    def resolve(chain: list[str], called: bool) -> None:
        root = chain[0]
        if root not in free:
            return
        if root == "signals":
            if len(chain) >= 2:
                add_signal(chain[1], chain[1])
            return
        if root in CONTEXT_NAMES:
            return
        if len(chain) == 1:
            refs.unknown_names.append(root)
            return
        if known is not None:
            for k in range(len(chain), 1, -1):
                name = ".".join(chain[:k])
                if matches(name, known):
                    refs.roots.add(root)
                    add_signal(name, name)
                    return
            refs.unknown_signals.append(".".join(chain[:-1] if called and len(chain) > 2 else chain))
            return
        refs.roots.add(root)
        add_signal(".".join(chain[:-1] if called and len(chain) > 2 else chain), "")

    def add_signal(name: str, _: str) -> None:
        if known is not None and not matches(name, known):
            refs.unknown_signals.append(name)
        elif name not in refs.signals:
            refs.signals.append(name)

    def walk(node: nodes.Node, called: bool = False) -> None:
        chain = name_chain(node)
        if chain is not None and len(chain) > 0:
            # A chain holds only names and constant subscripts: nothing else to find in it (walking its
            # inner nodes would take `oven.zone1` of `oven.zone1.temp` for a signal of its own).
            resolve(chain, called)
            return
        if isinstance(node, nodes.Call):
            walk(node.node, called=True)
            for arg in [*node.args, *node.kwargs, node.dyn_args, node.dyn_kwargs]:
                if arg is not None:
                    walk(arg)
            return
        for child in node.iter_child_nodes():
            walk(child)

    walk(tree)
    return refs


# ---------------------------------------------------------------- templates


def compile_template(source: str) -> tuple[Template, nodes.Template]:
    """Parse and compile a template; raises jinja2.TemplateError."""
    tree = ENV.parse(source)
    return ENV.from_string(source), tree


def template_refs(tree: nodes.Template, known: Collection[str] | None) -> Refs:
    return find_refs(tree, meta.find_undeclared_variables(tree), known)


def has_loop(tree: nodes.Node) -> bool:
    """Whether a template repeats anything: a loop, a macro (it may call itself), a call block."""
    return any(True for _ in tree.find_all((nodes.For, nodes.Macro, nodes.CallBlock)))


def max_length(tree: nodes.Node) -> float:
    """An upper bound on the rendered length: literal text plus a bound per {{ }}; loops are unbounded."""

    def expr_bound(node: nodes.Expr) -> float:
        if isinstance(node, nodes.Const):
            return len(str(node.value))
        if isinstance(node, nodes.Filter):
            if node.name == "truncate":
                if (
                    node.args
                    and isinstance(node.args[0], nodes.Const)
                    and isinstance(node.args[0].value, int)
                ):
                    return float(node.args[0].value)
                return 255.0
            if node.name in ("int", "round", "float", "length", "count"):
                return 24.0
        return float(_EXPR_OUTPUT_BOUND)

    def bound(node: nodes.Node) -> float:
        if isinstance(node, nodes.TemplateData):
            return float(len(node.data))
        if isinstance(node, nodes.Output):
            return sum(bound(n) if isinstance(n, nodes.TemplateData) else expr_bound(n) for n in node.nodes)
        if isinstance(node, nodes.For | nodes.Macro | nodes.CallBlock | nodes.Include | nodes.Extends):
            return math.inf
        if isinstance(node, nodes.If):
            return sum(bound(n) for n in node.body) + max(
                [sum(bound(n) for n in node.else_)] + [bound(n) for n in node.elif_]
            )
        return sum(bound(child) for child in node.iter_child_nodes() if isinstance(child, nodes.Stmt))

    return bound(tree)


def render(template: Template, context: Mapping[str, Any]) -> str:
    return template.render(context)


# ---------------------------------------------------------------- expressions


@dataclass(frozen=True)
class CompiledExpr:
    source: str
    evaluate: Callable[[Mapping[str, Any]], Any]  # Jinja's sandboxed compiled expression, over a context
    refs: Refs
    # The same expression as one Python function of the last values (pyexpr.py), when it uses only the vetted
    # subset (the usual case): True / False, or None when a signal it names is missing or bad.
    fast: Evaluator | None = None


def parse_expression(source: str) -> nodes.Expr:
    parser = Parser(ENV, source, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        tok = parser.stream.current
        raise SyntaxError(f"unexpected {tok.value!r} after the expression")
    return expr


def compile_expr(source: str, known: Collection[str] | None) -> CompiledExpr:
    """Parse, analyse and compile an expression once; raises jinja2.TemplateError or SyntaxError."""
    tree = parse_expression(source)
    refs = find_refs(tree, _free_names(tree), known)
    compiled = ENV.compile_expression(source, undefined_to_none=False)

    def evaluate(ctx: Mapping[str, Any]) -> Any:
        return compiled(ctx)

    try:
        fast: Evaluator | None = compile_python(tree, refs.signals)
    except Unsupported:
        fast = None
    return CompiledExpr(source, evaluate, refs, fast)


def _free_names(tree: nodes.Node) -> set[str]:
    return {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"}
