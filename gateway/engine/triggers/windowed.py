"""What the windowed condition kinds share: the keys and checks of their `when:` blocks, and the runtime of
the aggregates (`avg`, `min`, `max`: one kind each, in avg.py / min.py / max.py; `change` is in change.py).

    when: {signal: pump7.vibration, avg: 10m, above: 4.5, coverage: 0.8, for: 5m, reset_below: 4}

The windows themselves (bounded memory, constant time per sample) are in window.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field, model_validator

from gateway.core.durations import format_duration
from gateway.core.firings import Evidence
from gateway.core.samples import Sample
from gateway.engine.schema import Duration, Number, SignalName, Strict
from gateway.engine.triggers.base import GOOD, Firings, Host, evidence_of
from gateway.engine.triggers.latch import LatchedRuntime, Phase, check_hysteresis
from gateway.engine.triggers.window import Segments

if TYPE_CHECKING:
    from gateway.engine.ruleview import CompiledView

_EPS = 1e-9


class WindowedCondition(Strict):
    """The keys of a condition on a windowed value of one signal (aggregates, change): `above` or `below`,
    `for`, the hysteresis keys; and keys that belong to other kinds, accepted here only to be refused with
    a message that says where they go."""

    signal_keys: ClassVar[tuple[str, ...]] = ("signal",)
    signal: SignalName
    above: Number | None = None
    below: Number | None = None
    for_: Duration = Field(default=0.0, alias="for")
    reset_above: Number | None = None
    reset_below: Number | None = None
    bit: Annotated[int, Field(strict=True)] | None = None
    within: Duration | None = None
    at_least: Annotated[int, Field(strict=True)] | None = None

    def _what(self) -> str:
        raise NotImplementedError

    def _check_condition(self) -> None:
        what = self._what()
        if self.bit is not None:
            raise ValueError(
                f"bit goes with count (rising edges of one bit of a word), not with {what}: "
                f"write {{count: {self.signal}, bit: {self.bit}, within: ..., at_least: ...}}"
            )
        if self.within is not None or self.at_least is not None:
            raise ValueError(f"within and at_least go with count: (events in a window), not with {what}")
        if (self.above is None) == (self.below is None):
            raise ValueError(f"{what} takes exactly one of above or below")
        check_hysteresis(self.above, self.below, self.reset_above, self.reset_below)

    @property
    def signals(self) -> tuple[str, ...]:
        return (self.signal,)

    @property
    def threshold(self) -> float:
        return self.above if self.above is not None else self.below  # type: ignore[return-value]

    def probe_value(self) -> Any:
        return self.threshold


class AggregateFields(WindowedCondition):
    """`avg`, `min` or `max` (exactly one) of a signal over a window, with `coverage`."""

    avg: Duration | None = None
    min_: Duration | None = Field(default=None, alias="min")
    max_: Duration | None = Field(default=None, alias="max")
    coverage: Annotated[float, Field(strict=False, gt=0, le=1)] = 0.8

    def _what(self) -> str:
        return self.function

    @model_validator(mode="after")
    def _checks(self) -> AggregateFields:
        given = [n for n, v in (("avg", self.avg), ("min", self.min_), ("max", self.max_)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"an aggregate takes exactly one of avg, min or max (got {', '.join(given)})")
        if self.window <= 0:
            raise ValueError(f"{given[0]}: the window must be longer than 0s")
        self._check_condition()
        return self

    @property
    def function(self) -> str:
        return "avg" if self.avg is not None else "min" if self.min_ is not None else "max"

    @property
    def window(self) -> float:
        for v in (self.avg, self.min_, self.max_):
            if v is not None:
                return v
        return 0.0

    def windows(self) -> tuple[tuple[str, float], ...]:
        return ((self.function, self.window),)

    def template_values(self) -> dict[str, Any]:
        return {"window": seconds(self.window), "coverage": 1.0}


def reset_of(when: WindowedCondition) -> Callable[[float], bool]:
    """The re-arm test on the windowed value: the hysteresis, or the condition false (decide() tests the
    condition itself inline)."""
    if when.above is not None:
        above = when.above
        rb = when.reset_below
        return (lambda v: v < rb) if rb is not None else (lambda v: not v > above)
    below = when.below
    assert below is not None
    ra = when.reset_above
    return (lambda v: v > ra) if ra is not None else (lambda v: not v < below)


def seconds(window: float) -> float:
    """A window for the templates and the status: 300 rather than 300.0."""
    return int(window) if float(window).is_integer() else window


def good_number(sample: Sample) -> float | None:
    """The sample's value as a number for a window (an int stays an int; booleans are 0 / 1), or None: a
    hole (a bad sample, or a value that is no number)."""
    if sample.quality is not GOOD:
        return None
    v = sample.value
    t = type(v)
    if t is float:
        return v if v == v else None  # type: ignore[return-value]
    if t is int:
        return v  # type: ignore[return-value]
    if t is bool:
        return int(v)  # type: ignore[arg-type]
    return None


def current_of(host: Host, signal: str) -> tuple[float, float] | None:
    """(sample time, value) of the signal's last sample when good: after a reload, the value still holds."""
    sample = host.values.get(signal)
    if sample is None:
        return None
    v = good_number(sample)
    return None if v is None else (sample.ts, v)


class WindowedRuntime(LatchedRuntime):
    """The latched condition (see LatchedRuntime) on a value computed over a window of one signal's history,
    evaluated at every sample of the signal and at every tick. Unknown (no firing, interrupts `for`, no
    re-arm) while the value cannot be computed. Persisted: phase, since, and the window (`window`), whose
    value then holding is cut at the last time seen: the gateway's downtime is a hole."""

    __slots__ = ("above", "evaluated", "limit", "reset", "seg", "shown", "signal", "win")

    def __init__(self, compiled: CompiledView, host: Host, seg: Segments) -> None:
        when = compiled.rule.when
        assert isinstance(when, WindowedCondition)
        super().__init__(compiled, host, when.for_)
        self.needs_tick = True
        self.signal: str = when.signal
        self.reset: Callable[[float], bool] = reset_of(when)
        self.above: bool = when.above is not None
        self.limit: float = when.threshold
        self.seg: Segments = seg
        self.win: float = seg.window
        self.shown: float | None = None  # the value at the last evaluation
        # The time of the last evaluation: a tick at that same time, with no sample since, would find the
        # same window and the same answer (a rule test's tick after its step's samples; a batch then a tick).
        self.evaluated: float | None = None

    def measure(self, now: float) -> float | None:
        raise NotImplementedError

    def record(self, sample: Sample, now: float) -> None:
        v = sample.value
        if sample.quality is GOOD and (type(v) is float or type(v) is int) and v == v:
            self.seg.good(now, v, sample.ts)  # type: ignore[arg-type]
        else:
            number = good_number(sample)
            if number is None:
                self.seg.bad(now)
            else:
                self.seg.good(now, number, sample.ts)
        self.host.dirty.add(self.id)
        self.evaluated = now

    def on_sample(self, sample: Sample, now: float) -> Firings:
        self.record(sample, now)
        return self.evaluate(now)

    def on_tick(self, now: float) -> Firings:
        if now == self.evaluated:
            return None
        self.evaluated = now
        self.host.dirty.add(self.id)
        return self.evaluate(now)

    def evaluate(self, now: float) -> Firings:
        return self.decide(self.measure(now), now)

    def decide(self, v: float | None, now: float) -> Firings:
        """One evaluation of the latched condition on the windowed value `v` (None: unknown)."""
        self.shown = v
        if v is None:
            return self.step(None, False, now) if self.phase is Phase.PENDING else None
        cond = v > self.limit if self.above else v < self.limit
        if not cond and self.phase is Phase.IDLE:
            return None  # the common case, without a call
        return self.step(cond, self.reset(v) if self.phase is Phase.FIRING else not cond, now)

    def evidence(self) -> tuple[Evidence, ...]:
        return (evidence_of(self.host.values.get(self.signal), self.signal),)

    def value(self) -> Any:
        return self.shown

    def signal_name(self) -> str:
        return self.signal

    def threshold(self) -> Any:
        when = self.c.rule.when
        assert isinstance(when, WindowedCondition)
        return when.threshold

    def shift(self, delta: float) -> None:
        super().shift(delta)
        self.seg.shift(delta)
        if self.evaluated is not None:
            self.evaluated += delta

    def export(self) -> dict[str, Any]:
        return {**super().export(), "window": self.seg.export()}

    def restore(self, state: Mapping[str, Any]) -> bool:
        same = super().restore(state)
        if same and state.get("window") is not None:
            self.seg.restore(state["window"], current_of(self.host, self.signal))
        return same

    def window_status(self, now: float) -> dict[str, Any]:
        self.shown = self.measure(now)  # what progress() shows next
        return {"window": seconds(self.win), "value": self.shown}

    def phase_status(self, now: float) -> dict[str, Any]:
        out = super().phase_status(now)
        out.update(self.window_status(now))
        return out

    def progress(self) -> dict[str, Any] | None:
        return {
            "value": self.shown,
            "threshold": self.threshold(),
            "unit": f"{self.c.rule.kind} over {format_duration(self.win)}",
        }


_IDLE = Phase.IDLE


class AggregateRuntime(WindowedRuntime):
    """avg / min / max over `[now - W, now]`, unknown while good data covers less than `coverage` of W."""

    __slots__ = ("covered", "function", "needed")

    def __init__(self, compiled: CompiledView, host: Host) -> None:
        when = compiled.rule.when
        assert isinstance(when, AggregateFields)
        fn = when.function
        super().__init__(compiled, host, Segments(when.window, track_lo=fn == "min", track_hi=fn == "max"))
        self.function: str = fn
        self.needed: float = when.coverage * when.window * (1 - _EPS)
        self.covered: float = 0.0

    def measure(self, now: float) -> float | None:
        value, covered = self.seg.aggregate(now, self.function)
        self.covered = covered
        return None if covered < self.needed else value

    def on_sample(self, sample: Sample, now: float) -> Firings:
        # WindowedRuntime.on_sample with the common case inlined: a good number, armed, condition false.
        v = sample.value
        seg = self.seg
        if sample.quality is GOOD and (type(v) is float or type(v) is int) and v == v:
            seg.good(now, v, sample.ts)  # type: ignore[arg-type]
            self.host.dirty.add(self.id)
            self.evaluated = now
        else:
            self.record(sample, now)
        value, covered = seg.aggregate(now, self.function)
        self.covered = covered
        if (
            value is not None
            and covered >= self.needed
            and self.phase is _IDLE
            and not (value > self.limit if self.above else value < self.limit)
        ):
            self.shown = value
            return None
        return self.decide(None if covered < self.needed else value, now)

    def template_extra(self) -> dict[str, Any] | None:
        return {"window": seconds(self.win), "coverage": round(self.covered / self.win, 6)}

    def window_status(self, now: float) -> dict[str, Any]:
        out = super().window_status(now)
        out["coverage"] = round(self.covered / self.win, 6)
        return out

    def progress(self) -> dict[str, Any] | None:
        out = super().progress()
        assert out is not None
        out["unit"] += f" ({self.covered / self.win:.0%} covered)"
        return out
