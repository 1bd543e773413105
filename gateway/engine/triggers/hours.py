"""`hours:` triggers: running-hours maintenance, time accumulated while a boolean signal (or an expression) is
true, once per `every` hours.

    when: {hours: compressor.running, every: 500h}
    when: {hours: {expr: "oven.burner > 0"}, every: 2000}
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, Field

from gateway.core.durations import parse_duration
from gateway.core.firings import Firing
from gateway.core.samples import Sample
from gateway.engine import templates as tpl
from gateway.engine.schema import Number, SignalName, Strict
from gateway.engine.triggers.base import (
    GOOD,
    Firings,
    Host,
    RuleRuntime,
    TriggerKind,
    WhenModel,
    evidence_of,
    num,
)
from gateway.engine.triggers.expression import evaluate_expr, expr_evidence
from gateway.engine.triggers.forecast import RateWindow

if TYPE_CHECKING:
    from gateway.engine.ruleview import CompiledView


class HoursExpr(Strict):
    expr: Annotated[str, Field(strict=True, min_length=1)]


def _hours(value: object) -> object:
    """`every:` of an hours rule: a number of hours, or a duration such as 500h or 30d."""
    if isinstance(value, str):
        return parse_duration(value) / 3600.0
    return value


class HoursWhen(WhenModel):
    """Running-hours maintenance: time accumulated while a boolean signal (or an expression) is true."""

    kind: ClassVar[str] = "hours"
    signal_keys: ClassVar[tuple[str, ...]] = ("hours",)
    nested: ClassVar[Mapping[tuple[str, ...], type[BaseModel]]] = {("hours",): HoursExpr}
    hours: SignalName | HoursExpr
    every: Annotated[Number, BeforeValidator(_hours), Field(gt=0)]  # hours
    rearm: Literal["fixed", "on_completion"] = "fixed"

    @property
    def signals(self) -> tuple[str, ...]:
        return (self.hours,) if isinstance(self.hours, str) else ()

    @property
    def expr(self) -> str | None:
        return self.hours.expr if isinstance(self.hours, HoursExpr) else None

    def expression(self) -> tuple[str, tuple[str, ...]] | None:
        return (self.hours.expr, ("hours", "expr")) if isinstance(self.hours, HoursExpr) else None

    def probe_value(self) -> Any:
        return self.every


class Run(enum.StrEnum):
    """Whether running time counts. Not persisted (re-learnt from the next sample, so the gateway's own
    downtime never counts); the value is the state on the status page."""

    STOPPED = "idle"  # the last sample said not running, or was bad: time does not count
    RUNNING = "running"  # the last sample said running: time counts up to the next sample or tick


class HoursRuntime(RuleRuntime):
    """`hours` + `every`: running time accumulated while a boolean signal (or an expression) is true.

    Time counts from a sample saying "running" to the next sample or tick; a bad sample, a missing value or
    the gateway's own downtime never count. Each multiple of `every` hours fires once, keyed `<N>h`.

    Persisted: acc_s, next_s, every_s. Status progress (hours): current, every, next, unit.
    """

    __slots__ = ("acc_s", "ctx", "every_s", "last_t", "next_s", "on_completion", "rate", "run", "signal")

    needs_tick = True

    def __init__(self, compiled: CompiledView, host: Host) -> None:
        super().__init__(compiled, host)
        when = compiled.rule.when
        assert isinstance(when, HoursWhen)
        self.every_s = float(when.every) * 3600.0
        self.signal = when.hours if isinstance(when.hours, str) else ""
        self.on_completion = when.rearm == "on_completion"
        self.acc_s = 0.0
        self.next_s = self.every_s
        self.run = Run.STOPPED
        self.last_t: float | None = None
        self.rate = RateWindow()  # checkpoints of acc_s for the forecast (not persisted)
        self.ctx = (
            tpl.signal_context(host.values, compiled.roots, compiled.prefixes) if compiled.expr else None
        )

    def _condition(self, sample: Sample) -> bool:
        if self.c.expr is None:
            return sample.quality is GOOD and bool(sample.value)
        return evaluate_expr(self.c, self.host.values, self.ctx) is True

    def _advance(self, now: float) -> Firings:
        last = self.last_t
        if last is not None and now <= last:
            return None
        self.last_t = now
        if now >= self.rate.due:
            running_s = now - last if self.run is Run.RUNNING and last is not None else 0.0
            self.rate.add(now, (self.acc_s + running_s) / 3600.0)  # in hours, as the forecast
        if self.run is Run.STOPPED or last is None:
            return None
        self.acc_s += now - last
        self.host.dirty.add(self.id)
        if self.acc_s < self.next_s:
            return None
        out: list[Firing] = []
        while self.acc_s >= self.next_s:
            threshold_h = self.next_s / 3600.0
            self.next_s += self.every_s
            sample = self.host.values.get(self.signal) if self.signal else None
            evidence = (
                (evidence_of(sample, self.signal),)
                if self.signal
                else expr_evidence(self.c, self.host.values)
            )
            firing = self.fire(
                now,
                f"{num(threshold_h)}h",
                value=self.acc_s / 3600.0,
                signal=self.signal,
                threshold=threshold_h,
                evidence=evidence,
            )
            if firing is not None:
                out.append(firing)
        return out

    def on_sample(self, sample: Sample, now: float) -> Firings:
        out = self._advance(now)
        self.run = Run.RUNNING if self._condition(sample) else Run.STOPPED
        if self.last_t is None or now > self.last_t:
            self.last_t = now
        return out

    def on_tick(self, now: float) -> Firings:
        return self._advance(now)

    def task_closed(self, outcome: str, now: float) -> None:
        if outcome == "completed" and self.on_completion:
            self._advance(now)
            self.next_s = self.acc_s + self.every_s
            self.host.dirty.add(self.id)

    def shift(self, delta: float) -> None:
        super().shift(delta)
        if self.last_t is not None:
            self.last_t += delta
        self.rate.shift(delta)

    def export(self) -> dict[str, Any]:
        return {**super().export(), "acc_s": self.acc_s, "next_s": self.next_s, "every_s": self.every_s}

    def restore(self, state: Mapping[str, Any]) -> bool:
        same = super().restore(state)
        if state.get("kind") != "hours":
            return False
        self.acc_s = float(state.get("acc_s") or 0.0)
        if same and state.get("next_s") is not None:
            self.next_s = float(state["next_s"])
        else:
            self.next_s = (math.floor(self.acc_s / self.every_s) + 1) * self.every_s
        return same

    def phase_status(self, now: float) -> dict[str, Any]:
        return {"state": str(self.run)}

    def forecast(self, now: float) -> dict[str, Any] | None:
        """In running hours: the rate is running hours per hour; no estimate while the machine is stopped."""
        running = self.run is Run.RUNNING
        return self.rate.forecast(now, self.acc_s / 3600.0, self.next_s / 3600.0, unit="h", running=running)

    def progress(self) -> dict[str, Any]:
        return {
            "current": round(self.acc_s / 3600.0, 3),
            "every": self.every_s / 3600.0,
            "next": self.next_s / 3600.0,
            "unit": "h",
        }


KIND = TriggerKind(when=HoursWhen, runtime=HoursRuntime)
