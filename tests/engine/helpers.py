"""Build rule sets and engines from YAML text, feed them series of samples."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway.core.firings import Firing
from gateway.core.samples import Quality, Sample
from gateway.engine.engine import Engine
from gateway.engine.loader import RuleSet, load_rules

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def ruleset(tmp_path: Path, text: str, name: str = "rules.yaml", **kwargs: Any) -> RuleSet:
    folder = tmp_path / "rules"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return load_rules(folder, **kwargs)


def engine(tmp_path: Path, text: str, **kwargs: Any) -> Engine:
    return Engine(ruleset(tmp_path, text), gateway_id="test-gw", **kwargs)


def good(signal: str, value: Any, t: float) -> Sample:
    return Sample(signal, value, t)


def bad(signal: str, t: float) -> Sample:
    return Sample(signal, None, t, Quality.BAD, "link down")


def feed(
    eng: Engine, signal: str, values: Iterable[Any], *, start: float = T0, step: float = 60.0
) -> list[Firing]:
    """One sample per step (None = a bad sample), with a tick after each; returns every firing."""
    out: list[Firing] = []
    t = start
    for v in values:
        sample = bad(signal, t) if v is None else good(signal, v, t)
        out += eng.process(sample, t)
        out += eng.tick(t)
        t += step
    return out


def at(firings: Iterable[Firing], start: float = T0) -> list[float]:
    """Firing times in minutes after start."""
    return [(f.fired_at - start) / 60.0 for f in firings]
