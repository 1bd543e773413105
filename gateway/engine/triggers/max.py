"""`max:` triggers: the highest good value of one signal over a sliding window, compared with above / below.

    when: {signal: pump7.vibration, max: 10m, above: 4.5, coverage: 0.8}

The schema's keys and the runtime are shared by avg, min and max (windowed.py); semantics in docs/rules.md.
"""

from __future__ import annotations

from typing import ClassVar

from gateway.engine.triggers.base import TriggerKind, WhenModel
from gateway.engine.triggers.windowed import AggregateFields, AggregateRuntime


class MaxWhen(AggregateFields, WhenModel):
    kind: ClassVar[str] = "max"
    carries: ClassVar[tuple[str, ...]] = ("signal", "avg", "min", "max")


KIND = TriggerKind(when=MaxWhen, runtime=AggregateRuntime)
