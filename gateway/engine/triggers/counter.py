"""`counter:` triggers: meter-based maintenance, once per `every` units of increase of a counter signal.

when: {counter: press1.strokes, every: 50000, wrap: uint32, rearm: fixed, unit: strokes}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field

from gateway.core.firings import Firing
from gateway.core.samples import Sample
from gateway.engine.schema import Number, SignalName
from gateway.engine.triggers.base import (
    GOOD,
    Firings,
    Host,
    RuleRuntime,
    TriggerKind,
    WhenModel,
    evidence_of,
    is_number,
    num,
)
from gateway.engine.triggers.forecast import RateWindow

if TYPE_CHECKING:
    from gateway.engine.loader import CompiledRule

# Data types whose wrap-around modulus `wrap:` may name instead of a number.
WRAP_TYPES = {"uint16": 1 << 16, "int16": 1 << 16, "uint32": 1 << 32, "int32": 1 << 32, "uint64": 1 << 64}


class CounterWhen(WhenModel):
    """Meter-based maintenance: fires once per `every` units of increase of a counter signal."""

    kind: ClassVar[str] = "counter"
    counter: SignalName
    every: Annotated[Number, Field(gt=0)]
    wrap: (
        Annotated[int, Field(strict=True, ge=2)]
        | Literal["uint16", "int16", "uint32", "int32", "uint64"]
        | None
    ) = None
    rearm: Literal["fixed", "on_completion"] = "fixed"
    unit: str = "counts"

    @property
    def wrap_modulus(self) -> int | None:
        return WRAP_TYPES[self.wrap] if isinstance(self.wrap, str) else self.wrap

    @property
    def signals(self) -> tuple[str, ...]:
        return (self.counter,)

    def probe_value(self) -> Any:
        return self.every


class CounterRuntime(RuleRuntime):
    """`counter` + `every`.

    The rule keeps a meter, `total`: it starts at the counter's first value ever seen and grows by every
    increase. A decrease is a reset to 0 (the increase is then the new value), except with `wrap: N` when the
    counter goes from the upper half of its range to the lower half: that is a wrap-around (increase =
    new + N - previous). Thresholds are the multiples of `every` of the meter (with `rearm: on_completion`,
    the meter at the task's completion plus `every`); each threshold crossed fires once, so one sample jumping
    over two thresholds makes two firings, keyed by their thresholds.

    Persisted: last, total, next, every. Status progress: current, every, next, remaining, unit.
    """

    __slots__ = ("every", "last", "next", "on_completion", "rate", "signal", "total", "unit", "wrap")

    def __init__(self, compiled: CompiledRule, host: Host) -> None:
        super().__init__(compiled, host)
        when = compiled.rule.when
        assert isinstance(when, CounterWhen)
        self.every = float(when.every)
        self.wrap = when.wrap_modulus
        self.signal = when.counter
        self.unit = when.unit
        self.on_completion = when.rearm == "on_completion"
        self.last: float | None = None  # the counter's last raw value
        self.total: float | None = None  # the meter
        self.next: float | None = None  # the next threshold, in meter units
        self.rate = RateWindow()  # checkpoints of the meter for the forecast (not persisted)

    def on_sample(self, sample: Sample, now: float) -> Firings:
        v = sample.value
        last = self.last
        total = self.total
        # Fast path: a good number, not lower than the last one, no threshold reached.
        if (
            last is not None
            and total is not None
            and (type(v) is int or type(v) is float)
            and v >= last  # type: ignore[operator]
            and sample.quality is GOOD
            and total + (v - last) < self.next  # type: ignore[operator]
        ):
            self.total = total + (v - last)  # type: ignore[operator]
            self.last = v  # type: ignore[assignment]
            self.host.dirty.add(self.id)
            if v > last:  # type: ignore[operator]
                self.rate.moved_at = now
            if now >= self.rate.due:
                self.rate.add(now, self.total)
            return None
        if sample.quality is not GOOD or not is_number(v):
            return None
        assert isinstance(v, int | float)
        self.last = v
        self.host.dirty.add(self.id)
        if last is None or self.total is None or self.next is None:
            if self.total is None:
                self.total = float(v)
            if self.next is None:
                self.next = (math.floor(self.total / self.every) + 1) * self.every
            return None
        if v >= last:
            delta = v - last
        elif self.wrap is not None and last >= self.wrap / 2 > v:
            delta = v + self.wrap - last
        else:
            delta = v  # a reset: the counter restarted from 0
        self.total += delta
        if delta > 0:
            self.rate.moved_at = now
        if now >= self.rate.due:
            self.rate.add(now, self.total)
        if self.total < self.next:
            return None
        out: list[Firing] = []
        while self.total >= self.next:
            threshold = self.next
            self.next += self.every
            firing = self.fire(
                now,
                num(threshold),
                value=v,
                signal=self.signal,
                threshold=threshold,
                evidence=(evidence_of(sample, self.signal),),
            )
            if firing is not None:
                out.append(firing)
        return out

    def task_closed(self, outcome: str, now: float) -> None:
        if outcome == "completed" and self.on_completion and self.total is not None:
            self.next = self.total + self.every
            self.host.dirty.add(self.id)

    def export(self) -> dict[str, Any]:
        return {
            **super().export(),
            "last": self.last,
            "total": self.total,
            "next": self.next,
            "every": self.every,
        }

    def restore(self, state: Mapping[str, Any]) -> bool:
        same = super().restore(state)
        if state.get("kind") != "counter":
            return False
        # The meter survives any edit of the rule; the next threshold only while `every` is unchanged.
        self.last = None if state.get("last") is None else float(state["last"])
        self.total = None if state.get("total") is None else float(state["total"])
        if same and state.get("next") is not None:
            self.next = float(state["next"])
        elif self.total is not None:
            self.next = (math.floor(self.total / self.every) + 1) * self.every
        return same

    def forecast(self, now: float) -> dict[str, Any] | None:
        return self.rate.forecast(now, self.total, self.next, unit=self.unit)

    def progress(self) -> dict[str, Any]:
        return {
            "current": self.total,
            "every": self.every,
            "next": self.next,
            "remaining": None if self.next is None or self.total is None else self.next - self.total,
            "unit": self.unit,
        }


KIND = TriggerKind(when=CounterWhen, runtime=CounterRuntime)
