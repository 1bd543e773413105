"""mw-gateway test: series notation, a clear diff on a wrong expectation, --run, exit codes."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

from gateway.engine.ruletest import MISSING, STALE, parse_series, run_rule_tests

RULES = """
- id: lube
  when: {counter: press1.strokes, every: 50000}
  task: {equipment: EQ-PRESS-01, description: "Lubricate press 1 at {{ value | int }} strokes"}
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _run(*paths: Path, run: str | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = run_rule_tests([str(p) for p in paths], run=run, out=out)
    return code, out.getvalue()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0+1000x3", [0, 1000, 2000, 3000]),
        ("10-2x2", [10, 8, 6]),
        ("1.5x2", [1.5, 1.5, 1.5]),
        ("1 _ 3 stale", [1, MISSING, 3, STALE]),
        ("_x2 stalex2 truex2", [MISSING, MISSING, STALE, STALE, True, True]),
        ("AUTO 'MANUAL'x2 \"a b\"", ["AUTO", "MANUAL", "MANUAL", '"a']),
        ("1e3 -5", [1000.0, -5]),
        ([1, None, "x"], [1, MISSING, "x"]),
        (7, [7]),
    ],
)
def test_series_notation(spec: object, expected: list[object]) -> None:
    assert parse_series(spec)[: len(expected)] == expected


def _project(tmp_path: Path, expect: str) -> Path:
    _write(tmp_path / "rules" / "press1.yaml", RULES)
    return _write(
        tmp_path / "rules" / "tests" / "press1_test.yaml",
        f"""
        rule_files: [../press1.yaml]
        interval: 1m
        tests:
          - name: lubrication every 50k strokes
            input:
              press1.strokes: 0+1000x120
            expect:
{textwrap.indent(textwrap.dedent(expect), " " * 14)}
          - name: nothing under 50k
            input:
              press1.strokes: 0+1000x49
            expect: []
        """,
    )


def test_passing_tests_from_the_folder(tmp_path: Path) -> None:
    _project(
        tmp_path,
        """
        - {at: 50m, rule: lube, description: "Lubricate press 1 at 50000 strokes", key: "lube:50000"}
        - {at: 100m, rule: lube, equipment: EQ-PRESS-01}
        """,
    )
    code, out = _run(tmp_path / "rules")
    assert code == 0, out
    assert out.splitlines()[-1] == "2 passed, 0 failed"


def test_a_wrong_expectation_fails_with_a_readable_diff(tmp_path: Path) -> None:
    test_file = _project(
        tmp_path,
        """
        - {at: 50m, rule: lube, description: "Lubricate press 1 at 5000 strokes"}
        - {at: 90m, rule: lube}
        """,
    )
    code, out = _run(test_file)
    assert code == 1
    assert f"FAIL {test_file}: lubrication every 50k strokes" in out
    assert "  ~ at      50m  lube   (fired, but differs)" in out
    assert (
        "        expected: 'Lubricate press 1 at 5000 strokes'\n"
        "        got:      'Lubricate press 1 at 50000 strokes'" in out
    )
    assert "  - at    1h30m  lube   (expected, did not fire)" in out
    assert "  + at    1h40m  lube  'Lubricate press 1 at 100000 strokes'   (fired, not expected)" in out
    assert f"ok   {test_file}: nothing under 50k" in out
    assert out.splitlines()[-1] == "1 passed, 1 failed"


def test_an_empty_expect_fails_when_something_fires(tmp_path: Path) -> None:
    test_file = _project(tmp_path, "[]")
    code, out = _run(test_file)
    assert code == 1
    assert "    expected: nothing" in out and "(fired, not expected)" in out


def test_run_selects_tests_by_regex(tmp_path: Path) -> None:
    test_file = _project(tmp_path, "[]")
    code, out = _run(test_file, run="^nothing")
    assert code == 0 and out.splitlines()[-1] == "1 passed, 0 failed"


def test_bad_test_file_and_bad_rules_are_failures(tmp_path: Path) -> None:
    bad = _write(
        tmp_path / "t" / "bad_test.yaml", "rule_files: [x.yaml]\ntests:\n  - name: n\n    exepct: []\n"
    )
    code, out = _run(bad)
    assert code == 1
    assert f"{bad}:4:5: unknown key 'exepct'" in out and f"{bad}:3:5: missing required key 'expect'" in out

    _write(
        tmp_path / "r" / "a.yaml", "- id: a\n  when: {signal: x.y, above: nope}\n  task: {description: abc}\n"
    )
    t = _write(
        tmp_path / "r" / "tests" / "a_test.yaml", "rule_files: [../a.yaml]\ntests: [{name: n, expect: []}]\n"
    )
    code, out = _run(t)
    assert code == 1 and "the rule files do not load" in out and "a.yaml:2:30: when.above" in out


def test_no_test_files_is_a_failure(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert _run(tmp_path / "empty")[0] == 1


def test_shipped_rules_pass() -> None:
    code, out = _run(Path(__file__).parents[2] / "rules")
    assert code == 0, out
