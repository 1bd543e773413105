"""The vetted closure evaluator agrees with Jinja's sandboxed compiled expression on every value."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.samples import Quality, Sample
from gateway.engine import templates as tpl

EXPRESSIONS = [
    "a.x > 200 and a.mode == 'AUTO'",
    "a.x >= 3 or not a.y < 2",
    "1 < a.x <= 10",
    "(a.x + a.y) * 2 - a.x / 4 > 7",
    "a.x // 3 % 2 == 1",
    "a.mode in ['AUTO', 'SEMI'] and a.mode not in ('OFF',)",
    "a.x | abs > 5 and a.mode | lower == 'auto'",
    "-a.x < +a.y",
    "a.x if a.y > 0 else a.y",
    "signals['a.x'] > 3",
]
values = st.one_of(
    st.integers(-50, 300), st.floats(-50, 300, allow_nan=False), st.sampled_from(["AUTO", "auto", "OFF"])
)


def _run(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except Exception as exc:  # the engine treats any error as "unknown": only whether one happens matters
        return "error", type(exc).__name__


@pytest.mark.parametrize("source", EXPRESSIONS)
def test_every_listed_expression_uses_the_fast_path(source: str) -> None:
    assert tpl.compile_expr(source, None).fast is not None


def test_unsupported_constructs_fall_back_to_jinja() -> None:
    compiled = tpl.compile_expr("a.x ** 2 > 4 and a.mode is string", None)
    assert compiled.fast is None
    ctx = tpl.signal_context(
        {"a.x": Sample("a.x", 3, 0.0), "a.mode": Sample("a.mode", "A", 0.0)}, {"a"}, set()
    )
    assert compiled.evaluate(ctx) is True


@settings(max_examples=300, deadline=None)
@given(source=st.sampled_from(EXPRESSIONS), x=values, y=values, mode=values)
def test_fast_path_agrees_with_jinja(source: str, x: Any, y: Any, mode: Any) -> None:
    compiled = tpl.compile_expr(source, None)
    samples = {name: Sample(name, v, 0.0) for name, v in (("a.x", x), ("a.y", y), ("a.mode", mode))}
    ctx = tpl.signal_context(samples, {"a"}, set())
    assert compiled.fast is not None
    fast = _run(compiled.fast, samples)
    slow = _run(compiled.evaluate, ctx)
    if fast[0] == "ok" and slow[0] == "ok":
        assert bool(fast[1]) == bool(slow[1])
    else:
        assert fast[0] == slow[0] == "error"


def test_the_compiled_function_is_unknown_while_a_signal_is_missing_or_bad() -> None:
    fast = tpl.compile_expr("a.x > 1 and a.y < 5", None).fast
    assert fast is not None
    x, y = Sample("a.x", 3, 0.0), Sample("a.y", 2, 0.0)
    assert fast({"a.x": x, "a.y": y}) is True
    assert fast({"a.x": x}) is None
    assert fast({"a.x": x, "a.y": Sample("a.y", None, 0.0, Quality.BAD)}) is None
    assert fast({"a.x": Sample("a.x", 0, 0.0), "a.y": y}) is False


def test_names_and_constants_never_become_code() -> None:
    """Signal names reach the generated source only as string literals, constants only by reference: a name
    with quotes and brackets, and constants Python has no literal for (inf), evaluate as themselves."""
    name = "a.we'ird\"]) or __import__('os')"
    fast = tpl.compile_expr(f"signals[{name!r}] == 'x' and 1e999 > 2 and (1,) == (1,)", None).fast
    assert fast is not None
    assert fast({name: Sample(name, "x", 0.0)}) is True
    assert fast({name: Sample(name, "y", 0.0)}) is False


def test_repeating_a_text_or_raising_to_a_power_is_bounded_in_both_evaluators() -> None:
    """Before: `a.mode * 1000000000` over a text signal built a gigabyte string in one C call."""
    text = {"a.mode": Sample("a.mode", "AUTO", 0.0), "a.x": Sample("a.x", 3, 0.0)}
    ctx = tpl.signal_context(text, {"a"}, set())
    for source in ("a.mode * 1000000000 == 'x'", "1000000000 * a.mode == 'x'", "a.x ** 100000000 > 1"):
        compiled = tpl.compile_expr(source, None)
        with pytest.raises(ValueError, match="more than"):
            compiled.evaluate(ctx)
        assert (compiled.fast is None) == ("**" in source)  # `**` is not in the compiled subset
        if compiled.fast is not None:
            with pytest.raises(ValueError, match="more than"):
                compiled.fast(text)
    assert tpl.compile_expr("a.mode * 2 == 'AUTOAUTO' and a.x ** 2 == 9", None).evaluate(ctx) is True


BIG = [
    "{{ value|string|center(10**10) }}",
    "{{ value|indent(10**9) }}",
    "{{ '%999999999s' % value }}",
    "{{ '%*d' % (10**9, 1) }}",
    "{{ '%999999999s'|format(value) }}",
    "{{ '{:>999999999}'.format(value) }}",
    "{{ '{:{}}'.format(1, 10**9) }}",
    "{{ ('x' * 99999).replace('x', 'x' * 99999) }}",
    "{{ ('x' * 99999)|replace('x', 'x' * 99999) }}",
    "{{ 'x'.rjust(10**9) }}",
    "{{ [1]|batch(10**9, 0)|list|length }}",
    "{{ [1]|slice(10**9)|list|length }}",
]


@pytest.mark.parametrize("source", BIG)
def test_a_template_cannot_build_a_huge_text(source: str) -> None:
    """Before: each of these built tens of megabytes to gigabytes in one C call (or looped 10^9 times)."""
    with pytest.raises(ValueError, match="more than 100,000"):
        tpl.ENV.from_string(source).render(value=10)


def test_the_usual_formatting_still_works() -> None:
    render = tpl.ENV.from_string(
        "{{ '%08.2f' % value }} {{ '%d of 5000000'|format(value) }} {{ '{:,}'.format(5000000) }}"
        " {{ value|string|center(6) }}|{{ 'a b'.replace('a', 'xyz') }} {{ [1, 2, 3]|batch(2)|list|length }}"
    ).render
    assert render(value=10) == "00010.00 10 of 5000000 5,000,000   10  |xyz b 2"


def test_a_text_signal_formatted_by_percent_in_an_expression_is_bounded() -> None:
    compiled = tpl.compile_expr("'%999999999s' % a.mode == 'x' or a.x % 2 == 0", None)
    assert compiled.fast is not None
    with pytest.raises(ValueError, match="more than"):
        compiled.fast({"a.mode": Sample("a.mode", "AUTO", 0.0), "a.x": Sample("a.x", 3, 0.0)})
    fast = tpl.compile_expr("a.x % 2 == 1", None).fast
    assert fast is not None and fast({"a.x": Sample("a.x", 3, 0.0)}) is True
