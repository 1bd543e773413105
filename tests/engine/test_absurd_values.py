"""Values the engine refuses (gateway/engine/admit.py), the bounds of the counter (issue 13 items 3, 5, 11):
an absurd value becomes a bad sample or a capped firing with one WARNING, never unbounded work or an
exception; signed counters count modulo 2**bits; the meter never moves backwards; a glitch is not a reset."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.samples import Quality, Sample
from gateway.engine.admit import refusal
from gateway.engine.engine import Engine
from tests.engine.helpers import T0, engine, feed, good, ruleset

LUBE = """
- id: lube
  when: {counter: press1.strokes, every: 1000}
  task: {equipment: EQ-1, description: "Lubricate at {{ value }} ({{ threshold | int }})"}
"""
HOT = """
- id: hot
  when: {signal: press1.temp, above: 85}
  task: {description: "Hot {{ value }}"}
"""

HUGE = 10**400
ABSURD: list[Any] = [
    float("nan"),
    float("inf"),
    float("-inf"),
    1e308,
    -1e308,
    3.4e38,  # a float32 garbage value
    HUGE,
    -HUGE,
    1 << 64,
    -(1 << 63) - 1,
    "x" * 5000,
    b"\x00\x01",
    [1, 2],
    {"a": 1},
    object(),
]


@pytest.mark.parametrize("value", ABSURD, ids=lambda v: type(v).__name__ + ":" + repr(v)[:12])
def test_an_absurd_value_is_a_bad_sample_at_the_door(tmp_path: Path, value: Any) -> None:
    eng = engine(tmp_path, LUBE + HOT)
    assert eng.process_batch([good("press1.strokes", 0, T0), good("press1.strokes", value, T0)], T0) == []
    stored = eng.last_values["press1.strokes"]
    assert stored.quality is Quality.BAD and stored.value is None
    assert stored.reason.startswith("value refused: ")
    assert eng.process(good("press1.temp", value, T0), T0) == []
    assert eng.last_values["press1.temp"].quality is Quality.BAD
    assert eng.refused() == {"press1.strokes": 1, "press1.temp": 1}
    # the engine keeps working afterwards
    assert [f.key for f in feed(eng, "press1.strokes", [500, 1000], start=T0 + 60)] == ["lube:1000"]
    assert [f.key for f in eng.process(good("press1.temp", 90, T0 + 200), T0 + 200)] == [
        "hot:2026-01-01T00:03:20.000Z"
    ]


def test_accepted_values_pass_unchanged() -> None:
    for value in (
        None,
        True,
        False,
        0,
        -(1 << 63),
        (1 << 64) - 1,
        1.5,
        -(2.0**64),
        2.0**64,
        "AUTO",
        "x" * 4096,
    ):
        assert refusal(value) is None, value


def test_a_400_digit_integer_in_a_batch_raises_nothing(tmp_path: Path) -> None:
    """Before: int + float overflowed (OverflowError) and killed the gateway's consumer task."""
    eng = engine(tmp_path, LUBE + HOT)
    batch = [good("press1.strokes", 10, T0), good("press1.strokes", HUGE, T0), good("press1.temp", HUGE, T0)]
    assert eng.process_batch(batch, T0) == []
    assert [f.key for f in eng.process_batch([good("press1.strokes", 1000, T0 + 1)], T0 + 1)] == ["lube:1000"]


def test_one_warning_per_signal_and_hour(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    eng = engine(tmp_path, HOT)
    caplog.set_level(logging.INFO, "gateway.engine")
    eng.process_batch([good("press1.temp", float("nan"), T0 + i) for i in range(1000)], T0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "press1.temp" in warnings[0].getMessage()
    assert "NaN" in warnings[0].getMessage()
    eng.process(good("press1.temp", 20.0, T0 + 2000), T0 + 2000)
    eng.process(good("press1.temp", float("inf"), T0 + 2001), T0 + 2001)  # within the hour: counted only
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    eng.process(good("press1.temp", float("inf"), T0 + 3600), T0 + 3600)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "1002 so far" in warnings[1].getMessage()
    assert eng.refused() == {"press1.temp": 1002}


def test_number_subclasses_become_plain_numbers(tmp_path: Path) -> None:
    class MyFloat(float):
        pass

    eng = engine(tmp_path, HOT)
    (f,) = eng.process(good("press1.temp", MyFloat(90.5), T0), T0)
    assert type(eng.last_values["press1.temp"].value) is float and f.task.description == "Hot 90.5"


# ---------------------------------------------------------------- counter jumps: bounded work


@pytest.mark.timeout(20)
def test_an_implausible_jump_is_not_counted_and_is_a_glitch_when_not_confirmed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: one sample of 1e18 with every: 1000 looped 1e15 times (the consumer never finished)."""
    eng = engine(tmp_path, LUBE)
    caplog.set_level(logging.WARNING, "gateway.engine")
    firings = feed(eng, "press1.strokes", [500, 10**18, 900, 1000])
    assert [f.key for f in firings] == ["lube:1000"]
    assert eng.rule_status(T0)[0]["progress"]["current"] == 1000
    assert eng.rule_status(T0)[0]["progress"]["glitches_ignored"] == 1
    assert len(caplog.records) == 1 and "glitch" in caplog.records[0].getMessage()


@pytest.mark.timeout(20)
def test_a_confirmed_jump_is_counted_with_at_most_one_firing_beyond_the_cap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A counter that really moved on while the gateway was down (or a register stuck on garbage): once the
    next sample agrees, the jump is counted; beyond 1,000 thresholds, one firing for the last of them."""
    eng = engine(tmp_path, LUBE)
    caplog.set_level(logging.WARNING, "gateway.engine")
    start = 5 * 10**17
    firings = feed(eng, "press1.strokes", [500, start, start + 400, start + 1100])
    assert [f.key for f in firings] == [f"lube:{start}", f"lube:{start + 1000}"]
    assert firings[0].fired_at == T0 + 2 * 60  # when the second sample confirmed the jump
    assert eng.rule_status(T0)[0]["progress"]["current"] == start + 1100
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert f"jumped by {start - 500 + 400}" in messages[0] and "confirmed by 2 samples" in messages[0]
    assert f"crossed {start // 1000} thresholds at once" in messages[1]


def test_a_downtime_catch_up_beyond_max_jump_keeps_every_count(tmp_path: Path) -> None:
    eng = engine(tmp_path, LUBE.replace("every: 1000", "every: 10"))  # max_jump 10,000
    assert len(feed(eng, "press1.strokes", [0, 9_000])) == 900  # within max_jump: every threshold
    firings = feed(eng, "press1.strokes", [29_005, 29_010], start=T0 + 600)  # +20,005: suspect, confirmed
    assert [f.key for f in firings] == ["lube:29010"]  # 2,001 thresholds: one firing for the last
    assert eng.rule_status(T0)[0]["progress"]["current"] == 29_010  # no count lost
    assert [f.key for f in feed(eng, "press1.strokes", [29_020], start=T0 + 900)] == ["lube:29020"]


@pytest.mark.timeout(20)
def test_more_crossings_than_the_cap_make_one_firing_for_the_last_threshold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    eng = engine(tmp_path, LUBE.replace("every: 1000", "every: 1, max_jump: 1.0e+19"))
    caplog.set_level(logging.WARNING, "gateway.engine")
    firings = feed(eng, "press1.strokes", [0, 10**18, 10**18 + 1])
    assert [f.key for f in firings] == [f"lube:{10**18}", f"lube:{10**18 + 1}"]  # within max_jump: at once
    (warning,) = caplog.records
    assert f"crossed {10**18} thresholds at once" in warning.getMessage()
    assert f"{10**18 - 1} skipped" in warning.getMessage()


def test_a_jump_within_the_cap_still_fires_every_threshold(tmp_path: Path) -> None:
    eng = engine(tmp_path, LUBE.replace("every: 1000", "every: 1"))
    assert len(feed(eng, "press1.strokes", [0, 1000])) == 1000


@pytest.mark.timeout(20)
def test_a_float_meter_beyond_its_precision_never_loops(tmp_path: Path) -> None:
    eng = engine(tmp_path, LUBE.replace("every: 1000", "every: 0.5, max_jump: 1.0e+20"))
    firings = feed(eng, "press1.strokes", [0.0, 1.8e19, 1.8e19 + 2048.0, 1.8e19 + 8192.0])
    keys = [f.key for f in firings]
    assert len(keys) == len(set(keys)) and len(keys) >= 2


# ---------------------------------------------------------------- signed counters; the meter never goes back


def _int16(n: int) -> int:
    return (n + 32768) % 65536 - 32768


def _int32_from(start: int) -> Any:
    return lambda n: (n + start + (1 << 31)) % (1 << 32) - (1 << 31)


# int32: counting from 2,147,383,000 (a multiple of 1000) through +2,147,483,647 -> -2,147,483,648
@pytest.mark.parametrize(
    ("wrap", "convert", "base"), [("int16", _int16, 0), ("int32", _int32_from(2_147_383_000), 2_147_383_000)]
)
def test_a_signed_counter_counts_every_count(tmp_path: Path, wrap: str, convert: Any, base: int) -> None:
    """Before: +32,767 -> -32,768 was a reset with a negative increase: 98 firings instead of 196."""
    eng = engine(tmp_path, LUBE.replace("every: 1000", f"every: 1000, wrap: {wrap}"))
    values = [convert(n) for n in range(0, 196_608 + 1, 97)] + [convert(196_608)]
    firings = feed(eng, "press1.strokes", values, step=1.0)
    assert len(firings) == 196
    assert [f.key for f in firings] == [f"lube:{base + 1000 * k}" for k in range(1, 197)]


def test_a_negative_value_never_moves_the_meter_back(tmp_path: Path) -> None:
    eng = engine(tmp_path, LUBE.replace("every: 1000", "every: 1000, confirm: 1"))
    feed(eng, "press1.strokes", [0, 900])
    feed(eng, "press1.strokes", [-500], start=T0 + 600)
    assert eng.rule_status(T0)[0]["progress"]["current"] == 900
    firings = feed(eng, "press1.strokes", [-400, -300, 0], start=T0 + 700)  # +100 +100 +300: 1400
    assert [f.key for f in firings] == ["lube:1000"]


@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(st.integers(min_value=-(1 << 20), max_value=1 << 20), max_size=40),
    confirm=st.integers(min_value=1, max_value=3),
    closes=st.lists(st.integers(min_value=0, max_value=39), max_size=5),
)
def test_property_the_meter_is_monotonic_and_no_key_repeats(
    tmp_path_factory: pytest.TempPathFactory, values: list[int], confirm: int, closes: list[int]
) -> None:
    rs = ruleset(
        tmp_path_factory.mktemp("m"),
        LUBE.replace("every: 1000", f"every: 1000, confirm: {confirm}, rearm: on_completion"),
    )
    eng = Engine(rs, gateway_id="gw")
    keys: list[str] = []
    meter = 0.0
    for i, v in enumerate(values):
        if i % 7 == 6:  # a restart now and then
            eng = Engine(rs, gateway_id="gw", state=json.loads(json.dumps(eng.export_state())))
        keys += [f.key for f in eng.process(good("press1.strokes", v, T0 + i), T0 + i)]
        if i in closes:
            eng.task_closed("lube", "completed", T0 + i)
        current = eng.rule_status(T0 + i)[0]["progress"]["current"]
        assert current >= meter and current >= 0
        meter = current
    assert len(keys) == len(set(keys))


# ---------------------------------------------------------------- a glitch reading is not a reset


def test_one_glitch_reading_of_zero_does_not_recount_the_counter(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: 50,000 -> 0 -> 50,010 counted 50,010 again (50 firings at once)."""
    eng = engine(tmp_path, LUBE)
    caplog.set_level(logging.WARNING, "gateway.engine")
    firings = feed(eng, "press1.strokes", [49_000, 50_000, 0, 50_010, 50_500, 51_000])
    assert [f.key for f in firings] == ["lube:50000", "lube:51000"]
    assert eng.rule_status(T0)[0]["progress"]["current"] == 51_000
    assert len(caplog.records) == 1 and "ignored as a glitch" in caplog.records[0].getMessage()


def test_a_real_reset_is_counted_once_confirmed(tmp_path: Path) -> None:
    eng = engine(tmp_path, LUBE)
    firings = feed(eng, "press1.strokes", [0, 900, 30, 80])  # reset, counted 30; then +50: 980
    assert firings == []
    assert eng.rule_status(T0)[0]["progress"]["current"] == 980
    assert [f.key for f in feed(eng, "press1.strokes", [100], start=T0 + 600)] == ["lube:1000"]


def test_a_pending_reset_survives_a_restart(tmp_path: Path) -> None:
    rs = ruleset(tmp_path, LUBE)
    eng = Engine(rs, gateway_id="gw")
    feed(eng, "press1.strokes", [0, 900, 30])
    state = json.loads(json.dumps(eng.export_state()))
    assert state["lube"]["pending"] == ["reset", 30, 30, 1, 30]
    eng2 = Engine(rs, gateway_id="gw", state=state)
    feed(eng2, "press1.strokes", [80], start=T0 + 600)
    assert eng2.rule_status(T0)[0]["progress"]["current"] == 980


def test_confirm_three_needs_three_agreeing_samples(tmp_path: Path) -> None:
    eng = engine(tmp_path, LUBE.replace("every: 1000", "every: 1000, confirm: 3"))
    feed(eng, "press1.strokes", [0, 900, 10, 20])
    assert eng.rule_status(T0)[0]["progress"]["current"] == 900
    feed(eng, "press1.strokes", [40], start=T0 + 600)
    assert eng.rule_status(T0)[0]["progress"]["current"] == 940


def test_a_bad_sample_between_does_not_confirm_or_cancel(tmp_path: Path) -> None:
    eng = engine(tmp_path, LUBE)
    feed(eng, "press1.strokes", [0, 900, 10, None, 60])
    assert eng.rule_status(T0)[0]["progress"]["current"] == 960


def test_a_refused_value_is_a_bad_sample_for_the_rules_too(tmp_path: Path) -> None:
    eng = engine(tmp_path, LUBE)
    feed(eng, "press1.strokes", [0, 900])
    assert eng.process(Sample("press1.strokes", float("nan"), T0), T0 + 600) == []
    assert eng.rule_status(T0)[0]["progress"]["current"] == 900


def test_episodes_within_one_millisecond_get_distinct_keys(tmp_path: Path) -> None:
    """Found by the absurd torture campaign: a burst of samples processed at one `now` (the gateway batches up
    to 1,000) re-armed and fired a latched rule again with the same key, which the store drops as a
    duplicate."""
    eng = engine(tmp_path, HOT)
    now = T0 + 0.999
    firings = eng.process_batch([good("press1.temp", v, now) for v in (90, 10, 90, 10, 90, 10, 90)], now)
    assert [f.key for f in firings] == [
        "hot:2026-01-01T00:00:00.999Z",
        "hot:2026-01-01T00:00:01.000Z",
        "hot:2026-01-01T00:00:01.001Z",
        "hot:2026-01-01T00:00:01.002Z",
    ]
    later = eng.process_batch([good("press1.temp", v, now + 60) for v in (10, 90)], now + 60)
    assert [f.key for f in later] == ["hot:2026-01-01T00:01:00.999Z"]


def test_a_confirmed_float_plateau_leaves_the_meter_exact(tmp_path: Path) -> None:
    """Found by the absurd campaign: a float near 2**64 held for two samples made the meter a float of 1.8e19,
    where an increment of 10 rounds to nothing: the rule never fired again."""
    eng = engine(tmp_path, LUBE.replace("every: 1000", "every: 10"))
    feed(eng, "press1.strokes", [100, 1.8e19, 1.8e19])  # confirmed: counted (one capped firing)
    firings = feed(eng, "press1.strokes", [150, 160, 170, 180], start=T0 + 600)  # a reset, confirmed
    assert len(firings) == 16 + 1 + 1  # 160 counted at the confirmation, then +10, +10: exact units again
    assert type(eng.rule_status(T0)[0]["progress"]["current"]) is int


def test_a_reset_to_a_value_beyond_max_jump_is_a_new_baseline(tmp_path: Path) -> None:
    eng = engine(tmp_path, LUBE.replace("every: 1000", "every: 10"))  # max_jump 10,000
    feed(eng, "press1.strokes", [10**9, 10**9 + 5])
    firings = feed(eng, "press1.strokes", [50_000, 50_005], start=T0 + 600)  # counts 5, not 50,005
    assert [f.key for f in firings] == ["lube:1000000010"]
    assert eng.rule_status(T0)[0]["progress"]["current"] == 10**9 + 10
