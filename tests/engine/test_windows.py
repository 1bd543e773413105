"""The windowed kinds (avg / min / max, change, count) through the engine: every edge of the semantics of
docs/rules.md "Windows, counts and rates" (DESIGN.md section 8), their state across restarts and reloads,
status details, templates and `check` errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.core.errors import RuleError
from gateway.engine.engine import Engine
from tests.engine.helpers import T0, at, bad, engine, feed, good, ruleset

AVG = """
- id: vib
  when: {signal: pump7.vibration, avg: 5m, above: 4}
  task: {description: "avg {{ value }} over {{ window }} s, coverage {{ coverage }}"}
"""

CHANGE = """
- id: heat
  when: {signal: oven.temp, change: 3m, above: 10}
  task: {description: "up {{ value }} in {{ window }} s"}
"""

COUNT = """
- id: jams
  when: {count: press1.jam, within: 10m, at_least: 3}
  task: {description: "{{ value }} jams in {{ window }} s"}
"""


def _state(eng: Engine, rule: str, now: float) -> dict[str, Any]:
    return next(r for r in eng.rule_status(now) if r["id"] == rule)


def _restarted(eng: Engine, tmp_path: Path, text: str) -> Engine:
    """A new engine from the JSON of the old one's state, as after a gateway restart."""
    state = json.loads(json.dumps(eng.export_state()))
    return Engine(ruleset(tmp_path, text), gateway_id="test-gw", state=state)


# ---------------------------------------------------------------- the worked examples


def test_avg_worked_example_fires_at_7m_with_window_and_coverage(tmp_path: Path) -> None:
    eng = engine(tmp_path, AVG)
    firings = feed(eng, "pump7.vibration", [3, 3, 3, 3, 3, 6, 6, 6])
    assert at(firings) == [7.0]
    (f,) = firings
    assert f.key == "vib:2026-01-01T00:07:00.000Z"
    assert f.task.description == "avg 4.2 over 300 s, coverage 1.0"
    assert f.trigger == "avg"


def test_avg_is_3_6_at_6m_and_shown_on_the_status_page(tmp_path: Path) -> None:
    eng = engine(tmp_path, AVG)
    feed(eng, "pump7.vibration", [3, 3, 3, 3, 3, 6, 6])
    status = _state(eng, "vib", T0 + 360)
    assert status["value"] == pytest.approx(3.6)
    assert status["coverage"] == 1.0 and status["window"] == 300 and status["state"] == "idle"
    assert status["progress"]["unit"] == "avg over 5m (100% covered)"


def test_change_worked_example_fires_at_5m(tmp_path: Path) -> None:
    eng = engine(tmp_path, CHANGE)
    firings = feed(eng, "oven.temp", [20, 21, 22, 25, 30, 36])
    assert at(firings) == [5.0]
    assert firings[0].task.description == "up 14 in 180 s"


def test_count_worked_example_fires_at_6m_rearms_at_11m_fires_at_12m(tmp_path: Path) -> None:
    eng = engine(tmp_path, COUNT)
    jam = [False, True, False, True, False, False, True, False, False, False, False, False, True]
    firings = feed(eng, "press1.jam", jam[:11])
    assert at(firings) == [6.0]
    assert firings[0].key == "jams:2026-01-01T00:06:00.000Z"
    assert firings[0].task.description == "3 jams in 600 s"
    assert _state(eng, "jams", T0 + 600)["state"] == "firing"
    assert eng.tick(T0 + 659) == [] and _state(eng, "jams", T0 + 659)["state"] == "firing"
    assert eng.tick(T0 + 660) == []  # the 1m edge leaves the window: re-armed
    status = _state(eng, "jams", T0 + 660)
    assert status["state"] == "idle" and status["events"] == 2 and status["next_expiry"] == T0 + 180 + 600
    (f,) = eng.process(good("press1.jam", False, T0 + 700), T0 + 700) + eng.process(
        good("press1.jam", True, T0 + 720), T0 + 720
    )
    assert f.key == "jams:2026-01-01T00:12:00.000Z"


# ---------------------------------------------------------------- aggregates


def test_unknown_below_coverage_then_known(tmp_path: Path) -> None:
    eng = engine(tmp_path, AVG)
    # 9 everywhere, but a 3-minute hole: known again once 4 of the last 5 minutes are covered
    firings = feed(eng, "pump7.vibration", [9, None, None, None, 9, 9, 9, 9, 9])
    assert at(firings) == [8.0]
    assert "coverage 0.8" in firings[0].task.description


def test_unknown_interrupts_for_and_does_not_rearm(tmp_path: Path) -> None:
    text = """
    - id: vib
      when: {signal: pump7.vibration, avg: 5m, above: 4, for: 3m, coverage: 0.9}
      task: {description: "avg {{ value }}"}
    """
    eng = engine(tmp_path, text)
    # known from 5m (pending); the 1-minute hole at 7m..8m leaves 4 of 5 minutes covered from 8m to 12m:
    # unknown, `for` interrupted; known again at 13m, pending again, fires 3 minutes later
    firings = feed(eng, "pump7.vibration", [5] * 7 + [None] + [5] * 9)
    assert at(firings) == [16.0]
    assert firings[0].key == "vib:2026-01-01T00:13:00.000Z"
    # firing now; unknown (a long hole) does not re-arm
    feed(eng, "pump7.vibration", [None], start=T0 + 17 * 60)
    assert eng.tick(T0 + 40 * 60) == []
    assert _state(eng, "vib", T0 + 40 * 60)["state"] == "firing"
    assert _state(eng, "vib", T0 + 40 * 60)["value"] is None


def test_reset_below_is_the_hysteresis_of_the_aggregate(tmp_path: Path) -> None:
    text = """
    - id: vib
      when: {signal: pump7.vibration, max: 2m, above: 10, reset_below: 5}
      task: {description: "max {{ value }}"}
    """
    eng = engine(tmp_path, text)
    firings = feed(eng, "pump7.vibration", [1, 1, 12, 8, 8, 8, 8, 12, 4, 4, 4, 12])
    # fires at 2m (the value holding now counts for min / max); 8 never re-arms; 4 does once 12 left
    assert at(firings) == [2.0, 11.0]


def test_min_and_max_count_the_value_holding_now(tmp_path: Path) -> None:
    text = """
    - id: lo
      when: {signal: m.v, min: 2m, below: 0, coverage: 0.5}
      task: {description: "min {{ value }}"}
    """
    eng = engine(tmp_path, text)
    assert at(feed(eng, "m.v", [5, 5, -1])) == [2.0]


def test_a_non_numeric_value_is_a_hole_and_booleans_are_0_or_1(tmp_path: Path) -> None:
    text = """
    - id: duty
      when: {signal: m.run, avg: 10m, above: 0.5}
      task: {description: "duty {{ value }}"}
    """
    eng = engine(tmp_path, text)
    firings = feed(eng, "m.run", [True, False, "FAULT", True, True, True, True, True, True, True, True, True])
    # at 9m: [0, 2m) true then false, [2m, 3m) a hole, [3m, 9m] true: 8 of 10 minutes covered, mean 7/8
    assert at(firings) == [9.0]
    assert firings[0].task.description == "duty 0.875"


def test_a_clock_stepping_back_does_not_rewrite_the_window(tmp_path: Path) -> None:
    """A step back of 200 s (detected: more than 2 s back) moves the history with it: the window still
    covers the last 5 minutes of real time, none of it overwritten; a jitter back of 1 s stands still."""
    eng = engine(tmp_path, AVG)
    feed(eng, "pump7.vibration", [3, 3, 3, 3, 3, 3])  # 3 from T0 to T0 + 300
    assert eng.process(good("pump7.vibration", 9, T0 + 100), T0 + 100) == []
    assert _state(eng, "vib", T0 + 100)["value"] == pytest.approx(3.0)
    assert _state(eng, "vib", T0 + 160)["value"] == pytest.approx((3 * 240 + 9 * 60) / 300)
    eng.process(good("pump7.vibration", 3, T0 + 159), T0 + 159)  # 1 s back: no step, taken as T0 + 160
    assert _state(eng, "vib", T0 + 160)["value"] == pytest.approx((3 * 240 + 9 * 60) / 300)
    assert _state(eng, "vib", T0 + 190)["value"] == pytest.approx((3 * 210 + 9 * 60 + 3 * 30) / 300)


# ---------------------------------------------------------------- change


def test_change_is_unknown_without_a_value_then_or_now(tmp_path: Path) -> None:
    eng = engine(tmp_path, CHANGE)
    # a hole at 1m: at 4m the value that held at 1m is unknown; the bad sample at 6m makes now unknown
    firings = feed(eng, "oven.temp", [20, None, 20, 20, 40, 40, None])
    assert at(firings) == [5.0]
    assert _state(eng, "heat", T0 + 6 * 60)["value"] is None


def test_change_below_catches_a_fall(tmp_path: Path) -> None:
    text = """
    - id: drop
      when: {signal: m.level, change: 2m, below: -5}
      task: {description: "down {{ value }}"}
    """
    eng = engine(tmp_path, text)
    assert at(feed(eng, "m.level", [50, 49, 48, 47, 40])) == [4.0]


# ---------------------------------------------------------------- count


def test_count_edges_across_bad_samples_and_the_first_sample(tmp_path: Path) -> None:
    text = """
    - id: jams
      when: {count: press1.jam, within: 1h, at_least: 2}
      task: {description: "{{ value }} jams"}
    """
    eng = engine(tmp_path, text)
    # true first (no edge: nothing known before); true after bad after true: no edge;
    # false, bad, true: an edge; false, true: an edge -> 2
    firings = feed(eng, "press1.jam", [True, None, True, False, None, True, False, True])
    assert at(firings) == [7.0]


def test_count_of_one_bit_and_a_cooldown(tmp_path: Path) -> None:
    text = """
    - id: faults
      when: {count: press1.faults, bit: 4, within: 1h, at_least: 1}
      cooldown: 1h
      task: {description: "fault {{ value }}"}
    """
    eng = engine(tmp_path, text)
    firings = feed(eng, "press1.faults", [0, 16, 0, 2, 18, 2, 16, 0])
    assert at(firings) == [1.0]  # the second edge (4m) is within the cooldown; the count never fell to 0
    assert _state(eng, "faults", T0 + 480)["swallowed_by_cooldown"] == 0


def test_count_survives_a_restart_with_its_edges_and_last_value(tmp_path: Path) -> None:
    eng = engine(tmp_path, COUNT)
    feed(eng, "press1.jam", [False, True, False, True, False])  # edges at 1m, 3m
    eng2 = _restarted(eng, tmp_path, COUNT)
    # the first sample after the restart is an edge: the last good value before was false
    (f,) = eng2.process(good("press1.jam", True, T0 + 600), T0 + 600)
    assert f.key == "jams:2026-01-01T00:10:00.000Z"


# ---------------------------------------------------------------- restarts and reloads


def test_a_restart_leaves_a_hole_it_does_not_hold_the_last_value(tmp_path: Path) -> None:
    eng = engine(tmp_path, AVG)
    feed(eng, "pump7.vibration", [9, 9, 9, 9, 9])  # seen until 4m
    eng2 = _restarted(eng, tmp_path, AVG)
    eng2.tick(T0 + 7 * 60)
    status = _state(eng2, "vib", T0 + 7 * 60)
    assert status["coverage"] == pytest.approx(2 / 5)  # [2m, 4m] seen; the downtime 4m..7m is a hole
    assert status["value"] is None
    # the next sample starts a new stretch at its own time
    eng2.process(good("pump7.vibration", 9, T0 + 7 * 60), T0 + 7 * 60)
    assert _state(eng2, "vib", T0 + 9 * 60)["coverage"] == pytest.approx(2 / 5)
    assert _state(eng2, "vib", T0 + 10 * 60)["coverage"] == pytest.approx(3 / 5)


def test_the_window_survives_a_restart(tmp_path: Path) -> None:
    eng = engine(tmp_path, AVG)
    feed(eng, "pump7.vibration", [3, 3, 3, 3, 3, 6, 6])
    eng2 = _restarted(eng, tmp_path, AVG)
    assert eng2.process(good("pump7.vibration", 6, T0 + 7 * 60), T0 + 7 * 60) == []
    # [2m, 6m] from the saved window (3 3 3 6), 6m..7m the downtime: 4 minutes covered, mean 3.75 (without
    # the restart: 4.2, a firing)
    status = _state(eng2, "vib", T0 + 7 * 60)
    assert status["value"] == pytest.approx(3.75) and status["coverage"] == pytest.approx(0.8)
    (f,) = eng2.tick(T0 + 8 * 60)  # [3m, 6m] + [7m, 8m]: (3 + 3 + 6 + 6) / 4 = 4.5
    assert f.task.description == "avg 4.5 over 300 s, coverage 0.8"


def test_a_reload_keeps_the_value_still_holding(tmp_path: Path) -> None:
    eng = engine(tmp_path, AVG)
    feed(eng, "pump7.vibration", [3, 3, 3, 3, 3, 6, 6])
    eng.reload(ruleset(tmp_path, AVG.replace("avg {{ value }}", "mean {{ value }}")))
    (f,) = eng.tick(T0 + 7 * 60)
    assert f.task.description.startswith("mean 4.2 over 300 s")


def test_state_of_a_windowed_rule_is_json(tmp_path: Path) -> None:
    eng = engine(tmp_path, AVG + CHANGE + COUNT)
    feed(eng, "pump7.vibration", [1, 2, None, 3])
    feed(eng, "oven.temp", [1, 2])
    feed(eng, "press1.jam", [False, True], start=T0 + 600)
    state = eng.export_state()
    assert json.loads(json.dumps(state)) == state
    assert state["vib"]["kind"] == "avg" and state["vib"]["window"]["open"][1] == 3
    assert state["jams"]["last"] is True and state["jams"]["edges"] == [[T0 + 660, 1.0]]


def test_a_corrupt_saved_window_starts_afresh(tmp_path: Path) -> None:
    eng = engine(tmp_path, AVG)
    feed(eng, "pump7.vibration", [3, 3])
    state = eng.export_state()
    state["vib"]["window"]["cells"] = [["x"]]
    eng2 = Engine(ruleset(tmp_path, AVG), gateway_id="test-gw", state=state)
    assert _state(eng2, "vib", T0)["state"] == "idle" and eng2.export_state()["vib"]["window"]["cells"] == []


def test_memory_stays_bounded_at_a_high_rate(tmp_path: Path) -> None:
    from gateway.engine.triggers.window import DENSE_CELLS

    text = AVG.replace("avg: 5m", "avg: 1h")
    eng = engine(tmp_path, text)
    for i in range(20_000):  # 5.5 h at 1 Hz, a new value every second
        t = T0 + i
        eng.process(good("pump7.vibration", float(i % 7), t), t)
    cells = eng.export_state()["vib"]["window"]["cells"]
    assert len(cells) <= 2 * DENSE_CELLS + 2
    assert _state(eng, "vib", T0 + 19_999)["value"] == pytest.approx(3.0, abs=0.01)


# ---------------------------------------------------------------- check


def _problems(tmp_path: Path, when: str, **kwargs: Any) -> list[str]:
    with pytest.raises(RuleError) as info:
        ruleset(tmp_path, f"- id: r\n  when: {when}\n  task: {{description: abc}}\n", **kwargs)
    return [str(p).removeprefix(f"{tmp_path}/rules/rules.yaml:") for p in info.value.problems]


@pytest.mark.parametrize(
    ("when", "message"),
    [
        (
            "{signal: m.v, avg: 10m, bit: 3, above: 1}",
            "2:9: when: bit goes with count (rising edges of one bit of a word), not with avg: "
            "write {count: m.v, bit: 3, within: ..., at_least: ...}",
        ),
        (
            "{signal: m.v, avg: 10m, max: 5m, above: 1}",
            "2:9: when: an aggregate takes exactly one of avg, min or max (got avg, max)",
        ),
        ("{signal: m.v, min: 10m}", "2:9: when: min takes exactly one of above or below"),
        (
            "{signal: m.v, change: 5m, within: 1h, above: 3}",
            "2:9: when: within and at_least go with count: (events in a window), not with change",
        ),
        (
            "{signal: m.v, change: 5m, above: 3, coverage: 0.5}",
            "2:9: when: coverage goes with avg, min or max: change compares two values, not a window",
        ),
        (
            "{signal: m.v, avg: 10m, above: 1, coverage: 1.5}",
            "2:53: when.coverage: Input should be less than or equal to 1",
        ),
        ("{signal: m.v, avg: 0s, above: 1}", "2:9: when: avg: the window must be longer than 0s"),
        (
            "{signal: m.v, max: 5m, above: 3, reset_below: 4}",
            "2:9: when: reset_below (4) must not be over above (3)",
        ),
        ("{count: m.v, within: 1h}", "2:9: missing required key 'at_least'"),
        (
            "{count: m.v, at_least: 0, within: 1h}",
            "2:32: when.at_least: Input should be greater than or equal to 1",
        ),
        ("{signal: m.v, above: 1, within: 1h}", "2:33: unknown key 'within'"),
    ],
)
def test_check_reports_bad_combinations_at_their_place(tmp_path: Path, when: str, message: str) -> None:
    problems = _problems(tmp_path, when)
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_check_reports_a_window_shorter_than_the_poll(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "{signal: plc.v, avg: 2s, above: 1}", poll_intervals={"plc": 5.0})
    assert problems == [
        "2:30: the window avg: 2s is shorter than the poll interval of source 'plc' (5s): it sees one sample "
        "at most"
    ]
    # the same window over a source that does not poll (or polls faster) is fine
    ruleset(
        tmp_path,
        "- id: r\n  when: {signal: mq.v, avg: 2s, above: 1}\n  task: {description: abc}\n",
        poll_intervals={"plc": 5.0},
    )


def test_templates_referring_to_window_and_coverage_pass_the_load_check(tmp_path: Path) -> None:
    ruleset(tmp_path, AVG + CHANGE + COUNT)
    ruleset(
        tmp_path,
        "- id: r\n  when: {signal: m.v, above: 1}\n"
        '  task: {description: "w={{ window }} c={{ coverage }}"}\n',
    )


def test_a_bad_sample_of_an_unknown_signal_is_routed_nowhere(tmp_path: Path) -> None:
    eng = engine(tmp_path, AVG)
    assert eng.process(bad("pump7.other", T0), T0) == []


def test_the_status_page_line_of_windowed_rules(tmp_path: Path) -> None:
    from gateway.web.page import progress_text

    eng = engine(tmp_path, AVG + COUNT)
    feed(eng, "pump7.vibration", [3, 3, 3, 3, 3, 6, 6])
    feed(eng, "press1.jam", [False, True, False, True], start=T0 + 360)
    status = {r["id"]: r for r in eng.rule_status(T0 + 540)}
    # over [4m, 9m]: 1 minute of 3, 4 of 6 (the value holding since 5m)
    assert progress_text(status["vib"]["progress"]) == "5.40 / 4 avg over 5m (100% covered)"
    assert progress_text(status["jams"]["progress"]) == "2 / 3 events in 10m"
