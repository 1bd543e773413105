"""YAML with positions: every problem located, whatever the text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.yamlfile import load_yaml


def test_control_character_is_located() -> None:
    doc = load_yaml("x.yaml", text="a: 1\nb: ok\x07bad\n")
    (problem,) = doc.problems
    assert (problem.line, problem.col) == (2, 6)
    assert "unreadable character" in problem.message


def test_syntax_error_and_duplicate_key_are_located() -> None:
    assert [(p.line, p.col) for p in load_yaml("x.yaml", text="a: [1, 2\nb: 3\n").problems] == [(2, 2)]
    (dup,) = load_yaml("x.yaml", text="a: 1\nb: 2\na: 3\n").problems
    assert (dup.line, dup.col) == (3, 1) and "duplicate key 'a'" in dup.message


def test_positions_of_nested_values() -> None:
    doc = load_yaml("x.yaml", text="sources:\n  p:\n    signals:\n      t: {holding: 1, type: u}\n")
    assert doc.locate(("sources", "p", "signals", "t", "type")) == (4, 29)
    # The deepest node that exists: its value by default, its key with key=True.
    assert doc.locate(("sources", "p", "missing", "deeper")) == (3, 5)
    assert doc.locate(("sources", "p", "missing"), key=True) == (2, 3)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_data_or_located_problems_never_an_exception(text: str) -> None:
    doc = load_yaml("x.yaml", text=text, env={"A": "1"})
    for problem in doc.problems:
        assert problem.line >= 1 and problem.col >= 1, problem


def test_absurd_nesting_is_a_located_problem_not_a_recursion_error() -> None:
    """Before: PyYAML's recursive composer raised RecursionError out of load_yaml (and `mw-gateway check`)."""
    doc = load_yaml("x.yaml", text="a: 1\nb: " + "[" * 3000 + "]" * 3000 + "\n")
    (problem,) = doc.problems
    assert (problem.line, problem.col) == (2, 3003) and "nested 3001 levels deep" in problem.message
    assert doc.data is None
    fine = load_yaml("x.yaml", text="b: " + "[" * 50 + "1" + "]" * 50 + "\n")
    assert fine.problems == [] and fine.data is not None


LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


def test_aliases_of_aliases_are_refused_before_they_expand() -> None:
    """Before: nine aliases of nine aliases ("billion laughs") built 10^9 values: `check` and a rules reload
    hung, memory grew without bound."""
    doc = load_yaml("x.yaml", text=LAUGHS)
    (problem,) = doc.problems
    assert (
        problem.line == 1
        and "more than 200,000 values once its aliases (*name) are expanded" in problem.message
    )
    assert doc.data is None
    # Aliases as people use them still load.
    doc = load_yaml("x.yaml", text="base: &b {type: uint16, unit: 1}\nt1: *b\nt2: *b\n")
    assert doc.problems == [] and doc.data["t2"] == {"type": "uint16", "unit": 1}
