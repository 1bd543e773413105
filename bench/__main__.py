"""Run every bench/bench_*.py module's `run()` and print one table.

Each module exposes `run() -> list[tuple[str, str, str]]`: (metric, value, note). Figures are medians over
several runs and, where possible, ratios against a reference measured in the same run.
Usage: python -m bench [NAME ...]   e.g. python -m bench engine outbox
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).parent


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.machine()}"
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {system}"


def main(argv: list[str]) -> int:
    names = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    wanted = argv or names
    rows: list[tuple[str, str, str, str]] = []
    failures = 0
    started = time.monotonic()
    for name in wanted:
        if name not in names:
            print(f"unknown benchmark {name!r}; known: {', '.join(names)}", file=sys.stderr)
            return 2
        t0 = time.monotonic()
        try:
            module = importlib.import_module(f"bench.bench_{name}")
            for metric, value, note in module.run():
                rows.append((name, metric, value, note))
        except Exception:
            failures += 1
            traceback.print_exc()
            rows.append((name, "FAILED", "-", "see the traceback above"))
        print(f"  [{name}: {time.monotonic() - t0:.1f}s]", file=sys.stderr)
    header = ("area", "metric", "value", "note")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    print(f"\nmw-gateway benchmarks on {machine()}  ({time.monotonic() - started:.0f}s)\n")
    for i, row in enumerate([header, *rows]):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
