from __future__ import annotations

import json
from pathlib import Path

from gateway.engine.engine import Engine
from tests.engine.helpers import T0, at, engine, feed, good, ruleset

OVERHEAT = """
- id: pump7-overheat
  when: {signal: pump7.temp, above: 85, for: 5m, reset_below: 80}
  task: {equipment: 2507, description: "Pump 7 overheating ({{ value }} °C)", assignees: [3], duration: 4h}
"""


def test_above_for_fires_once_after_holding(tmp_path: Path) -> None:
    eng = engine(tmp_path, OVERHEAT)
    firings = feed(eng, "pump7.temp", [70, 86, 86, 86, 86, 86, 86, 86, 86])
    assert at(firings) == [6.0]  # true from 1m, held 5m
    (f,) = firings
    assert f.key == "pump7-overheat:2026-01-01T00:01:00.000Z"
    assert f.task.description == "Pump 7 overheating (86 °C)"
    assert f.task.equipment == 2507 and f.task.duration_s == 4 * 3600
    assert f.evidence[0].value == 86 and f.evidence[0].ts == T0 + 60


def test_for_matures_on_tick_without_new_samples(tmp_path: Path) -> None:
    eng = engine(tmp_path, OVERHEAT)
    assert eng.process(good("pump7.temp", 90, T0), T0) == []
    assert eng.tick(T0 + 299) == []
    (f,) = eng.tick(T0 + 300)
    assert f.fired_at == T0 + 300


def test_for_interrupted_by_one_bad_sample(tmp_path: Path) -> None:
    eng = engine(tmp_path, OVERHEAT)
    firings = feed(eng, "pump7.temp", [90, 90, 90, None, 90, 90, 90, 90, 90, 90, 90])
    assert at(firings) == [9.0]  # restarted at 4m, not 0m


def test_for_interrupted_by_a_false_sample(tmp_path: Path) -> None:
    eng = engine(tmp_path, OVERHEAT)
    firings = feed(eng, "pump7.temp", [90, 90, 90, 84, 90, 90, 90, 90, 90, 90])
    assert at(firings) == [9.0]


def test_hysteresis_chatter_makes_one_firing(tmp_path: Path) -> None:
    eng = engine(tmp_path, OVERHEAT.replace("for: 5m, ", ""))
    firings = feed(eng, "pump7.temp", [84.9, 85.1, 84.9, 85.1, 84.0, 85.5, 81, 86, 80.5, 90])
    assert at(firings) == [1.0]
    # Under reset_below re-arms; the next crossing fires again.
    more = feed(eng, "pump7.temp", [79.9, 85.2], start=T0 + 3600)
    assert at(more, T0 + 3600) == [1.0]


FAULT = """
- id: hyd-fault
  when: {signal: press1.faults, bit: 3}
  task: {equipment: EQ-1, description: "Fault word {{ value }}"}
"""


def test_bit_held_high_makes_one_firing(tmp_path: Path) -> None:
    eng = engine(tmp_path, FAULT)
    firings = feed(eng, "press1.faults", [0, 8, 8, 9, 13, 8, 8, 8])
    assert at(firings) == [1.0]


def test_bit_rising_edge_again_after_it_fell(tmp_path: Path) -> None:
    eng = engine(tmp_path, FAULT)
    assert at(feed(eng, "press1.faults", [0, 8, 1, 8])) == [1.0, 3.0]


def test_link_drop_with_the_bit_high_is_not_a_new_edge(tmp_path: Path) -> None:
    eng = engine(tmp_path, FAULT)
    firings = feed(eng, "press1.faults", [8, None, None, 8, None, 8, 8])
    assert at(firings) == [0.0]


def test_bad_quality_never_fires(tmp_path: Path) -> None:
    eng = engine(tmp_path, OVERHEAT.replace("for: 5m, ", ""))
    assert feed(eng, "pump7.temp", [None, None, "hot", None, True]) == []


def test_below_with_reset_above(tmp_path: Path) -> None:
    eng = engine(
        tmp_path,
        """
        - id: low
          when: {signal: oven.temp, below: 180, reset_above: 190}
          task: {description: "Oven cold: {{ value }}"}
        """,
    )
    assert at(feed(eng, "oven.temp", [200, 179, 185, 170, 191, 175])) == [1.0, 5.0]


def test_equals_and_in(tmp_path: Path) -> None:
    eng = engine(
        tmp_path,
        """
        - id: manual
          when: {signal: compressor.mode, equals: MANUAL}
          task: {description: "manual"}
        - id: stopped
          when: {signal: compressor.state, in: [0, 3]}
          task: {description: "stopped"}
        """,
    )
    assert at(feed(eng, "compressor.mode", ["AUTO", "MANUAL", "MANUAL", "AUTO", "MANUAL"])) == [1.0, 4.0]
    assert at(feed(eng, "compressor.state", [1, 3, 0, 2, 0.0])) == [1.0, 4.0]


def test_equals_a_boolean_does_not_match_a_number(tmp_path: Path) -> None:
    eng = engine(
        tmp_path,
        """
        - id: stopped
          when: {signal: press1.running, equals: false}
          task: {description: "stopped"}
        """,
    )
    assert at(feed(eng, "press1.running", [True, 0, False, True, False])) == [2.0, 4.0]


def test_restart_in_the_middle_of_for_resumes_the_timer(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, OVERHEAT)
    eng = Engine(rs, gateway_id="test-gw")
    assert feed(eng, "pump7.temp", [70, 90, 90, 90]) == []  # pending since 1m
    state = json.loads(json.dumps(eng.take_dirty_state()))
    assert state["pump7-overheat"]["phase"] == "pending"
    eng2 = Engine(rs, gateway_id="test-gw", state=state)
    firings = feed(eng2, "pump7.temp", [90, 90, 90], start=T0 + 4 * 60)
    assert at(firings) == [6.0]
    assert firings[0].key == "pump7-overheat:2026-01-01T00:01:00.000Z"


def test_restart_after_firing_does_not_refire(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, OVERHEAT)
    eng = Engine(rs, gateway_id="test-gw")
    assert at(feed(eng, "pump7.temp", [90] * 7)) == [5.0]
    eng2 = Engine(rs, gateway_id="test-gw", state=json.loads(json.dumps(eng.export_state())))
    assert feed(eng2, "pump7.temp", [90] * 20, start=T0 + 3600) == []


def test_cooldown_is_persisted(tmp_path: Path) -> None:
    text = OVERHEAT.replace("for: 5m, ", "")
    rs = ruleset(tmp_path, text.replace("task:", "cooldown: 1h\n  task:"))
    eng = Engine(rs, gateway_id="test-gw")
    assert at(feed(eng, "pump7.temp", [90, 70])) == [0.0]
    eng2 = Engine(rs, gateway_id="test-gw", state=json.loads(json.dumps(eng.export_state())))
    assert feed(eng2, "pump7.temp", [90, 70], start=T0 + 1800) == []  # swallowed by the cooldown
    (status,) = eng2.rule_status(T0 + 1900)
    assert status["swallowed_by_cooldown"] == 1 and status["until"] == T0 + 3600
    assert at(feed(eng2, "pump7.temp", [90], start=T0 + 3600), T0 + 3600) == [0.0]


def test_status_pending_since(tmp_path: Path) -> None:
    eng = engine(tmp_path, OVERHEAT)
    feed(eng, "pump7.temp", [70, 90])
    (status,) = eng.rule_status(T0 + 120)
    assert status["state"] == "pending" and status["since"] == T0 + 60 and status["fires_at"] == T0 + 360


def test_disabled_rule_never_fires_and_shows_disabled(tmp_path: Path) -> None:
    eng = engine(tmp_path, OVERHEAT.replace("task:", "enabled: false\n  task:"))
    assert feed(eng, "pump7.temp", [90] * 10) == []
    assert eng.rule_status(T0)[0]["state"] == "disabled"


def test_firing_carries_everything_the_store_needs(tmp_path: Path) -> None:
    eng = engine(
        tmp_path,
        """
        - id: hot
          name: Hot
          when: {signal: pump7.temp, above: 85}
          priority: high
          while_open: create
          metadata: {zone: B, reading: "{{ value }} at {{ fired_at.strftime('%H:%M') }}"}
          task:
            equipment: EQ-P7
            title: "Hot {{ signal }}"
            description: "{{ rule.name }}: {{ value }} / other {{ signals['pump7.flow'] }}"
            assignees: [a@b.example, 3]
            tags: [t1]
            duration: 90m
            spare_parts: [{article: SEAL, quantity: 2}]
            checklist: CL-1
            thing_id: TH-9
        """,
    )
    eng.process(good("pump7.flow", 12.5, T0), T0)
    (f,) = eng.process(good("pump7.temp", 90, T0 + 60), T0 + 60)
    assert f.priority == "high" and f.while_open == "create" and f.trigger == "signal"
    assert f.metadata == {"zone": "B", "reading": "90 at 00:01"}
    assert f.task.description == "Hot: 90 / other 12.5"
    assert f.task.title == "Hot pump7.temp" and f.task.extra == {
        "thing_id": "TH-9",
        "title": "Hot pump7.temp",
    }
    assert f.task.assignees == ("a@b.example", 3) and f.task.duration_s == 5400
    assert f.task.spare_parts[0].article == "SEAL" and f.task.spare_parts[0].quantity == 2
    assert f.evidence[0].signal == "pump7.temp" and f.evidence[0].quality == "good"
    assert f.to_json()["key"] == "hot:2026-01-01T00:01:00.000Z"


def test_template_error_at_firing_time_does_not_lose_the_firing(tmp_path: Path) -> None:
    eng = engine(
        tmp_path,
        """
        - id: hot
          when: {signal: pump7.temp, above: 85}
          task: {description: "Hot, flow {{ pump7.flow | round }}"}
        """,
    )
    (f,) = eng.process(good("pump7.temp", 90, T0), T0)  # pump7.flow never seen
    assert f.task.description.startswith("Hot, flow {{ pump7.flow | round }} [template error:")
