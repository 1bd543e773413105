"""hours + every, expr, stale + for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.core.errors import RuleError
from gateway.engine.engine import Engine
from tests.engine.helpers import T0, at, bad, engine, feed, good, ruleset

HOURS = """
- id: grease
  when: {hours: pump7.running, every: 2}
  task: {description: "Grease after {{ value | round(2) }} h"}
"""


def test_hours_accumulate_only_while_running(tmp_path: Path) -> None:
    eng = engine(tmp_path, HOURS)
    # one sample per 30 min: running from 0 h to 1 h, stopped until 2 h, running again: 2 h reached at 3 h
    firings = feed(eng, "pump7.running", [True, True, False, False, True, True, True, True], step=1800)
    assert [(f.fired_at - T0) / 3600 for f in firings] == [3.0]
    assert firings[0].key == "grease:2h" and firings[0].task.description == "Grease after 2.0 h"


def test_hours_advance_on_ticks_between_samples(tmp_path: Path) -> None:
    eng = engine(tmp_path, HOURS)
    eng.process(good("pump7.running", True, T0), T0)
    assert eng.tick(T0 + 7199) == []
    assert [f.key for f in eng.tick(T0 + 7200)] == ["grease:2h"]
    assert [f.key for f in eng.tick(T0 + 4 * 3600)] == ["grease:4h"]


def test_hours_bad_sample_stops_the_clock(tmp_path: Path) -> None:
    eng = engine(tmp_path, HOURS)
    eng.process(good("pump7.running", True, T0), T0)
    eng.process(bad("pump7.running", T0 + 3600), T0 + 3600)
    assert eng.tick(T0 + 10 * 3600) == []
    assert eng.rule_status(T0)[0]["progress"]["current"] == 1.0


def test_hours_persist_and_gateway_downtime_does_not_count(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, HOURS)
    eng = Engine(rs, gateway_id="test-gw")
    eng.process(good("pump7.running", True, T0), T0)
    eng.tick(T0 + 5400)  # 1.5 h
    eng2 = Engine(rs, gateway_id="test-gw", state=json.loads(json.dumps(eng.take_dirty_state())))
    # Down for 10 hours: that time is not counted; running again for 30 min reaches 2 h.
    eng2.process(good("pump7.running", True, T0 + 15 * 3600), T0 + 15 * 3600)
    assert eng2.tick(T0 + 15 * 3600 + 1799) == []
    assert [f.fired_at for f in eng2.tick(T0 + 15 * 3600 + 1800)] == [T0 + 15 * 3600 + 1800]


def test_hours_every_as_duration_and_expr(tmp_path: Path) -> None:
    eng = engine(
        tmp_path,
        """
        - id: loaded
          when: {hours: {expr: "compressor.pressure > 1"}, every: 90m}
          task: {description: "service"}
        """,
    )
    firings = feed(eng, "compressor.pressure", [0.5, 6, 6, 0.2, 6, 6, 6], step=1800)
    # loaded from 30 to 90 min (1 h), then from 120 min: 1.5 h at 150 min
    assert [(f.fired_at - T0) / 60 for f in firings] == [150.0]


def test_hours_rearm_on_completion(tmp_path: Path) -> None:
    eng = engine(tmp_path, HOURS.replace("every: 2", "every: 2, rearm: on_completion"))
    eng.process(good("pump7.running", True, T0), T0)
    assert len(eng.tick(T0 + 7200)) == 1
    eng.task_closed("grease", "completed", T0 + 3 * 3600)  # 3 h: next at 5 h
    assert eng.tick(T0 + 4.9 * 3600) == []
    assert [f.key for f in eng.tick(T0 + 5 * 3600)] == ["grease:5h"]


EXPR = """
- id: overpressure
  when:
    expr: "press1.pressure > 200 and press1.mode == 'AUTO'"
    for: 1m
  task: {description: "Press at {{ press1.pressure }} bar in {{ signals['press1.mode'] }}"}
"""


def test_expr_over_two_signals(tmp_path: Path) -> None:
    eng = engine(tmp_path, EXPR)
    out = eng.process(good("press1.mode", "AUTO", T0), T0)
    out += eng.process(good("press1.pressure", 210, T0), T0)
    out += eng.tick(T0 + 30)
    out += eng.process(good("press1.pressure", 215, T0 + 60), T0 + 60)
    (f,) = out
    assert f.fired_at == T0 + 60 and f.task.description == "Press at 215 bar in AUTO"
    assert {e.signal for e in f.evidence} == {"press1.pressure", "press1.mode"}
    assert f.trigger == "expr"


def test_expr_unknown_while_a_signal_is_missing_or_bad(tmp_path: Path) -> None:
    eng = engine(tmp_path, EXPR)
    assert feed(eng, "press1.pressure", [210] * 5) == []  # no mode yet
    eng.process(good("press1.mode", "AUTO", T0 + 300), T0 + 300)
    eng.process(bad("press1.mode", T0 + 330), T0 + 330)  # interrupts
    eng.process(good("press1.mode", "AUTO", T0 + 340), T0 + 340)
    assert eng.tick(T0 + 399) == []
    assert len(eng.tick(T0 + 400)) == 1


def test_expr_has_no_access_to_python_internals(tmp_path: Path) -> None:
    for source in (
        "press1.pressure.__class__.__mro__ > 1",
        "press1.pressure > ().__class__.__base__.__subclasses__()",
    ):
        eng = engine(
            tmp_path,
            f"""
            - id: evil
              when: {{expr: "{source}"}}
              task: {{description: "never"}}
            """,
        )
        eng.process(good("press1.pressure", 5, T0), T0)
        assert eng.tick(T0) == [] and eng.process(good("press1.pressure", 6, T0 + 1), T0 + 1) == []


def test_expr_syntax_error_is_reported_at_load(tmp_path: Path) -> None:
    with pytest.raises(RuleError) as info:
        ruleset(
            tmp_path,
            """
            - id: broken
              when: {expr: "press1.pressure >> 3"}
              task: {description: "x = {{ value }}"}
            """,
        )
    assert "expression does not parse" in str(info.value)


STALE = """
- id: silent
  when: {stale: oven.temp, for: 10m}
  task: {description: "No oven temperature since {{ since.strftime('%H:%M') }}"}
"""


def test_stale_fires_once_and_rearms_on_a_good_sample(tmp_path: Path) -> None:
    eng = engine(tmp_path, STALE)
    eng.process(good("oven.temp", 200, T0), T0)
    eng.process(bad("oven.temp", T0 + 60), T0 + 60)
    assert eng.tick(T0 + 599) == []
    (f,) = eng.tick(T0 + 600)
    assert (
        f.key == "silent:2026-01-01T00:00:00.000Z" and f.task.description == "No oven temperature since 00:00"
    )
    assert eng.tick(T0 + 3600) == []
    eng.process(good("oven.temp", 200, T0 + 4000), T0 + 4000)
    assert [f.fired_at for f in eng.tick(T0 + 4600)] == [T0 + 4600]


def test_stale_counts_from_engine_start_when_never_seen(tmp_path: Path) -> None:
    eng = engine(tmp_path, STALE)
    assert eng.tick(T0) == []
    assert len(eng.tick(T0 + 600)) == 1


def test_stale_restart_keeps_a_reported_outage(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, STALE)
    eng = Engine(rs, gateway_id="test-gw")
    eng.tick(T0)
    assert len(eng.tick(T0 + 600)) == 1
    eng2 = Engine(rs, gateway_id="test-gw", state=json.loads(json.dumps(eng.export_state())))
    assert eng2.tick(T0 + 700) == [] and eng2.tick(T0 + 5000) == []


def test_at_helper_minutes() -> None:
    assert at([]) == []
