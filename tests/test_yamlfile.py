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
