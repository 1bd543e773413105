"""Forecasts of meter rules (issue 14.6): the next threshold and when, at the recent rate; none if stopped."""

from __future__ import annotations

from gateway.engine.triggers.forecast import human
from gateway.web.page import _Fmt
from tests.engine.helpers import T0, engine, feed

COUNTER = """
- id: lube
  when: {counter: press1.strokes, every: 50000, unit: strokes}
  task: {equipment: 1, description: "lube", assignees: [1]}
"""

HOURS = """
- id: grease
  when: {hours: pump7.running, every: 250}
  task: {equipment: 1, description: "grease", assignees: [1]}
"""


def _forecast(eng, now):
    return next(r for r in eng.rule_status(now))["forecast"]


def test_counter_eta_at_the_last_hours_rate(tmp_path):
    eng = engine(tmp_path, COUNTER)
    # 100 strokes a minute for 2 hours (6,000 an hour): 12,000 strokes, next threshold 50,000
    feed(eng, "press1.strokes", [i * 100 for i in range(121)])
    now = T0 + 120 * 60
    fc = _forecast(eng, now)
    assert fc["next"] == 50000 and fc["remaining"] == 38000
    assert abs(fc["rate_per_h"] - 6000) < 1e-6
    assert abs(fc["eta_s"] - 38000 / 6000 * 3600) < 1e-6  # 6 h 20 min
    assert fc["text"] == "50,000 strokes, in about 6 h 20 min at the last hour's rate"
    assert "next: 50,000 strokes, in about 6 h 20 min" in _Fmt("UTC", now).rule(eng.rule_status(now)[0])


def test_counter_rate_follows_the_last_hour(tmp_path):
    eng = engine(tmp_path, COUNTER)
    # an hour at 100/min, then an hour at 200/min: the last hour's rate is 12,000/h
    values = [i * 100 for i in range(61)] + [6000 + i * 200 for i in range(1, 61)]
    feed(eng, "press1.strokes", values)
    fc = _forecast(eng, T0 + 120 * 60)
    assert abs(fc["rate_per_h"] - 12000) < 1e-6


def test_counter_stopped_gives_no_estimate(tmp_path):
    eng = engine(tmp_path, COUNTER)
    feed(eng, "press1.strokes", [i * 100 for i in range(61)] + [6000] * 20)  # stopped for 20 minutes
    fc = _forecast(eng, T0 + 80 * 60)
    assert fc["eta_s"] is None
    assert fc["text"] == "50,000 strokes: no estimate (stopped)"
    # and not enough history right after start
    eng = engine(tmp_path, COUNTER)
    feed(eng, "press1.strokes", [0, 100])
    assert _forecast(eng, T0 + 60)["text"] == "50,000 strokes: no estimate (not enough history yet)"


def test_hours_eta_and_stopped(tmp_path):
    eng = engine(tmp_path, HOURS)
    feed(eng, "pump7.running", [True] * 121)  # running for 2 hours: 2 running hours, 248 to go
    now = T0 + 120 * 60
    fc = _forecast(eng, now)
    assert abs(fc["rate_per_h"] - 1.0) < 1e-9
    assert abs(fc["eta_s"] - 248 * 3600) < 1e-6
    assert fc["text"] == "250 h, in about 10 d 8 h at the last hour's rate"
    feed(eng, "pump7.running", [False], start=now + 60)
    fc = _forecast(eng, now + 120)
    assert fc["eta_s"] is None and fc["text"] == "250 h: no estimate (stopped)"


def test_other_kinds_have_no_forecast(tmp_path):
    eng = engine(
        tmp_path,
        """
        - id: hot
          when: {signal: m.t, above: 5}
          task: {equipment: 1, description: "hot", assignees: [1]}
        """,
    )
    assert "forecast" not in eng.rule_status(T0)[0]


def test_human_durations():
    assert [human(s) for s in (30, 60, 12000, 3600, 90000, 86400 * 2)] == [
        "under a minute",
        "1 min",
        "3 h 20 min",
        "1 h",
        "1 d 1 h",
        "2 d",
    ]


def test_a_clock_step_keeps_the_forecast(tmp_path):
    """Before: after a step back of a day the checkpoints lay a day in the future: "not enough history yet",
    and no new checkpoint was taken for a day."""
    from tests.engine.helpers import good

    for text, signal, values in (
        (COUNTER, "press1.strokes", [i * 100 for i in range(61)]),
        (HOURS, "pump7.running", [True] * 61),
    ):
        eng = engine(tmp_path, text)
        feed(eng, signal, values)  # one sample a minute for an hour
        back = T0 + 60 * 60 - 86400 + 60  # the clock steps back a day; a minute of real time later
        value = values[-1] + 100 if signal == "press1.strokes" else True
        eng.process(good(signal, value, back), back)
        fc = _forecast(eng, back)
        assert fc["eta_s"] is not None and fc["basis_s"] >= 3600 - 60, fc["text"]
