"""process_batch is process() for each sample, in order."""

from __future__ import annotations

from pathlib import Path

from gateway.core.samples import Quality, Sample
from gateway.engine.engine import Engine
from gateway.engine.loader import load_rules

RULES = """\
- id: hot
  when: {signal: m.temp, above: 80, for: 10s, reset_below: 70}
  task: {equipment: EQ-1, description: "hot {{ value }}", assignees: [1]}
- id: lube
  when: {counter: m.strokes, every: 100}
  while_open: create
  task: {equipment: EQ-1, description: "lube at {{ value }}", assignees: [1]}
"""


def test_batch_and_one_by_one_fire_the_same(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RULES)
    rules = load_rules(tmp_path)
    samples = []
    for t in range(200):
        samples.append(Sample("m.temp", 85.0 if 50 <= t < 80 else 60.0, float(t)))
        samples.append(Sample("m.strokes", t * 7, float(t), Quality.GOOD if t % 13 else Quality.BAD))
        samples.append(Sample("m.other", t, float(t)))
    one, batch = Engine(rules, gateway_id="g"), Engine(rules, gateway_id="g")
    expected, got = [], []
    for t in range(200):
        chunk = samples[3 * t : 3 * t + 3]
        for s in chunk:
            expected += one.process(s, float(t))
        expected += one.tick(float(t))
        got += batch.process_batch(chunk, float(t))
        got += batch.tick(float(t))
    assert [f.key for f in got] == [f.key for f in expected]
    assert len([f for f in got if f.rule_id == "lube"]) == 13 and any(f.rule_id == "hot" for f in got)
    assert batch.last_values == one.last_values
    assert batch.export_state() == one.export_state()
    assert batch.evaluations() == one.evaluations() == {"hot": 200 + 200, "lube": 200}


def test_evaluations_count_the_samples_of_each_rule_across_reloads(tmp_path: Path) -> None:
    """Per rule: the samples of its signals (a retained one is no evaluation) plus the ticks when it has
    timers; a reload keeps the counts, also of a rule disabled for a while and enabled again."""
    (tmp_path / "r.yaml").write_text(RULES)
    engine = Engine(load_rules(tmp_path), gateway_id="g")
    engine.process_batch([Sample("m.temp", 60.0, 1.0), Sample("m.strokes", 5, 1.0)], 1.0)
    engine.process(Sample("m.temp", 61.0, 2.0), 2.0)
    engine.process(Sample("m.temp", 62.0, 3.0, retained=True), 3.0)
    engine.tick(3.0)
    assert engine.evaluations() == {"hot": 2 + 1, "lube": 1}
    (tmp_path / "r.yaml").write_text(RULES.replace("- id: lube\n", "- id: lube\n  enabled: false\n"))
    engine.reload(load_rules(tmp_path))
    engine.process(Sample("m.strokes", 6, 4.0), 4.0)
    assert engine.evaluations() == {"hot": 3}
    (tmp_path / "r.yaml").write_text(RULES)
    engine.reload(load_rules(tmp_path))
    engine.process(Sample("m.strokes", 7, 5.0), 5.0)
    assert engine.evaluations() == {"hot": 3, "lube": 2}
