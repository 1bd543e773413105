"""`count:` triggers: rising edges of a boolean (or of one `bit:` of a word) within a sliding window.

when: {count: press1.jam, within: 1h, at_least: 3}
when: {count: press1.faults, bit: 4, within: 8h, at_least: 5}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field, model_validator

from gateway.core.durations import format_duration
from gateway.core.samples import Sample
from gateway.engine.schema import Duration, SignalName
from gateway.engine.triggers.base import (
    GOOD,
    Firings,
    Host,
    RuleRuntime,
    TriggerKind,
    WhenModel,
    evidence_of,
    iso,
)
from gateway.engine.triggers.latch import Phase
from gateway.engine.triggers.window import Edges
from gateway.engine.triggers.windowed import seconds

if TYPE_CHECKING:
    from gateway.engine.ruleview import CompiledView


class CountWhen(WhenModel):
    """At least `at_least` rising edges of `count` (or of its bit `bit`) in the last `within`."""

    kind: ClassVar[str] = "count"
    signal_keys: ClassVar[tuple[str, ...]] = ("count",)
    count: SignalName
    bit: Annotated[int, Field(strict=True, ge=0, le=63)] | None = None
    within: Duration
    at_least: Annotated[int, Field(strict=True, ge=1)]

    @model_validator(mode="after")
    def _checks(self) -> CountWhen:
        if self.within <= 0:
            raise ValueError("within: the window must be longer than 0s")
        return self

    @property
    def signals(self) -> tuple[str, ...]:
        return (self.count,)

    def probe_value(self) -> Any:
        return self.at_least

    def windows(self) -> tuple[tuple[str, float], ...]:
        return (("within", self.within),)

    def template_values(self) -> dict[str, Any]:
        return {"window": seconds(self.within)}


class CountRuntime(RuleRuntime):
    """The count machine:

    IDLE --count of edges in (now - W, now] reaches at_least--> fire, FIRING (since = now)
    FIRING --count below at_least (edges leave the window)--> IDLE
    Evaluated at every sample of the signal and at every tick. An edge is a good sample whose (bit) value is
    true while the last good value before it was false: a bad sample is not an edge and does not forget the
    last good value, nor does a restart (`last` is persisted); the first sample ever is not an edge.
    The key is the rule id + the time the count reached at_least. Persisted: phase, since, last, the edges.
    """

    __slots__ = ("at_least", "edges", "evaluated", "last", "mask", "phase", "signal", "since", "win")

    needs_tick = True

    def __init__(self, compiled: CompiledView, host: Host) -> None:
        super().__init__(compiled, host)
        when = compiled.rule.when
        assert isinstance(when, CountWhen)
        self.signal = when.count
        self.mask = None if when.bit is None else 1 << when.bit
        self.at_least = when.at_least
        self.win = when.within
        self.edges = Edges(when.within)
        self.last: bool | None = None  # the last good value (of the bit)
        self.phase = Phase.IDLE
        self.since: float | None = None
        self.evaluated: float | None = None  # a tick at the time of the last evaluation changes nothing

    def truth(self, sample: Sample) -> bool | None:
        if sample.quality is not GOOD:
            return None
        v = sample.value
        mask = self.mask
        if mask is None:
            if type(v) is bool:
                return v
            if (type(v) is int or type(v) is float) and v == v:
                return v != 0
            return None
        if type(v) is int:
            return bool(v & mask)
        if type(v) is float and v.is_integer():
            return bool(int(v) & mask)
        return None

    def on_sample(self, sample: Sample, now: float) -> Firings:
        b = self.truth(sample)
        if b is not None:
            if b and self.last is False:
                self.edges.add(now)
                self.host.dirty.add(self.id)
            if b is not self.last:
                self.last = b
                self.host.dirty.add(self.id)
        self.evaluated = now
        return self.evaluate(now, sample)

    def on_tick(self, now: float) -> Firings:
        if now == self.evaluated:
            return None
        self.evaluated = now
        return self.evaluate(now, None)

    def evaluate(self, now: float, sample: Sample | None) -> Firings:
        before = len(self.edges)
        n = self.edges.in_window(now)
        if len(self.edges) != before:
            self.host.dirty.add(self.id)
        if self.phase is Phase.IDLE:
            if n < self.at_least:
                return None
            self.phase = Phase.FIRING
            self.since = now
            self.host.dirty.add(self.id)
            last = sample if sample is not None else self.host.values.get(self.signal)
            firing = self.fire(
                now,
                iso(now),
                value=n,
                signal=self.signal,
                evidence=(evidence_of(last, self.signal),),
                threshold=self.at_least,
                since=now,
            )
            return [firing] if firing is not None else None
        if n < self.at_least:
            self.phase = Phase.IDLE
            self.since = None
            self.host.dirty.add(self.id)
        return None

    def shift(self, delta: float) -> None:
        super().shift(delta)
        self.edges.shift(delta)
        if self.evaluated is not None:
            self.evaluated += delta

    def template_extra(self) -> dict[str, Any] | None:
        return {"window": seconds(self.win)}

    def export(self) -> dict[str, Any]:
        return {
            **super().export(),
            "phase": str(self.phase),
            "since": self.since,
            "last": self.last,
            **self.edges.export(),
        }

    def restore(self, state: Mapping[str, Any]) -> bool:
        same = super().restore(state)
        if same:
            phase = Phase(state.get("phase", "idle"))
            self.phase = Phase.FIRING if phase is Phase.FIRING else Phase.IDLE
            since = state.get("since")
            self.since = None if since is None else float(since)
            last = state.get("last")
            if last is not None and not isinstance(last, bool):
                raise ValueError("last: not a boolean")
            self.last = last
            self.edges.restore(dict(state))
        return same

    def phase_status(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"state": str(self.phase)}
        if self.since is not None:
            out["since"] = self.since
        out["events"] = self.edges.in_window(now)
        out["window"] = seconds(self.win)
        oldest = self.edges.oldest()
        if oldest is not None:
            out["next_expiry"] = oldest + self.win
        return out

    def progress(self) -> dict[str, Any] | None:
        return {
            "current": self.edges.count,
            "target": self.at_least,
            "unit": f"events in {format_duration(self.win)}",
        }


KIND = TriggerKind(when=CountWhen, runtime=CountRuntime)
