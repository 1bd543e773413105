from __future__ import annotations

from pathlib import Path

from tests.engine.helpers import T0, at, engine, feed

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
    assert eng.process(feed_sample("pump7.temp", 90, T0), T0) == []
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


def feed_sample(signal: str, value: float, t: float):  # type: ignore[no-untyped-def]
    from gateway.sources.base import Sample

    return Sample(signal, value, t)
