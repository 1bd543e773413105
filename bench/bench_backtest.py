"""`mw-gateway backtest` end to end (parsing included): samples/s and peak memory.

The data is the issue's shape, 100 signals at 1 Hz, as a long CSV (`time,signal,value,quality`, one sample
per row) and a wide CSV (`time,<100 signals>`), a slice of SECONDS seconds. The rules are a plant's: 12 rules
of every kind over 10 of the 100 signals. Each run is a fresh process (peak RSS is the process's); the memory
row compares the peak for the slice and for twice the slice (flat: about the same).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

SIGNALS = 100
SECONDS = 6_000  # 600,000 samples per file
T0 = 1_767_225_600

RULES = """
- {id: temp-high, when: {signal: m0.s0, above: 95, for: 5m, reset_below: 80}, cooldown: 1h,
   task: {equipment: 1, description: "m0 hot {{ value }}", assignees: [1]}}
- {id: temp-low, when: {signal: m0.s1, below: 2}, cooldown: 1h,
   task: {equipment: 1, description: "m0 cold {{ value }} ({{ m9.s9 }})", assignees: [1]}}
- {id: pressure, when: {signal: m1.s0, above: 99.9},
   task: {equipment: 2, description: "pressure", assignees: [1]}}
- {id: strokes1, when: {counter: m2.s0, every: 50000},
   task: {equipment: 3, description: "lube", assignees: [1]}}
- {id: strokes2, when: {counter: m3.s0, every: 20000},
   task: {equipment: 4, description: "die", assignees: [1]}}
- {id: fault-bit, when: {signal: m4.s0, bit: 3},
   task: {equipment: 5, description: "fault", assignees: [1]}}
- {id: run-hours, when: {hours: m5.s0, every: 0.5},
   task: {equipment: 6, description: "grease", assignees: [1]}}
- {id: both, when: {expr: "m6.s0 > 90 and m7.s0 > 90"},
   task: {equipment: 7, description: "both", assignees: [1]}}
- {id: silent, when: {stale: m8.s0, for: 2m},
   task: {equipment: 8, description: "silent", assignees: [1]}}
- {id: vib, when: {signal: m9.s0, above: 99, for: 30s},
   task: {equipment: 9, description: "vib", assignees: [1]}}
- {id: vib2, when: {signal: m9.s0, below: 0.5},
   task: {equipment: 9, description: "vib low", assignees: [1]}}
- {id: temp-hot2, when: {signal: m0.s0, above: 99},
   task: {equipment: 1, description: "very hot", assignees: [1]}}
"""


def _value(i: int, t: int, rng: random.Random) -> str:
    m = i // 10
    if m in (2, 3) and i % 10 == 0:
        return str(t * 7)  # counters
    if m == 4 and i % 10 == 0:
        return str(rng.choice((0, 0, 0, 8, 1)))  # fault word
    if m == 5 and i % 10 == 0:
        return "true" if (t // 600) % 2 == 0 else "false"  # running
    if m == 8 and i % 10 == 0 and 1000 < t % 3000 < 1300:
        return ""  # silent for 5 minutes
    return f"{rng.random() * 100:.2f}"


def write_data(folder: Path, seconds: int) -> tuple[Path, Path]:
    rng = random.Random(7)
    names = [f"m{i // 10}.s{i % 10}" for i in range(SIGNALS)]
    long_path, wide_path = folder / f"long{seconds}.csv", folder / f"wide{seconds}.csv"
    with long_path.open("w") as lf, wide_path.open("w") as wf:
        lf.write("time,signal,value,quality\n")
        wf.write("time," + ",".join(names) + "\n")
        for t in range(seconds):
            ts = T0 + t
            cells = [_value(i, t, rng) for i in range(SIGNALS)]
            lf.writelines(f"{ts},{n},{c},good\n" for n, c in zip(names, cells, strict=True) if c)
            wf.write(f"{ts}," + ",".join(cells) + "\n")
    return long_path, wide_path


_CHILD = """
import json, resource, sys, time
from pathlib import Path
from gateway.backtest.run import run_backtest
from gateway.engine.loader import load_rules
rules, data, reader = sys.argv[1:4]
ruleset = load_rules(rules)
t = time.perf_counter()
if reader == "parse-only":  # the floor: pyarrow's CSV reader alone, no engine
    import pyarrow.csv as pcsv
    samples = sum(b.num_rows for b in pcsv.open_csv(data))
    firings = 0
else:
    result = run_backtest(ruleset, [Path(data)], reader=reader)
    samples, firings = result.samples, sum(r.firings for r in result.rules)
dt = time.perf_counter() - t
print(json.dumps({"samples": samples, "seconds": dt, "firings": firings,
                  "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _measure(rules: Path, data: Path, reader: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(rules), str(data), reader],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout))


def run() -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rules = folder / "rules.yaml"
        rules.write_text(RULES)
        long1, wide1 = write_data(folder, SECONDS)
        long2, _ = write_data(folder, 2 * SECONDS)
        for label, path, reader in (
            ("long CSV, pyarrow", long1, "arrow"),
            ("wide CSV, pyarrow", wide1, "arrow"),
            ("long CSV, csv module", long1, "csv"),
        ):
            best = max(
                (_measure(rules, path, reader) for _ in range(3)), key=lambda r: r["samples"] / r["seconds"]
            )
            rows.append(
                (
                    f"backtest {label}",
                    f"{best['samples'] / best['seconds']:,.0f} samples/s",
                    f"{SIGNALS} signals at 1 Hz, {best['samples']:,.0f} samples, 12 rules over 10 signals, "
                    f"{best['firings']:.0f} firings, best of 3",
                )
            )
        floor = _measure(rules, long1, "parse-only")
        rows.append(
            (
                "reference: pyarrow CSV read alone",
                f"{floor['samples'] / floor['seconds']:,.0f} rows/s",
                "the same long CSV, no engine: the floor of the long-CSV row above",
            )
        )
        one = _measure(rules, long1, "arrow")
        two = _measure(rules, long2, "arrow")
        rows.append(
            (
                "backtest peak RSS",
                f"{one['rss_kb'] / 1024:.0f} MB / {two['rss_kb'] / 1024:.0f} MB",
                f"long CSV of {one['samples']:,.0f} / {two['samples']:,.0f} samples "
                f"({long1.stat().st_size / 1e6:.0f} / {long2.stat().st_size / 1e6:.0f} MB): flat = streaming",
            )
        )
    return rows


if __name__ == "__main__":
    for row in run():
        print("  ".join(row))
