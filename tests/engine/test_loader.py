"""load_rules: every problem at once, located as FILE:LINE:COL."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.core.errors import RuleError
from gateway.engine.loader import load_rules

KNOWN = ["press1.strokes", "press1.temp", "press1.pressure", "pump7.temp", "oven.*_temp", "cmms.stock.*"]


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems(paths: Path | list[Path], known: list[str] | None = KNOWN) -> list[str]:
    with pytest.raises(RuleError) as info:
        load_rules(paths, known_signals=known)
    return [str(p) for p in info.value.problems]


def test_valid_rules_load_with_globs_and_report_their_signals(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        """
        - id: a
          when: {signal: oven.zone1_temp, above: 200}
          task: {description: "Oven {{ value }} (press {{ press1.temp }})"}
        - id: b
          when: {signal: cmms.stock.LUBE-5L, below: 2}
          task: {description: "Reorder"}
        """,
    )
    rs = load_rules(tmp_path, known_signals=KNOWN)
    assert [r.id for r in rs.rules] == ["a", "b"]
    assert rs.signals() == {"oven.zone1_temp", "press1.temp", "cmms.stock.LUBE-5L"}


def test_every_problem_is_reported_at_once_with_its_position(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "a.yaml",
        """
        - id: lube
          when: {counter: press1.strokes, evry: 50000}
          task: {equipment: EQ-1, description: "Lube"}
        - id: hot
          when: {signal: pump7.temp, above: "85", for: 5 minutes}
          task: {description: "Hot {{ value }}", duartion: 2h}
        - id: cold
          when: {signal: pump7.tmp, below: 3}
          task: {description: "Cold {{ valeu }}"}
        """,
    )
    assert problems(f) == [
        f"{f}:2:9: missing required key 'every'",
        f"{f}:2:35: unknown key 'evry'; did you mean 'every'?",
        f"{f}:5:37: when.above: Input should be a valid number (got '85')",
        f"{f}:5:48: when.for: expected a duration like 500ms, 30s, 5m, 12h or 7d, got '5 minutes'",
        f"{f}:6:42: unknown key 'duartion'; did you mean 'duration'?",
        f"{f}:8:18: unknown signal 'pump7.tmp'; did you mean 'pump7.temp'?",
        f"{f}:9:23: unknown name 'valeu' in the description: templates see coverage, every, evidence, "
        "fired_at, gateway, rule, signal, signals, since, threshold, value, window and signals as "
        "source.signal",
    ]


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    rule = """
    - id: same
      when: {signal: pump7.temp, above: 85}
      task: {description: "Hot"}
    """
    a = write(tmp_path, "a.yaml", rule)
    b = write(tmp_path, "b.yaml", rule)
    assert problems(tmp_path) == [f"{b}:1:7: duplicate rule id 'same': already defined at {a}:1:7"]


def test_unknown_trigger_key_suggests_the_right_one(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "a.yaml",
        """
        - id: t
          when: {countr: press1.strokes, every: 4}
          task: {description: "abc"}
        """,
    )
    (p,) = problems(f)
    assert p.startswith(f"{f}:2:9: when: needs exactly one trigger") and "did you mean 'counter'?" in p


def test_template_that_cannot_render(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "a.yaml",
        """
        - id: a
          when: {signal: pump7.temp, above: 85}
          task: {description: "abc {{ value.foo.bar }}"}
        - id: b
          when: {signal: pump7.temp, above: 85}
          task: {description: "abc {{ value | nosuchfilter }}"}
        - id: c
          when: {signal: pump7.temp, above: 85}
          task: {description: "abc {{ value "}
        """,
    )
    out = problems(f)
    assert len(out) == 3
    assert out[0].startswith(f"{f}:3:23: the description cannot render: UndefinedError:")
    assert (
        out[1].startswith(f"{f}:6:23: the description is not a valid template:") and "nosuchfilter" in out[1]
    )
    assert out[2].startswith(f"{f}:9:23: the description is not a valid template:")


def test_description_that_can_exceed_3000_characters(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "a.yaml",
        f"""
        - id: loop
          when: {{signal: pump7.temp, above: 85}}
          task: {{description: "{{% for i in range(10) %}}{{{{ i }}}}{{% endfor %}}"}}
        - id: long
          when: {{signal: pump7.temp, above: 85}}
          task: {{description: "{"x" * 2950} {{{{ value }}}}"}}
        - id: capped
          when: {{signal: pump7.temp, above: 85}}
          task: {{description: "{"x" * 2900} {{{{ value | string | truncate(50) }}}}"}}
        """,
    )
    out = problems(f)
    assert len(out) == 2
    assert "can exceed 3000 characters" in out[0] and "loop" in out[0]
    assert out[1].startswith(f"{f}:6:") and "up to 3051" in out[1]


def test_wrong_threshold_types_and_bad_combinations(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "a.yaml",
        """
        - id: a
          when: {signal: pump7.temp, above: true}
          task: {description: "abc"}
        - id: b
          when: {signal: pump7.temp, above: 80, reset_below: 90}
          task: {description: "abc"}
        - id: c
          when: {counter: press1.strokes, every: 0}
          task: {description: "abc"}
        - id: d
          when: {signal: pump7.temp, above: 80, below: 3}
          task: {description: "abc"}
        - id: e f
          when: {stale: pump7.temp}
          task: {description: "abc"}
        """,
    )
    out = problems(f)
    assert out[0] == f"{f}:2:37: when.above: Input should be a valid number (got True)"
    assert out[1].startswith(f"{f}:5:9: when: reset_below (90) must not be over above (80)")
    assert out[2].startswith(f"{f}:8:42: when.every: Input should be greater than 0")
    assert "exactly one of above, below" in out[3]
    assert any("rule id 'e f'" in p for p in out) and any("missing required key 'for'" in p for p in out)


def test_expression_problems(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "a.yaml",
        """
        - id: ex
          when: {expr: "press1.pressur > 3 and foo"}
          task: {description: "abc"}
        - id: none
          when: {expr: "1 > 0"}
          task: {description: "abc"}
        """,
    )
    assert problems(f) == [
        f"{f}:2:16: unknown name 'foo' in the expression: write signals as source.signal",
        f"{f}:2:16: unknown signal 'press1.pressur' in the expression; did you mean 'press1.pressure'?",
        f"{f}:5:16: the expression refers to no signal (write source.signal, e.g. press1.temp > 80)",
    ]


def test_yaml_syntax_error_and_not_a_list(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "- id: x\n  when: {counter: x.y, every: [\n")
    b = write(tmp_path, "b.yaml", "id: x\n")
    out = problems(tmp_path)
    assert out[0].startswith(f"{a}:3:1: YAML syntax error")
    assert out[1] == f"{b}:1:1: a rule file is a list of rules: start each with '- id: ...'"


def test_reserved_metadata_and_without_known_signals(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "a.yaml",
        """
        - id: a
          when: {signal: any.thing, above: 1}
          metadata: {rule: mine}
          task: {description: "abc"}
        """,
    )
    assert problems(f, known=None) == [
        f"{f}:3:13: metadata: metadata key 'rule' is set by the gateway; choose another name"
    ]


def test_a_folder_loads_only_its_own_yaml_files_not_tests(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "- {id: a, when: {signal: pump7.temp, above: 1}, task: {description: abc}}\n")
    write(tmp_path / "tests", "a_test.yaml", "rule_files: [../a.yaml]\ntests: []\n")
    write(tmp_path, "notes.txt", "not a rule")
    assert [r.id for r in load_rules(tmp_path).rules] == ["a"]


def test_missing_path(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path / "nope")
    assert problem.startswith(f"{tmp_path / 'nope'}:0:0: no such rule file or folder: create it")


def test_an_absurdly_nested_expression_or_template_is_a_rule_error(tmp_path: Path) -> None:
    """Before: Jinja's recursive parser raised RecursionError out of the loader (`check`, `run`, `test`)."""
    deep = "(" * 150 + "press1.temp" + ")" * 150
    write(
        tmp_path,
        "r.yaml",
        f"""
        - id: e
          when: {{expr: "{deep} > 1"}}
          task: {{description: "hello world"}}
        - id: t
          when: {{signal: press1.temp, above: 1}}
          task: {{description: "{{{{ {deep.replace("press1.temp", "value")} }}}}"}}
        """,
    )
    assert problems(tmp_path) == [
        f"{tmp_path / 'r.yaml'}:2:16: expression nested too deeply to read (parentheses, brackets):"
        " simplify it",
        f"{tmp_path / 'r.yaml'}:6:23: the description is nested too deeply to read (parentheses, brackets,"
        " blocks): simplify",
    ]


def test_a_title_with_a_loop_or_a_template_that_would_build_a_gigabyte_is_refused(tmp_path: Path) -> None:
    """Before: nested `range()` loops in a title, or `"x" * 10**10` in a description, rendered for hours (or
    ran out of memory) at load, and then at every firing."""
    write(
        tmp_path,
        "r.yaml",
        """
        - id: loop
          when: {signal: press1.temp, above: 1}
          task:
            description: "hot"
            title: "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        - id: huge
          when: {signal: press1.temp, above: 1}
          task: {description: "{{ 'x' * 10**10 }}"}
        """,
    )
    assert problems(tmp_path) == [
        f"{tmp_path / 'r.yaml'}:5:12: the title uses a loop or a macro ({{% for %}}, {{% macro %}}): write it"
        " without one",
        f"{tmp_path / 'r.yaml'}:8:23: the description cannot render: ValueError: a repetition of more than"
        " 100,000 characters or items",
    ]
