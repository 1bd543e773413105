"""The vetted subset of rule expressions, compiled to one plain Python function.

An `expr:` trigger (and `hours: {expr: ...}`) is evaluated on every sample of every signal it names: the
engine's second hottest path after the sample loop. Jinja's sandbox builds a context per evaluation; for
the subset below (constants, signals, comparisons, and / or / not, + - * / // %, a conditional, lists and
tuples, a few argument-less filters) the expression is instead translated once into the source of one
Python function, the way Jinja itself compiles templates, and that function is what runs:

    a.x > 200 and a.mode == 'AUTO'
    ->
    def expression(values):
        s0 = values.get('a.x')
        if s0 is None or s0.quality is not GOOD: return None
        s1 = values.get('a.mode')
        if s1 is None or s1.quality is not GOOD: return None
        return bool(((s0.value > k0) and (s1.value == k1)))

Nothing of the rule author's text reaches that source but signal names, as `repr()` string literals: every
constant and filter is passed in the function's namespace (k0, f_lower, ...), every operator comes from the
fixed tables below, and anything outside the subset raises `Unsupported` (the caller then keeps Jinja's
sandboxed evaluation). Python's chained comparisons (`1 < a.x <= 10`: each operand evaluated once, left to
right, stopping at the first false) and its `and` / `or` / conditional are Jinja's.
`tests/engine/test_expr_evaluator.py` holds the two to the same answers on random values.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from jinja2 import nodes

from gateway.core.samples import Quality, Sample
from gateway.engine import bounded

# True / False, or None when a signal the expression names is missing or bad. It may raise on odd values (a
# string compared with a number): the caller takes that as unknown too.
Evaluator = Callable[[Mapping[str, Sample]], bool | None]


class Unsupported(Exception):
    """The expression uses something outside the vetted subset: Jinja's sandbox evaluates it instead."""


_COMPARE = {
    "eq": "==",
    "ne": "!=",
    "gt": ">",
    "gteq": ">=",
    "lt": "<",
    "lteq": "<=",
    "in": "in",
    "notin": "not in",
}
_BINARY: dict[type[nodes.Node], str] = {
    nodes.Add: "+",
    nodes.Sub: "-",
    nodes.Div: "/",
    nodes.FloorDiv: "//",
}
FILTERS: dict[str, Callable[[Any], Any]] = {
    "abs": abs,
    "int": lambda v: int(float(v)),
    "float": float,
    "round": round,
    "lower": lambda v: str(v).lower(),
    "upper": lambda v: str(v).upper(),
    "string": str,
    "length": len,
}


def chain(node: nodes.Node) -> list[str] | None:
    """`a.b['c'].d` -> ['a', 'b', 'c', 'd'] when rooted at a plain name; else None."""
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            parts.append(node.arg.value)
            node = node.node
        elif isinstance(node, nodes.Name):
            parts.append(node.name)
            return parts[::-1]
        else:
            return None


def compile_python(tree: nodes.Expr, signals: Collection[str]) -> Evaluator:
    """The expression `tree` as one Python function of the last values (see the module docstring).
    `signals`: every signal the expression refers to, in order (each is checked present and good)."""
    ordered = list(dict.fromkeys(signals))
    slot = {name: f"s{i}" for i, name in enumerate(ordered)}
    namespace: dict[str, Any] = {"GOOD": Quality.GOOD}
    body = _source(tree, slot, namespace)
    lines = ["def expression(values):"]
    for name, var in slot.items():
        lines.append(f"    {var} = values.get({name!r})")
        lines.append(f"    if {var} is None or {var}.quality is not GOOD: return None")
    lines.append(f"    return bool({body})")
    try:
        code = compile("\n".join(lines), "<rule expression>", "exec")
    except (SyntaxError, RecursionError, MemoryError) as exc:  # nested beyond Python's parser: Jinja's turn
        raise Unsupported(f"too deep for Python's parser ({type(exc).__name__})") from None
    exec(code, namespace)  # our text only (docstring)
    fn: Evaluator = namespace["expression"]
    return fn


def _source(node: nodes.Node, slot: Mapping[str, str], namespace: dict[str, Any]) -> str:
    consts: list[Any] = []

    def const(value: Any) -> str:
        name = f"k{len(consts)}"
        consts.append(value)
        namespace[name] = value
        return name

    def src(node: nodes.Node) -> str:
        parts = chain(node)
        if parts is not None:
            name = parts[1] if parts[0] == "signals" and len(parts) == 2 else ".".join(parts)
            if name not in slot:
                raise Unsupported(name)
            return f"{slot[name]}.value"
        if isinstance(node, nodes.Const):
            return const(node.value)
        if isinstance(node, nodes.List):
            return "[" + ", ".join(src(item) for item in node.items) + "]"
        if isinstance(node, nodes.Tuple):
            return "(" + "".join(src(item) + ", " for item in node.items) + ")"
        if isinstance(node, nodes.And):
            return f"({src(node.left)} and {src(node.right)})"
        if isinstance(node, nodes.Or):
            return f"({src(node.left)} or {src(node.right)})"
        if isinstance(node, nodes.Not):
            return f"(not {src(node.node)})"
        if isinstance(node, nodes.Neg):
            return f"(-{src(node.node)})"
        if isinstance(node, nodes.Pos):
            return src(node.node)
        if isinstance(node, nodes.Mul | nodes.Mod):  # bounded: no text built a billion long (bounded.py)
            name = "mul" if isinstance(node, nodes.Mul) else "mod"
            namespace[name] = getattr(bounded, name)
            return f"{name}({src(node.left)}, {src(node.right)})"
        if type(node) in _BINARY:
            return f"({src(node.left)} {_BINARY[type(node)]} {src(node.right)})"  # type: ignore[attr-defined]
        if isinstance(node, nodes.CondExpr) and node.expr2 is not None:
            return f"({src(node.expr1)} if {src(node.test)} else {src(node.expr2)})"
        if isinstance(node, nodes.Compare):
            if any(o.op not in _COMPARE for o in node.ops):
                raise Unsupported("comparison")
            return "(" + src(node.expr) + "".join(f" {_COMPARE[o.op]} {src(o.expr)}" for o in node.ops) + ")"
        if isinstance(node, nodes.Filter) and node.node is not None and node.name in FILTERS:
            if node.args or node.kwargs or node.dyn_args or node.dyn_kwargs:
                raise Unsupported("filter arguments")
            namespace[f"f_{node.name}"] = FILTERS[node.name]
            return f"f_{node.name}({src(node.node)})"
        raise Unsupported(type(node).__name__)

    return src(node)
