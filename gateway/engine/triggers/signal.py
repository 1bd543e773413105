"""`signal:` triggers: a condition on one signal, exactly one of above / below / equals / in / bit, optionally
held for `for`, with hysteresis for above/below (`reset_below` / `reset_above`).

    when: {signal: press1.temp, above: 85, for: 5m, reset_below: 75}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field, model_validator

from gateway.core.firings import Evidence
from gateway.core.samples import Sample
from gateway.engine.schema import Duration, Number, Scalar, SignalName
from gateway.engine.triggers.base import (
    GOOD,
    NUMBER_TYPES,
    Firings,
    Host,
    RuleRuntime,
    TriggerKind,
    WhenModel,
    evidence_of,
)
from gateway.engine.triggers.latch import LatchedRuntime, Phase, check_hysteresis

if TYPE_CHECKING:
    from gateway.engine.ruleview import CompiledView


class SignalWhen(WhenModel):
    """A condition on one signal: exactly one of above / below / equals / in / bit."""

    kind: ClassVar[str] = "signal"
    signal_keys: ClassVar[tuple[str, ...]] = ("signal",)
    signal: SignalName
    above: Number | None = None
    below: Number | None = None
    equals: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in", min_length=1)
    bit: Annotated[int, Field(strict=True, ge=0, le=63)] | None = None
    for_: Duration = Field(default=0.0, alias="for")
    reset_above: Number | None = None
    reset_below: Number | None = None

    @model_validator(mode="after")
    def _one_condition(self) -> SignalWhen:
        given = [
            name
            for name, v in (
                ("above", self.above),
                ("below", self.below),
                ("equals", self.equals),
                ("in", self.in_),
                ("bit", self.bit),
            )
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "a signal trigger takes exactly one of above, below, equals, in or bit"
                + (f" (got {', '.join(given)}; use expr: to combine conditions)" if given else "")
            )
        check_hysteresis(self.above, self.below, self.reset_above, self.reset_below)
        return self

    @property
    def signals(self) -> tuple[str, ...]:
        return (self.signal,)

    @property
    def threshold(self) -> Any:
        """The one condition's operand (what `threshold` is in the task templates)."""
        for v in (self.above, self.below, self.equals, self.in_, self.bit):
            if v is not None:
                return v
        return None

    def probe_value(self) -> Any:
        for v in (self.above, self.below, self.equals, self.in_[0] if self.in_ else None):
            if v is not None:
                return v
        return 1 << (self.bit or 0)


class SignalRuntime(LatchedRuntime):
    """The latched condition (see LatchedRuntime) on one signal's good values. A bad sample, or a value the
    condition cannot apply to (a string for `above`), is "unknown". Persisted: phase, since."""

    __slots__ = ("cond", "limit", "mask", "reset", "signal")

    def __init__(self, compiled: CompiledView, host: Host) -> None:
        when = compiled.rule.when
        assert isinstance(when, SignalWhen)
        super().__init__(compiled, host, when.for_)
        self.signal = when.signal
        self.cond, self.reset = _condition(when)
        self.limit = when.above if when.above is not None else when.below
        self.mask = 1 << when.bit if when.bit is not None else 0

    def on_sample(self, sample: Sample, now: float) -> Firings:
        if sample.quality is not GOOD:
            return self.step(None, False, now)
        v = sample.value
        cond = self.cond(v)
        if cond is None:
            return self.step(None, False, now)
        if not cond and self.phase is _IDLE:
            return None
        return self.step(cond, self.reset(v) if self.phase is Phase.FIRING else not cond, now)

    def evidence(self) -> tuple[Evidence, ...]:
        return (evidence_of(self.host.values.get(self.signal), self.signal),)

    def value(self) -> Any:
        sample = self.host.values.get(self.signal)
        return None if sample is None else sample.value

    def signal_name(self) -> str:
        return self.signal

    def threshold(self) -> Any:
        when = self.c.rule.when
        assert isinstance(when, SignalWhen)
        return when.threshold


_IDLE = Phase.IDLE

# Fast paths for the common case (armed, a good number that does not meet the condition): the same answer as
# SignalRuntime.on_sample, with fewer calls. Every other case goes through SignalRuntime.on_sample.


class AboveRuntime(SignalRuntime):
    __slots__ = ()

    def on_sample(self, sample: Sample, now: float) -> Firings:
        if self.phase is _IDLE and sample.quality is GOOD:
            v = sample.value
            if (type(v) is float or type(v) is int) and not v > self.limit:  # type: ignore[operator]
                return None
        return SignalRuntime.on_sample(self, sample, now)


class BelowRuntime(SignalRuntime):
    __slots__ = ()

    def on_sample(self, sample: Sample, now: float) -> Firings:
        if self.phase is _IDLE and sample.quality is GOOD:
            v = sample.value
            if (type(v) is float or type(v) is int) and not v < self.limit:  # type: ignore[operator]
                return None
        return SignalRuntime.on_sample(self, sample, now)


class BitRuntime(SignalRuntime):
    __slots__ = ()

    def on_sample(self, sample: Sample, now: float) -> Firings:
        if self.phase is _IDLE and sample.quality is GOOD:
            v = sample.value
            if type(v) is int and not v & self.mask:
                return None
        return SignalRuntime.on_sample(self, sample, now)


def _condition(when: SignalWhen) -> tuple[Callable[[Any], bool | None], Callable[[Any], bool]]:
    """(condition, reset) as functions of a good value; the condition returns None when it cannot apply.
    The reset is the hysteresis: past reset_below / reset_above when given, else the condition false."""
    if when.above is not None:
        above = when.above
        rb = when.reset_below

        def cond_above(v: Any) -> bool | None:
            return v > above if type(v) in NUMBER_TYPES else None  # NaN > x is False: never fires

        return cond_above, (lambda v: v < rb) if rb is not None else (lambda v: not v > above)
    if when.below is not None:
        below = when.below
        ra = when.reset_above

        def cond_below(v: Any) -> bool | None:
            return v < below if type(v) in NUMBER_TYPES else None

        return cond_below, (lambda v: v > ra) if ra is not None else (lambda v: not v < below)
    if when.bit is not None:
        mask = 1 << when.bit

        def cond_bit(v: Any) -> bool | None:
            if type(v) is int:
                return bool(v & mask)
            if type(v) is float and v.is_integer():
                return bool(int(v) & mask)
            return None

        return cond_bit, lambda v: not (int(v) & mask)
    if when.in_ is not None:
        allowed = list(when.in_)

        def cond_in(v: Any) -> bool | None:
            return None if v is None else any(_same(v, a) for a in allowed)

        return cond_in, lambda v: not cond_in(v)
    target = when.equals

    def cond_equals(v: Any) -> bool | None:
        return None if v is None else _same(v, target)

    return cond_equals, lambda v: not cond_equals(v)


def _same(v: Any, target: Any) -> bool:
    """equals / in: numbers compare by value (1 == 1.0), booleans only to booleans, strings exactly."""
    if isinstance(target, bool) or isinstance(v, bool):
        return isinstance(v, bool) and isinstance(target, bool) and v is target
    return bool(v == target)


def make_signal_runtime(compiled: CompiledView, host: Host) -> RuleRuntime:
    """The runtime class with the fast path for the rule's condition."""
    when = compiled.rule.when
    assert isinstance(when, SignalWhen)
    if when.above is not None:
        return AboveRuntime(compiled, host)
    if when.below is not None:
        return BelowRuntime(compiled, host)
    if when.bit is not None:
        return BitRuntime(compiled, host)
    return SignalRuntime(compiled, host)


KIND = TriggerKind(when=SignalWhen, runtime=make_signal_runtime)
