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
    # at the first collection that crosses the limit: `f`, nine times `e` (9^6 values)
    assert (
        problem.line == 6
        and "more than 200,000 values once its aliases (*name) are expanded" in problem.message
    )
    assert doc.data is None
    # Aliases as people use them still load.
    doc = load_yaml("x.yaml", text="base: &b {type: uint16, unit: 1}\nt1: *b\nt2: *b\n")
    assert doc.problems == [] and doc.data["t2"] == {"type": "uint16", "unit": 1}


def _merges(levels: int) -> str:
    """Mappings that each merge nine times the one before (`<<: [*a0, *a0, ...]`): 9 keys, 9^levels pairs."""
    parts = ["&a0 {" + ", ".join(f"k{i}: 1" for i in range(9)) + "}"]
    parts += [f"&a{n} {{<<: [{', '.join([f'*a{n - 1}'] * 9)}]}}" for n in range(1, levels + 1)]
    return "x: {<<: [" + ",\n  ".join(parts) + "]}\n"


def test_merges_of_merges_are_refused_before_they_expand() -> None:
    """Before: `<<:` merges were flattened before anything was counted (8 s and 1.1 GB at 7 levels, all the
    memory at 9), and the refusal came with 200,000 'duplicate key' problems."""
    doc = load_yaml("x.yaml", text=_merges(9))
    (problem,) = doc.problems
    assert "more than 200,000 values" in problem.message and doc.data is None


def test_a_written_key_overrides_a_merged_one() -> None:
    """Before: `{<<: *p, host: b}` (YAML's way to reuse a block and change one key) was 'duplicate key'."""
    doc = load_yaml("x.yaml", text="p: &p {host: a, port: 1}\nq: {<<: *p, host: b}\nr: {host: c, host: d}\n")
    assert doc.data["q"] == {"host": "b", "port": 1}
    (dup,) = doc.problems
    assert (dup.line, dup.col) == (3, 14) and "duplicate key 'host'" in dup.message
