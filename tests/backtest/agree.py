"""Helpers: a rule test case as a data file, and the firings `mw-gateway test` and `backtest` make of it."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from gateway.backtest.run import run_backtest
from gateway.core.firings import Firing
from gateway.engine import ruletest
from gateway.engine.engine import Engine
from gateway.engine.loader import load_rules
from gateway.engine.ruletest import MISSING, STALE, Case, RuleTestFile, parse_series

HEARTBEAT = "plant.heartbeat"  # a signal no rule uses, at every step: the data spans the test's steps


def cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_case(spec: RuleTestFile, case: Case, path: Path, *, wide: bool = False) -> None:
    """The case's input as a long (or wide) CSV, epoch seconds; the steps the test would run."""
    start = ruletest.T0 if spec.start is None else spec.start
    interval = case.interval or spec.interval
    series = {signal: parse_series(values) for signal, values in case.input.items()}
    horizon = max(
        [len(v) - 1 for v in series.values()]
        + [(case.duration or 0.0) / interval]
        + [e.at / interval for e in case.expect]
        + [0]
    )
    steps = int(horizon + 1e-9) + 1
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        if wide:
            names = list(series)
            w.writerow(["time", *names, HEARTBEAT])
            for i in range(steps):
                row = [repr(start + i * interval)]
                for name in names:
                    values = series[name]
                    v = values[i] if i < len(values) else MISSING
                    row.append("" if v is MISSING else "bad" if v is STALE else cell(v))
                w.writerow([*row, "1"])
            return
        w.writerow(["time", "signal", "value", "quality"])
        for i in range(steps):
            t = repr(start + i * interval)
            for name, values in series.items():
                if i >= len(values) or values[i] is MISSING:
                    continue
                v = values[i]
                w.writerow([t, name, "", "bad"] if v is STALE else [t, name, cell(v), "good"])
            w.writerow([t, HEARTBEAT, "1", "good"])


def ruletest_firings(
    spec: RuleTestFile, case: Case, base: Path, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, float, str, str]]:
    """What `mw-gateway test` fires for this case (the engine it builds records its firings)."""
    seen: list[Firing] = []

    class Recording(Engine):
        def process(self, sample: Any, now: float) -> list[Firing]:
            out = super().process(sample, now)
            seen.extend(out)
            return out

        def tick(self, now: float) -> list[Firing]:
            out = super().tick(now)
            seen.extend(out)
            return out

    with monkeypatch.context() as m:
        m.setattr(ruletest, "Engine", Recording)
        ruletest.run_case(spec, case.model_copy(update={"expect": []}), base, "x")
    return [_row(f) for f in seen if case.rules is None or f.rule_id in case.rules]


def backtest_firings(
    spec: RuleTestFile, case: Case, base: Path, data: Path, *, reader: str, tick: float | None = None
) -> list[tuple[str, float, str, str]]:
    ruleset = load_rules([(base / f).resolve() for f in spec.rule_files])
    result = run_backtest(
        ruleset,
        [data],
        tick=tick,
        assume_open=1e12,  # a rule test closes no task unless told (cases with events are not compared)
        reader=reader,
        keep_firings=True,
    )
    return [_row(f) for f, _ in result.firings if case.rules is None or f.rule_id in case.rules]


def _row(f: Firing) -> tuple[str, float, str, str]:
    return (f.rule_id, f.fired_at, f.key, f.task.description)
