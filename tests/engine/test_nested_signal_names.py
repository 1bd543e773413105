"""Signals named with more than one dot (`oven.zone1.temp`, `press1.alarm.HighTemp.message`) in templates."""

from __future__ import annotations

from pathlib import Path

from gateway.engine import templates as tpl
from gateway.engine.engine import Engine
from tests.engine.helpers import T0, good, ruleset


def test_the_inner_part_of_a_nested_name_is_not_a_signal_of_its_own() -> None:
    _, tree = tpl.compile_template("{{ oven.zone1.temp }} {{ press1.alarm.HighTemp.message }}")
    refs = tpl.template_refs(tree, {"oven.zone1.temp", "press1.alarm.*"})
    assert refs.unknown_signals == []
    assert refs.signals == ["oven.zone1.temp", "press1.alarm.HighTemp.message"]
    assert tpl.template_refs(tree, None).signals == ["oven.zone1.temp", "press1.alarm.HighTemp.message"]


def test_a_rule_renders_nested_names_with_and_without_the_known_signals(tmp_path: Path) -> None:
    text = """
- id: high-temp
  when: {signal: press1.alarm.HighTemp.active, equals: true}
  task: {description: "{{ press1.alarm.HighTemp.message }} ({{ oven.zone1.temp }} C)"}
"""
    for known in (None, {"press1.alarm.*", "oven.zone1.temp"}):
        rules = ruleset(tmp_path, text, known_signals=known)
        eng = Engine(rules, gateway_id="test-gw")
        eng.process(good("oven.zone1.temp", 251, T0), T0)
        eng.process(good("press1.alarm.HighTemp.message", "Oven 1 over 250 C", T0), T0)
        fired = eng.process(good("press1.alarm.HighTemp.active", True, T0), T0)
        assert [f.task.description for f in fired] == ["Oven 1 over 250 C (251 C)"]
