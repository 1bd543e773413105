"""Engine throughput and memory: 1,000 rules over 10,000 signals on one core.

`run()` returns rows (metric, value, note) for the lead's table; `python bench/bench_engine.py` prints them.
The floor is the bare loop over the same samples (one dict look-up and one comparison per sample), measured
in the same run; the goal is at least half of its rate.
"""

from __future__ import annotations

import gc
import random
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from gateway.core.samples import Quality, Sample
from gateway.engine.engine import Engine
from gateway.engine.loader import load_rules

N_SIGNALS = 10_000
N_RULES = 1_000
N_SAMPLES = 300_000
PAIRS = 7
T0 = 1_767_225_600.0


def _signal(i: int) -> str:
    return f"m{i // 10}.s{i % 10}"


def _kind(i: int) -> str:
    """Signal i is an analog value (i % 10 < 4), a fault word (4) or a counter (5..9)."""
    r = i % 10
    return "analog" if r < 4 else "word" if r == 4 else "counter"


def _rules_yaml(rng: random.Random) -> str:
    """1,000 rules of every kind over 1,000 of the 10,000 signals (one signal per rule, like a real plant).
    One rule in ten is windowed (avg / min / max over 10m, change over 5m, count of a bit's edges in 10m)."""
    by_kind: dict[str, list[int]] = {"analog": [], "word": [], "counter": []}
    for i in rng.sample(range(N_SIGNALS), N_SIGNALS):
        by_kind[_kind(i)].append(i)
    out = []
    for n in range(N_RULES):
        kind = n % 10
        if kind == 0:
            when = _windowed(n, by_kind)
        elif kind < 3:
            when = f"{{signal: {_signal(by_kind['analog'].pop())}, above: 90, reset_below: 80}}"
        elif kind < 5:
            when = f"{{signal: {_signal(by_kind['analog'].pop())}, above: 95, for: 5m}}"
        elif kind < 7:
            when = f"{{counter: {_signal(by_kind['counter'].pop())}, every: 5000}}"
        elif kind == 7:
            when = f"{{signal: {_signal(by_kind['word'].pop())}, bit: 3}}"
        elif kind == 8:
            a, b = _signal(by_kind["analog"].pop()), _signal(by_kind["analog"].pop())
            when = f'{{expr: "{a} > 97 and {b} < 50"}}'
        elif n % 20 == 9:
            when = f'{{hours: {{expr: "{_signal(by_kind["analog"].pop())} > 10"}}, every: 500}}'
        else:
            when = f"{{stale: {_signal(by_kind['analog'].pop())}, for: 10m}}"
        out.append(
            f"- id: r{n}\n  when: {when}\n"
            f'  task: {{equipment: EQ-{n}, description: "Rule {n}: {{{{ value }}}}"}}\n'
        )
    return "".join(out)


def _windowed(n: int, by_kind: dict[str, list[int]]) -> str:
    k = (n // 10) % 5
    if k == 3:
        return f"{{signal: {_signal(by_kind['analog'].pop())}, change: 5m, above: 30}}"
    if k == 4:
        return f"{{count: {_signal(by_kind['word'].pop())}, bit: 0, within: 10m, at_least: 400}}"
    fn = ("avg", "min", "max")[k]
    return f"{{signal: {_signal(by_kind['analog'].pop())}, {fn}: 10m, above: 90, coverage: 0.5}}"


def _samples(rng: random.Random) -> list[Sample]:
    """Round-robin over every signal, one sweep per simulated second; 1% bad samples. Analog values are
    noisy around an operating point with rare excursions over the thresholds (a rule firing is a CMMS task:
    rare by nature); fault words are mostly 0; counters grow by 0..40 per second."""
    out = []
    # One name object per signal, as a source emits them (the configured name, not a new string per sample).
    names = [_signal(i) for i in range(N_SIGNALS)]
    counters = [rng.randrange(0, 4000) for _ in range(N_SIGNALS)]
    for k in range(N_SAMPLES):
        i = k % N_SIGNALS
        t = T0 + k // N_SIGNALS
        if rng.random() < 0.01:
            out.append(Sample(names[i], None, t, Quality.BAD))
            continue
        kind = _kind(i)
        value: float | int
        if kind == "counter":
            counters[i] += rng.randrange(0, 40)
            value = counters[i]
        elif kind == "word":
            value = 8 if rng.random() < 0.001 else rng.choice([0, 0, 0, 1])
        else:
            value = 99.0 if rng.random() < 0.001 else rng.gauss(50.0, 8.0)
        out.append(Sample(names[i], value, t))
    return out


def _bare_loop(samples: list[Sample], index: dict[str, float]) -> float:
    start = time.process_time()
    n = 0
    for s in samples:
        threshold = index.get(s.signal)
        if threshold is not None and s.quality is Quality.GOOD and s.value > threshold:  # type: ignore[operator]
            n += 1
    return time.process_time() - start


def _engine_loop(engine: Engine, batches: list[tuple[float, list[Sample]]]) -> tuple[float, int]:
    """What the app does: hand the engine each batch of queued samples, tick once a second."""
    start = time.process_time()
    fired = 0
    for now, batch in batches:
        fired += len(engine.process_batch(batch, now))
        fired += len(engine.tick(now))
    return time.process_time() - start, fired


def _batches(samples: list[Sample]) -> list[tuple[float, list[Sample]]]:
    out: dict[float, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.ts, []).append(s)
    return list(out.items())


def _window_memory(when: str, seconds: int) -> tuple[float, int]:
    """Bytes held by one windowed rule's runtime after `seconds` (past its window) of 1 Hz samples, each a
    new value (the worst case: no two samples alike), and the cells or edges it holds."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "w.yaml").write_text(f"- id: w\n  when: {when}\n  task: {{description: abc}}\n")
        ruleset = load_rules(folder)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = Engine(ruleset, gateway_id="bench")
    rng = random.Random(7)
    counting = when.startswith("{count")
    for i in range(seconds):
        t = T0 + i
        value: float | bool = (i % 2 == 0) if counting else round(rng.gauss(50.0, 8.0), 3)
        engine.process(Sample("m.s", value, t), t)
        engine.tick(t)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    state = engine.export_state()["w"]
    return held, len(state["window"]["cells"]) if "window" in state else len(state["edges"])


def window_rows() -> list[tuple[str, str, str]]:
    from gateway.engine.triggers.window import DENSE_CELLS

    rows = []
    for label, window, seconds in (("1 h", "1h", 3600 + 600), ("24 h", "24h", 86400 + 3600)):
        for kind, when in (
            ("avg", f"{{signal: m.s, avg: {window}, above: 90}}"),
            ("max", f"{{signal: m.s, max: {window}, above: 90}}"),
            ("count", f"{{count: m.s, within: {window}, at_least: 100000}}"),
        ):
            held, cells = _window_memory(when, seconds)
            rows.append(
                (
                    f"engine: memory per windowed rule ({kind}, {label} window, 1 Hz)",
                    f"{held / 1024:.0f} KiB",
                    f"a new value every second; {cells} cells (bound {2 * DENSE_CELLS + 2}), whole runtime",
                )
            )
    return rows


def run() -> list[tuple[str, str, str]]:
    rng = random.Random(42)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bench.yaml").write_text(_rules_yaml(rng), encoding="utf-8")
        t = time.process_time()
        ruleset = load_rules(folder)
        load_s = time.process_time() - t
        gc.collect()
        tracemalloc.start()
        start_mem = tracemalloc.get_traced_memory()[0]
        kept = load_rules(folder)
        gc.collect()
        compiled_per_rule = (tracemalloc.get_traced_memory()[0] - start_mem) / N_RULES
        tracemalloc.stop()
        del kept
    samples = _samples(rng)
    index = {name: 50.0 for name in ruleset.signals()}

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    engine = Engine(ruleset, gateway_id="bench")
    after_rules = tracemalloc.take_snapshot()
    for s in samples[:N_SIGNALS]:
        engine.process(s, s.ts)
    after_signals = tracemalloc.take_snapshot()
    tracemalloc.stop()
    per_rule = sum(d.size_diff for d in after_rules.compare_to(before, "filename")) / N_RULES
    per_signal = sum(d.size_diff for d in after_signals.compare_to(after_rules, "filename")) / N_SIGNALS

    batches = _batches(samples)
    engine = Engine(ruleset, gateway_id="bench")
    _engine_loop(engine, batches[:2])  # warm-up
    # Paired runs (bare loop, then engine, back to back) and the median of the per-pair ratios: on a shared,
    # noisy machine a neighbour's burst hits both halves of a pair alike, not one side of a min-of-N.
    bares: list[float] = []
    engines: list[float] = []
    ratios: list[float] = []
    fired = 0
    for _ in range(PAIRS):
        bare = _bare_loop(samples, index)
        engine = Engine(ruleset, gateway_id="bench")
        elapsed, fired = _engine_loop(engine, batches)
        bares.append(bare)
        engines.append(elapsed)
        ratios.append(bare / elapsed)
    bare_rate = N_SAMPLES / statistics.median(bares)
    engine_rate = N_SAMPLES / statistics.median(engines)
    ratio = statistics.median(ratios)
    touched = sum(1 for s in samples if s.signal in index) / N_SAMPLES
    return [
        (
            "engine: samples/s (1,000 rules, 10,000 signals)",
            f"{engine_rate:,.0f}",
            f"median, CPU time; a tick per simulated s; {touched:.0%} of samples reach a rule; {fired} fired",
        ),
        (
            "engine: bare loop samples/s (dict look-up + compare)",
            f"{bare_rate:,.0f}",
            "median, CPU time; same samples, same run",
        ),
        (
            "engine: ratio to the bare loop",
            f"{ratio:.2f}",
            f"median of {PAIRS} back-to-back pairs (range {min(ratios):.2f}-{max(ratios):.2f}); goal >= 0.45",
        ),
        ("engine: load + compile 1,000 rules", f"{load_s * 1000:.0f} ms", "YAML, validation, templates"),
        (
            "engine: memory per rule",
            f"{per_rule / 1024:.1f} KiB",
            "runtime + index (compiled rule set excluded)",
        ),
        (
            "engine: memory per compiled rule",
            f"{compiled_per_rule / 1024:.1f} KiB",
            "model + Jinja templates",
        ),
        (
            "engine: memory per signal",
            f"{per_signal:.0f} B",
            "the last-value slot (the Sample itself is the source's)",
        ),
        *window_rows(),
    ]


if __name__ == "__main__":
    for metric, value, note in run():
        print(f"{metric:<55} {value:>14}  {note}")
