"""Proof of honesty: `mw-gateway backtest` and `mw-gateway test` agree firing for firing on the same data.

Every case of rules/tests/ (those without task events: a backtest closes tasks by --assume-open, not by
events), and random series over rules of every trigger kind, windows included (hypothesis)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.engine.ruletest import RuleTestFile, _load_test_file
from tests.backtest.agree import backtest_firings, ruletest_firings, write_case

RULES = Path(__file__).resolve().parents[2] / "rules"


def _cases() -> list[tuple[Path, int]]:
    out = []
    for path in sorted((RULES / "tests").glob("*.yaml")):
        _, spec, problems = _load_test_file(path)
        assert spec is not None and not problems, problems
        out += [(path, i) for i, case in enumerate(spec.tests) if not case.events]
    return out


CASES = _cases()


def test_most_rule_tests_are_compared():
    assert len(CASES) >= 15


@pytest.mark.parametrize("reader", ["arrow", "csv"])
@pytest.mark.parametrize(("path", "index"), CASES, ids=[f"{p.stem}-{i}" for p, i in CASES])
def test_rule_tests_agree(path, index, reader, tmp_path, monkeypatch):
    _, spec, _ = _load_test_file(path)
    assert spec is not None
    case = spec.tests[index]
    data = tmp_path / "data.csv"
    write_case(spec, case, data, wide=index % 2 == 1)
    expected = ruletest_firings(spec, case, path.parent, monkeypatch)
    assert [(r, at) for r, at, _, _ in expected] == [
        (e.rule, _start(spec) + e.at) for e in case.expect
    ]  # what `mw-gateway test` checks: the spy sees the same firings
    assert backtest_firings(spec, case, path.parent, data, reader=reader) == expected


def _start(spec):
    from gateway.engine.ruletest import T0

    return T0 if spec.start is None else spec.start


RANDOM_RULES = """
- id: hot
  when: {signal: m.temp, above: 50, for: 3m, reset_below: 40}
  cooldown: 10m
  task: {equipment: 1, description: "hot {{ value }}", assignees: [1]}
- id: cold
  when: {signal: m.temp, below: 10}
  task:
    equipment: 1
    description: "cold {{ value }} at {{ signals['m.count'] }}, level {{ plant.level }}"
    assignees: [1]
- id: strokes
  when: {counter: m.count, every: 25}
  task: {equipment: 1, description: "strokes {{ value | int }}", assignees: [1]}
- id: running
  when: {hours: m.run, every: 0.1}
  task: {equipment: 1, description: "hours {{ value | round(2) }}", assignees: [1]}
- id: both
  when: {expr: "m.temp > 30 and m.run"}
  task: {equipment: 1, description: "both {{ value }}", assignees: [1]}
- id: quiet
  when: {stale: m.temp, for: 150s}
  task: {equipment: 1, description: "quiet", assignees: [1]}
- id: warm-avg
  when: {signal: m.temp, avg: 4m, above: 35, coverage: 0.5}
  task: {equipment: 1, description: "avg {{ value | round(3) }}", assignees: [1]}
- id: cool-max
  when: {signal: m.temp, max: 3m, below: 20}
  task: {equipment: 1, description: "max {{ value }}", assignees: [1]}
- id: rising
  when: {signal: m.temp, change: 2m, above: 20}
  task: {equipment: 1, description: "change {{ value }}", assignees: [1]}
- id: starts
  when: {count: m.run, within: 5m, at_least: 2}
  task: {equipment: 1, description: "starts {{ value }}", assignees: [1]}
"""

_temp = st.one_of(st.integers(-5, 70), st.floats(-5, 70, allow_nan=False).map(lambda x: round(x, 2)))
_slot = st.one_of(_temp, st.just("_"), st.just("stale"))


def _series(items):
    return " ".join(str(x) for x in items)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    temp=st.lists(st.one_of(_temp, _temp, _temp, st.just("_"), st.just("stale")), min_size=1, max_size=40),
    count=st.lists(st.integers(0, 8), min_size=1, max_size=40),
    run=st.lists(st.booleans(), min_size=1, max_size=40),
    level=st.lists(st.one_of(st.integers(0, 9), st.just("stale")), min_size=40, max_size=40),
    interval=st.sampled_from([30, 60, 90]),
    wide=st.booleans(),
    reader=st.sampled_from(["arrow", "csv"]),
    grid=st.booleans(),
)
def test_random_series_agree(
    tmp_path_factory, monkeypatch, temp, count, run, level, interval, wide, reader, grid
):
    """plant.level is used by no trigger, only by a template: the backtest finds its value in the data when
    the template asks (it comes first in the input: the test feeds it before m.temp at each step)."""
    base = tmp_path_factory.mktemp("agree")
    (base / "rules.yaml").write_text(RANDOM_RULES)
    counter, total = [], 0
    for step in count:
        total = 0 if step == 8 else total + step  # 8: the counter resets
        counter.append(total)
    spec = RuleTestFile.model_validate(
        {
            "rule_files": ["rules.yaml"],
            "interval": interval,
            "tests": [
                {
                    "name": "random",
                    "input": {
                        "plant.level": _series(level),
                        "m.temp": _series(temp),
                        "m.count": _series(counter),
                        "m.run": _series("true" if r else "false" for r in run),
                    },
                    "expect": [],
                }
            ],
        }
    )
    case = spec.tests[0]
    data = base / "data.csv"
    write_case(spec, case, data, wide=wide)
    expected = ruletest_firings(spec, case, base, monkeypatch)
    # the default ticks at every time of the data; a --tick grid on the test's interval adds nothing
    tick = interval if grid else None
    assert backtest_firings(spec, case, base, data, reader=reader, tick=tick) == expected
