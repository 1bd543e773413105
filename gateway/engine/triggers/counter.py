"""`counter:` triggers: meter-based maintenance, once per `every` units of increase of a counter signal.

when: {counter: press1.strokes, every: 50000, wrap: uint32, rearm: fixed, unit: strokes}
"""

from __future__ import annotations

import enum
import logging
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
    from gateway.engine.ruleview import CompiledView

log = logging.getLogger("gateway.engine")

# Data types whose wrap-around modulus `wrap:` may name instead of a number.
WRAP_TYPES = {"uint16": 1 << 16, "int16": 1 << 16, "uint32": 1 << 32, "int32": 1 << 32, "uint64": 1 << 64}


# At most this many firings for one sample: beyond, one firing for the last threshold and a WARNING naming
# the skipped ones (reachable only with a `max_jump` over MAX_FIRINGS x every).
MAX_FIRINGS = 1000
# Default `max_jump`, in multiples of `every`.
DEFAULT_JUMP_EVERY = 1000
EXACT = float(1 << 53)  # floats beyond this magnitude are taken as ints (all of them are whole numbers)

Number_ = int | float


class CounterWhen(WhenModel):
    """Meter-based maintenance: fires once per `every` units of increase of a counter signal."""

    kind: ClassVar[str] = "counter"
    signal_keys: ClassVar[tuple[str, ...]] = ("counter",)
    counter: SignalName
    every: Annotated[Number, Field(gt=0)]
    wrap: (
        Annotated[int, Field(strict=True, ge=2)]
        | Literal["uint16", "int16", "uint32", "int32", "uint64"]
        | None
    ) = None
    rearm: Literal["fixed", "on_completion"] = "fixed"
    unit: str = "counts"
    # An increase beyond this between two samples is suspect: counted once confirmed. Default 1000 x every.
    # (Both are left out of the trigger fingerprint, which decides whether a saved next threshold applies,
    # so that the fingerprints of rules written before them stay the same; a change is still a change.)
    max_jump: Annotated[Number, Field(gt=0)] | None = Field(default=None, exclude=True)
    # Consecutive samples that must agree before a decrease (reset) or an implausible jump is accepted.
    confirm: Annotated[int, Field(strict=True, ge=1, le=10)] = Field(default=2, exclude=True)

    @property
    def wrap_modulus(self) -> int | None:
        return WRAP_TYPES[self.wrap] if isinstance(self.wrap, str) else self.wrap

    @property
    def jump_limit(self) -> float:
        return float(self.max_jump) if self.max_jump is not None else DEFAULT_JUMP_EVERY * float(self.every)

    @property
    def signals(self) -> tuple[str, ...]:
        return (self.counter,)

    def probe_value(self) -> Any:
        return self.every


class Step(enum.Enum):
    """How a value relates to the previous one."""

    UP = "up"  # an increase (or a wrap-around) within max_jump: counted
    RESET = "reset"  # a decrease: the PLC reset the counter (or a glitch)
    JUMP = "jump"  # an increase beyond max_jump: implausible (or a garbage value)


def _plain(x: Any) -> Number_:
    """A persisted number as int when it is one (JSON keeps ints; the meter stays exact)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise TypeError(f"not a number: {x!r}")
    return x if isinstance(x, int) else float(x)


class CounterRuntime(RuleRuntime):
    """`counter` + `every`.

    The rule keeps a meter, `total`: it starts at the counter's first value ever seen (at least 0) and grows
    by every increase; it never moves backwards. With `wrap: N`, values are read modulo N (a signed int16
    -1 is 65,535) and a decrease from the upper half of the range to the lower half is a wrap-around
    (increase = new + N - previous). Any other decrease is a reset to 0 (the increase is then the new value,
    if positive). An increase beyond `max_jump` is implausible. A reset or an implausible jump is accepted
    (and counted) only once `confirm` consecutive samples agree with it (each an increase within max_jump of
    the one before); a sample back in line with the last accepted value first makes the suspicious ones a
    glitch, ignored with a WARNING.
    Thresholds are the multiples of `every` of the meter (with `rearm: on_completion`, the meter at the
    task's completion plus `every`); each threshold crossed fires once, keyed by its threshold (one sample
    jumping over two makes two firings; over more than MAX_FIRINGS, one for the last and a WARNING).

    Persisted: last, total, next, every, pending. Status progress: current, every, next, remaining, unit.
    """

    __slots__ = (
        "confirm",
        "every",
        "ignored",
        "last",
        "max_jump",
        "next",
        "on_completion",
        "pending",
        "rate",
        "signal",
        "total",
        "unit",
        "warned",
        "wrap",
    )

    def __init__(self, compiled: CompiledView, host: Host) -> None:
        super().__init__(compiled, host)
        when = compiled.rule.when
        assert isinstance(when, CounterWhen)
        every = when.every
        self.every: Number_ = int(every) if float(every).is_integer() else float(every)
        self.wrap = when.wrap_modulus
        self.max_jump = when.jump_limit
        self.confirm = when.confirm
        self.signal = when.counter
        self.unit = when.unit
        self.on_completion = when.rearm == "on_completion"
        self.last: Number_ | None = None  # the counter's last accepted value (modulo `wrap`)
        self.total: Number_ | None = None  # the meter
        self.next: Number_ | None = None  # the next threshold, in meter units
        # A suspicion waiting for confirmation: [step, first value, last value, samples agreeing].
        self.pending: list[Any] | None = None
        self.ignored = 0  # samples ignored as glitches since start (status page)
        self.warned = False  # a glitch WARNING was logged since the last accepted reset or jump
        self.rate = RateWindow()  # checkpoints of the meter for the forecast (not persisted)

    def on_sample(self, sample: Sample, now: float) -> Firings:
        v = sample.value
        if type(v) is float and (v >= EXACT or v <= -EXACT) and v - v == 0.0:  # type: ignore[operator]
            v = int(v)  # beyond 2**53 a float is a whole number: keep the meter exact (no increment lost)
        last = self.last
        total = self.total
        # Fast path: a good integer, a plausible increase, no threshold reached, nothing pending.
        if (
            last is not None
            and total is not None
            and type(v) is int
            and sample.quality is GOOD
            and self.wrap is None
            and self.pending is None
            and last <= v <= last + self.max_jump  # type: ignore[operator]
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
        if self.wrap is not None:
            v = v % self.wrap  # signed types: modulo 2**bits; unsigned ones: out-of-range values folded in
        self.host.dirty.add(self.id)
        if last is None or total is None or self.next is None:
            self.last = v
            if self.total is None:
                self.total = max(v, 0)
            if self.next is None:
                self.next = (self.total // self.every + 1) * self.every
            return None
        delta = self._delta(last, v)
        if delta is None:
            return None
        new_total = total + delta
        if type(new_total) is float and not -EXACT < new_total < EXACT:
            new_total = int(total) + round(delta)  # beyond 2**53 the meter counts whole units, exactly
        self.total = new_total
        if delta > 0:
            self.rate.moved_at = now
        if now >= self.rate.due:
            self.rate.add(now, new_total)
        return self._crossings(sample, v, now)

    def shift(self, delta: float) -> None:
        super().shift(delta)
        self.rate.shift(delta)

    def _step(self, prev: Number_, v: Number_) -> tuple[Step, Number_]:
        if v >= prev:
            d = v - prev
        elif self.wrap is not None and prev >= self.wrap / 2 > v:
            d = v + self.wrap - prev
        else:  # counted from 0 up to v; a value beyond max_jump after a reset is a new baseline
            return Step.RESET, v if 0 < v <= self.max_jump else 0
        return (Step.UP, d) if d <= self.max_jump else (Step.JUMP, d)

    def _delta(self, last: Number_, v: Number_) -> Number_ | None:
        """The increase of the meter for value `v` (None: nothing to count yet); updates last / pending.
        `pending` is [step, first value, last value, samples agreeing, increase since the last accepted]."""
        step, d = self._step(last, v)
        pending = self.pending
        if step is Step.UP:
            if pending is not None:
                self.pending = None
                self._glitch(pending, last)
            self.last = v
            return d
        if pending is not None:
            up, inc = self._step(pending[2], v)
            if up is Step.UP:
                pending[2] = v
                pending[3] += 1
                pending[4] += inc
                if pending[3] >= self.confirm:
                    return self._accept(pending[0], pending[4], v)
                return None
            self._glitch(pending, last)
        if self.confirm <= 1:
            return self._accept(step, d, v)
        self.pending = [step, v, v, 1, d]
        return None

    def _accept(self, kind: Step, increase: Number_, v: Number_) -> Number_:
        """A reset or a jump confirmed: the value is the counter's from now on; the increase is counted."""
        self.pending = None
        self.warned = False
        self.last = v
        if kind is Step.RESET:
            log.info("rule %s: counter %s reset (now %s)", self.id, self.signal, num(v))
        else:
            log.warning(
                "rule %s: counter %s jumped by %s (more than max_jump, %s), confirmed by %d samples: counted",
                self.id,
                self.signal,
                num(increase),
                num(self.max_jump),
                self.confirm,
            )
        return increase

    def _glitch(self, pending: list[Any], last: Number_) -> None:
        self.ignored += pending[3]
        if not self.warned:
            self.warned = True
            log.warning(
                "rule %s: counter %s read %s after %s, then back in line: ignored as a glitch (a %s not "
                "confirmed by %d samples; further glitches are counted on the status page)",
                self.id,
                self.signal,
                num(pending[1]),
                num(last),
                "reset" if pending[0] is Step.RESET else "jump beyond max_jump",
                self.confirm,
            )

    def _crossings(self, sample: Sample, v: Number_, now: float) -> Firings:
        total, nxt, every = self.total, self.next, self.every
        assert total is not None and nxt is not None
        if total < nxt:
            return None
        crossed = (total - nxt) // every + 1
        if crossed > MAX_FIRINGS:
            skipped = int(crossed) - 1
            thresholds = [nxt + skipped * every]
            log.warning(
                "rule %s: counter %s crossed %d thresholds at once (%s to %s): one firing for the last, "
                "%d skipped (at most %d firings per sample)",
                self.id,
                self.signal,
                int(crossed),
                num(nxt),
                num(thresholds[0]),
                skipped,
                MAX_FIRINGS,
            )
        else:
            thresholds = []
            while total >= nxt and len(thresholds) < MAX_FIRINGS:
                thresholds.append(nxt)
                following = nxt + every
                if following <= nxt:  # a float meter beyond its precision: no threshold twice
                    break
                nxt = following
        after = thresholds[-1] + every
        if after <= total:  # rounding of a float meter: never a threshold twice, never a loop
            after = total + every
        if after <= total:
            after = math.nextafter(float(total), math.inf)
        self.next = after
        out: list[Firing] = []
        for threshold in thresholds:
            firing = self.fire(
                now,
                num(threshold),
                value=sample.value if self.wrap is None else v,
                signal=self.signal,
                threshold=threshold,
                evidence=(evidence_of(sample, self.signal),),
            )
            if firing is not None:
                out.append(firing)
        return out

    def task_closed(self, outcome: str, now: float) -> None:
        if outcome == "completed" and self.on_completion and self.total is not None:
            self.next = self.total + self.every  # the meter never moves back: no threshold key repeats
            self.host.dirty.add(self.id)

    def export(self) -> dict[str, Any]:
        out = {
            **super().export(),
            "last": self.last,
            "total": self.total,
            "next": self.next,
            "every": self.every,
        }
        pending = self.pending
        if pending is not None:
            out["pending"] = [pending[0].value, *pending[1:]]
        return out

    def restore(self, state: Mapping[str, Any]) -> bool:
        same = super().restore(state)
        if state.get("kind") != "counter":
            return False
        # The meter survives any edit of the rule; the next threshold only while `every` is unchanged.
        self.last = None if state.get("last") is None else _plain(state["last"])
        self.total = None if state.get("total") is None else max(_plain(state["total"]), 0)
        if same and state.get("next") is not None:
            self.next = _plain(state["next"])
        elif self.total is not None:
            self.next = (self.total // self.every + 1) * self.every
        pending = state.get("pending")
        if pending:
            kind, first, prev, agreeing, increase = pending
            self.pending = [Step(kind), _plain(first), _plain(prev), int(agreeing), _plain(increase)]
        return same

    def forecast(self, now: float) -> dict[str, Any] | None:
        return self.rate.forecast(now, self.total, self.next, unit=self.unit)

    def progress(self) -> dict[str, Any]:
        out = {
            "current": self.total,
            "every": self.every,
            "next": self.next,
            "remaining": None if self.next is None or self.total is None else self.next - self.total,
            "unit": self.unit,
        }
        if self.pending is not None:
            out["unconfirmed"] = f"{self.pending[0].value} to {num(self.pending[2])}"
        if self.ignored:
            out["glitches_ignored"] = self.ignored
        return out


KIND = TriggerKind(when=CounterWhen, runtime=CounterRuntime)
