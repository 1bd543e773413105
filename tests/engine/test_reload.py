"""reload: a broken rule set changes nothing; unchanged rules keep their state; edits keep what applies."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.core.errors import RuleError
from gateway.engine.engine import Engine
from gateway.engine.loader import load_rules
from tests.engine.helpers import T0, good

HOT = """
- id: hot
  when: {signal: pump7.temp, above: 85, for: 5m}
  task: {description: "Hot {{ value }}"}
"""
LUBE = """
- id: lube
  when: {counter: press1.strokes, every: 1000}
  task: {description: "Lube"}
"""


def _write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Engine]:
    folder = tmp_path / "rules"
    _write(folder, "hot.yaml", HOT)
    _write(folder, "lube.yaml", LUBE)
    eng = Engine(load_rules(folder), gateway_id="gw")
    assert eng.process(good("pump7.temp", 90, T0), T0) == []  # `for` in progress since T0
    eng.process(good("press1.strokes", 0, T0), T0)
    eng.process(good("press1.strokes", 700, T0 + 60), T0 + 60)
    return folder, eng


def test_a_broken_file_leaves_the_old_rules_firing(setup: tuple[Path, Engine]) -> None:
    folder, eng = setup
    _write(folder, "hot.yaml", HOT.replace("above: 85", "above: hot"))
    _write(folder, "new.yaml", "- id: lube\n  when: {signal: x.y, above: 1}\n  task: {description: abc}\n")
    with pytest.raises(RuleError) as info:
        eng.reload(load_rules(folder))
    assert len(info.value.problems) == 2  # both reported: the bad threshold and the duplicate id
    (f,) = eng.tick(T0 + 300)  # the old rule keeps its timer and fires on time
    assert f.rule_id == "hot"
    assert [f.key for f in eng.process(good("press1.strokes", 1000, T0 + 400), T0 + 400)] == ["lube:1000"]


def test_editing_another_rule_does_not_reset_a_for_timer(setup: tuple[Path, Engine]) -> None:
    folder, eng = setup
    _write(folder, "lube.yaml", LUBE.replace("every: 1000", "every: 500"))
    eng.reload(load_rules(folder))
    assert eng.tick(T0 + 299) == []
    assert [f.rule_id for f in eng.tick(T0 + 300)] == ["hot"]


def test_editing_a_rule_description_keeps_its_timer_and_counter(setup: tuple[Path, Engine]) -> None:
    folder, eng = setup
    _write(folder, "hot.yaml", HOT.replace("Hot {{ value }}", "Pump hot: {{ value }} °C"))
    _write(folder, "lube.yaml", LUBE.replace("Lube", "Lubricate"))
    eng.reload(load_rules(folder))
    (f,) = eng.tick(T0 + 300)
    assert f.task.description == "Pump hot: 90 °C" and f.key == "hot:2026-01-01T00:00:00.000Z"
    (g,) = eng.process(good("press1.strokes", 1000, T0 + 400), T0 + 400)  # 700 counted before the reload
    assert g.task.description == "Lubricate"


def test_editing_a_trigger_restarts_its_condition(setup: tuple[Path, Engine]) -> None:
    folder, eng = setup
    _write(folder, "hot.yaml", HOT.replace("above: 85", "above: 88"))
    eng.reload(load_rules(folder))
    assert eng.tick(T0 + 300) == []  # the condition is re-learnt from the next sample
    eng.process(good("pump7.temp", 90, T0 + 310), T0 + 310)
    assert [f.fired_at for f in eng.tick(T0 + 610)] == [T0 + 610]


def test_removed_rules_are_gone_and_new_rules_start(setup: tuple[Path, Engine]) -> None:
    folder, eng = setup
    (folder / "lube.yaml").unlink()
    _write(folder, "cold.yaml", HOT.replace("id: hot", "id: cold").replace("above: 85", "below: 5"))
    eng.reload(load_rules(folder))
    assert sorted(eng.rule_ids) == ["cold", "hot"]
    assert "lube" not in eng.take_dirty_state()
    assert eng.process(good("press1.strokes", 5000, T0 + 400), T0 + 400) == []
    assert [f.rule_id for f in eng.tick(T0 + 300)] == ["hot"]
