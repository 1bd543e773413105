"""Time the engine can trust (issue 13 items 6 and 11): a `for` timer restored after a restart needs a fresh
sample before it fires; steps of the wall clock (NTP on a Pi without RTC, a manual change) add no running
hours, end no `for` or cooldown early and make no signal stale (gateway/engine/clockwatch.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gateway.engine.engine import Engine
from tests.engine.helpers import T0, bad, good, ruleset

PRESSURE = """
- id: press
  when: {signal: line.pressure, above: 8, for: 6s}
  task: {description: "Pressure {{ value }}"}
"""


def _restart(eng: Engine, tmp_path: Path, text: str) -> Engine:
    state = json.loads(json.dumps(eng.export_state()))
    return Engine(ruleset(tmp_path, text), gateway_id="gw", state=state)


def test_a_restored_for_timer_does_not_fire_without_a_fresh_sample(tmp_path: Path) -> None:
    """Before: restarted 2 s into `for: 6s` with no value since, the task was created at the original time."""
    eng = Engine(ruleset(tmp_path, PRESSURE), gateway_id="gw")
    assert eng.process(good("line.pressure", 9.0, T0), T0) == []
    eng2 = _restart(eng, tmp_path, PRESSURE)
    for t in range(3, 120):
        assert eng2.tick(T0 + t) == [], t
    (status,) = eng2.rule_status(T0 + 120)
    assert status["state"] == "pending" and "awaiting" in status


def test_a_fresh_sample_confirming_the_condition_fires_with_the_original_start(tmp_path: Path) -> None:
    eng = Engine(ruleset(tmp_path, PRESSURE), gateway_id="gw")
    eng.process(good("line.pressure", 9.0, T0), T0)
    eng2 = _restart(eng, tmp_path, PRESSURE)
    assert eng2.tick(T0 + 10) == []
    (f,) = eng2.process(good("line.pressure", 9.5, T0 + 12), T0 + 12)
    assert f.key == "press:2026-01-01T00:00:00.000Z" and f.fired_at == T0 + 12
    assert f.task.description == "Pressure 9.5"


def test_a_fresh_sample_before_for_elapses_lets_the_timer_run_on(tmp_path: Path) -> None:
    eng = Engine(ruleset(tmp_path, PRESSURE), gateway_id="gw")
    eng.process(good("line.pressure", 9.0, T0), T0)
    eng2 = _restart(eng, tmp_path, PRESSURE)
    assert eng2.process(good("line.pressure", 9.0, T0 + 3), T0 + 3) == []
    assert eng2.tick(T0 + 5) == []
    (f,) = eng2.tick(T0 + 6)
    assert f.key == "press:2026-01-01T00:00:00.000Z"


@pytest.mark.parametrize("fresh", ["false", "bad"])
def test_a_fresh_sample_saying_otherwise_ends_the_restored_timer(tmp_path: Path, fresh: str) -> None:
    eng = Engine(ruleset(tmp_path, PRESSURE), gateway_id="gw")
    eng.process(good("line.pressure", 9.0, T0), T0)
    eng2 = _restart(eng, tmp_path, PRESSURE)
    sample = good("line.pressure", 7.0, T0 + 3) if fresh == "false" else bad("line.pressure", T0 + 3)
    assert eng2.process(sample, T0 + 3) == []
    assert eng2.rule_status(T0 + 4)[0]["state"] == "idle"
    assert eng2.tick(T0 + 60) == []


def test_an_expr_timer_restored_needs_a_fresh_sample_too(tmp_path: Path) -> None:
    text = '- id: e\n  when: {expr: "line.pressure > 8", for: 6s}\n  task: {description: "expr held"}\n'
    eng = Engine(ruleset(tmp_path, text), gateway_id="gw")
    eng.process(good("line.pressure", 9.0, T0), T0)
    eng2 = _restart(eng, tmp_path, text)
    assert eng2.tick(T0 + 30) == []
    assert [f.key for f in eng2.process(good("line.pressure", 9.0, T0 + 31), T0 + 31)] == [
        "e:2026-01-01T00:00:00.000Z"
    ]


# ---------------------------------------------------------------- wall-clock steps

HOURS = """
- id: run
  when: {hours: pump.running, every: 2h}
  task: {description: "Service"}
"""
STALE = """
- id: quiet
  when: {stale: pump.flow, for: 10m}
  task: {description: "Silent"}
"""
COOL = """
- id: hot
  when: {signal: pump.temp, above: 80}
  cooldown: 1h
  task: {description: "Hot"}
"""


def _ticks(eng: Engine, start: float, seconds: int, *, mono0: float, mono_start: float) -> list[str]:
    keys: list[str] = []
    for s in range(0, seconds, 10):
        keys += [f.key for f in eng.tick(start + s, mono0 + mono_start + s)]
    return keys


def test_a_forward_step_adds_no_running_hours(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Before: an NTP step of +3 h while running added 3 phantom hours (and fired the 2 h service)."""
    eng = Engine(ruleset(tmp_path, HOURS), gateway_id="gw")
    caplog.set_level(logging.WARNING, "gateway.engine")
    mono = 500.0
    eng.process(good("pump.running", True, T0), T0, mono)
    assert _ticks(eng, T0, 600, mono0=mono, mono_start=0) == []  # 10 minutes of real running
    stepped = T0 + 600 + 3 * 3600  # NTP: the wall clock jumps 3 h ahead, 10 s of real time later
    assert _ticks(eng, stepped, 600, mono0=mono, mono_start=610) == []
    assert eng.rule_status(stepped + 600)[0]["progress"]["current"] == pytest.approx(1200 / 3600, abs=0.01)
    assert len(caplog.records) == 1 and "stepped forward by 10790.0 s" in caplog.records[0].getMessage()


def test_a_backward_step_loses_no_running_hours_even_without_mono(tmp_path: Path) -> None:
    """Before: after a step back of 1 h, an hours rule counted nothing for an hour."""
    eng = Engine(ruleset(tmp_path, HOURS), gateway_id="gw")
    eng.process(good("pump.running", True, T0), T0)
    for s in range(0, 601, 10):
        eng.tick(T0 + s)
    back = T0 + 600 - 3600
    for s in range(10, 601, 10):
        eng.tick(back + s)
    assert eng.rule_status(back + 600)[0]["progress"]["current"] == pytest.approx(1200 / 3600, abs=0.01)


def test_a_forward_step_makes_no_signal_stale(tmp_path: Path) -> None:
    """Before: a +1 h step fired a stale rule for a signal that had been silent for seconds."""
    eng = Engine(ruleset(tmp_path, STALE), gateway_id="gw")
    eng.process(good("pump.flow", 3.0, T0), T0, 100.0)
    assert eng.tick(T0 + 5, 105.0) == []
    assert eng.tick(T0 + 3600 + 10, 110.0) == []  # the wall clock stepped +1 h; 10 s of real time passed
    assert eng.tick(T0 + 3600 + 599, 699.0) == []
    assert [f.rule_id for f in eng.tick(T0 + 3600 + 601, 701.0)] == ["quiet"]  # 10 real minutes of silence


def test_a_for_timer_measures_real_time_across_a_step(tmp_path: Path) -> None:
    text = PRESSURE.replace("for: 6s", "for: 10m")
    eng = Engine(ruleset(tmp_path, text), gateway_id="gw")
    eng.process(good("line.pressure", 9.0, T0), T0, 0.0)
    assert eng.tick(T0 + 7200 + 60, 60.0) == []  # +2 h wall step: 60 s of real time
    (f,) = eng.tick(T0 + 7200 + 600, 600.0)
    assert f.key == "press:2026-01-01T02:00:00.000Z"  # the start, moved with the step


def test_a_cooldown_is_not_shortened_by_a_forward_step(tmp_path: Path) -> None:
    eng = Engine(ruleset(tmp_path, COOL), gateway_id="gw")
    assert len(eng.process(good("pump.temp", 90, T0), T0, 0.0)) == 1
    eng.process(good("pump.temp", 20, T0 + 10), T0 + 10, 10.0)
    # +2 h wall step after 20 s of real time: the cooldown still has ~59 min to go
    assert eng.process(good("pump.temp", 90, T0 + 7220), T0 + 7220, 20.0) == []
    assert eng.rule_status(T0 + 7220)[0]["swallowed_by_cooldown"] == 1
    eng.process(good("pump.temp", 20, T0 + 7230), T0 + 7230, 30.0)
    assert len(eng.process(good("pump.temp", 90, T0 + 7200 + 3601), T0 + 7200 + 3601, 3601.0)) == 1


def test_without_mono_a_long_gap_is_real_time(tmp_path: Path) -> None:
    """Without a monotonic reading a forward step cannot be told from a gap (rule tests, simulations)."""
    eng = Engine(ruleset(tmp_path, HOURS), gateway_id="gw")
    eng.process(good("pump.running", True, T0), T0)
    assert [f.key for f in eng.tick(T0 + 7200)] == ["run:2h"]


WINDOWED = """
- id: vib
  when: {signal: pump7.vibration, avg: 5m, above: 100}
  task: {description: "avg"}
- id: jams
  when: {count: press1.jam, within: 10m, at_least: 3}
  task: {description: "{{ value }} jams"}
"""


def test_a_forward_step_keeps_the_windows_of_real_time(tmp_path: Path) -> None:
    """Before: a +1 h step emptied the windows (three jams within 4 real minutes made no count of 3) and
    stretched the value holding at the step over the whole window (avg 9 instead of 4.5)."""
    eng = Engine(ruleset(tmp_path, WINDOWED), gateway_id="gw")
    fired: list[str] = []
    for s, vib, jam in ((0, 3, False), (60, 3, True), (120, 3, False), (180, 9, True)):
        fired += [
            f.rule_id
            for f in eng.process_batch(
                [good("pump7.vibration", vib, T0 + s), good("press1.jam", jam, T0 + s)], T0 + s, 1000.0 + s
            )
        ]
    stepped = T0 + 3600 + 240  # NTP: the wall clock jumps 1 h ahead; 60 s of real time since the last call
    fired += [f.rule_id for f in eng.process_batch([good("press1.jam", False, stepped)], stepped, 1240.0)]
    fired += [
        f.rule_id for f in eng.process_batch([good("press1.jam", True, stepped + 10)], stepped + 10, 1250.0)
    ]
    assert fired == ["jams"]  # edges at 60 s, 180 s and 250 s of real time: 3 within 10 minutes
    status = {r["id"]: r for r in eng.rule_status(stepped + 10)}
    # [0, 180 s) 3, then 9 for the 70 s since: (3 * 180 + 9 * 70) / 250 covered
    assert status["vib"]["value"] == pytest.approx((3 * 180 + 9 * 70) / 250)
    assert status["jams"]["events"] == 3


def test_a_backward_step_keeps_the_windows_of_real_time(tmp_path: Path) -> None:
    """Before: after a step back of 1 h every `now` was taken as the last one seen for an hour, so nothing
    left the window: two jams 11 real minutes old still counted, and a third fired the rule."""
    eng = Engine(ruleset(tmp_path, WINDOWED), gateway_id="gw")
    fired: list[str] = []
    for s, jam in ((0, False), (60, True), (120, False), (180, True), (190, False)):
        fired += [f.rule_id for f in eng.process(good("press1.jam", jam, T0 + s), T0 + s)]
    back = T0 + 190 - 3600 + 10  # an operator sets the clock back by 1 h; 10 s of real time later
    fired += [f.rule_id for f in eng.process(good("press1.jam", False, back), back)]
    fired += [f.rule_id for f in eng.process(good("press1.jam", True, back + 650), back + 650)]
    assert fired == []  # real time 850 s: the jams at 60 s and 180 s are out of the 10 minutes
    assert {r["id"]: r for r in eng.rule_status(back + 650)}["jams"]["events"] == 1
