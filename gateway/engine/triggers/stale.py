"""`stale:` triggers: no good sample of a signal for `for`: a machine or a link is down.

when: {stale: pump7.flow, for: 10m}
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from gateway.core.samples import Sample
from gateway.engine.schema import PositiveDuration, SignalName
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

if TYPE_CHECKING:
    from gateway.engine.ruleview import CompiledView


class StaleWhen(WhenModel):
    """No good sample of a signal for `for`: a machine or a link is down."""

    kind: ClassVar[str] = "stale"
    signal_keys: ClassVar[tuple[str, ...]] = ("stale",)
    stale: SignalName
    for_: PositiveDuration = Field(alias="for")

    @property
    def signals(self) -> tuple[str, ...]:
        return (self.stale,)


class Watch(enum.StrEnum):
    """The phases of a stale rule. The values are persisted (`phase` in the rule state) and shown on the
    status page: do not rename them."""

    WATCHING = "idle"  # armed: waiting for `for` to pass without a good sample
    FIRED = "firing"  # fired (or swallowed by a cooldown); re-arms on the next good sample


class StaleRuntime(RuleRuntime):
    """`stale` + `for`: no good sample for `for`, counted from the last good sample, or from the engine's
    start when none was seen since (the gateway's own downtime is not the machine's silence). Fires once, then
    re-arms on the next good sample. Bad samples do not reset the timer: they are not good samples.
    The key is the rule id + the time of the last good sample (or of the start). Persisted: phase."""

    __slots__ = ("for_s", "last_good", "phase", "signal", "started")

    needs_tick = True

    def __init__(self, compiled: CompiledView, host: Host) -> None:
        super().__init__(compiled, host)
        when = compiled.rule.when
        assert isinstance(when, StaleWhen)
        self.signal = when.stale
        self.for_s = when.for_
        self.phase = Watch.WATCHING
        self.last_good: float | None = None
        self.started: float | None = None

    def on_sample(self, sample: Sample, now: float) -> Firings:
        if self.started is None:
            self.started = now
        if sample.quality is GOOD:
            self.last_good = now
            if self.phase is Watch.FIRED:
                self.phase = Watch.WATCHING
                self.host.dirty.add(self.id)
            return None
        return self.on_tick(now)

    def on_tick(self, now: float) -> Firings:
        if self.started is None:
            self.started = now
        if self.phase is not Watch.WATCHING:
            return None
        ref = self.last_good if self.last_good is not None else self.started
        if now - ref < self.for_s:
            return None
        self.phase = Watch.FIRED
        self.host.dirty.add(self.id)
        last = self.host.values.get(self.signal)
        firing = self.fire(
            now,
            iso(ref),
            value=None if last is None else last.value,
            signal=self.signal,
            evidence=(evidence_of(last, self.signal),),
            since=ref,
        )
        return [firing] if firing is not None else None

    def shift(self, delta: float) -> None:
        super().shift(delta)
        if self.last_good is not None:
            self.last_good += delta
        if self.started is not None:
            self.started += delta

    def export(self) -> dict[str, Any]:
        return {**super().export(), "phase": str(self.phase)}

    def restore(self, state: Mapping[str, Any]) -> bool:
        same = super().restore(state)
        if same:
            self.phase = Watch.FIRED if state.get("phase") == Watch.FIRED.value else Watch.WATCHING
        return same

    def phase_status(self, now: float) -> dict[str, Any]:
        if self.phase is Watch.FIRED:
            return {"state": str(Watch.FIRED)}
        ref = self.last_good if self.last_good is not None else self.started
        out: dict[str, Any] = {"state": str(Watch.WATCHING)}
        if ref is not None:
            out["silent_for"] = max(0.0, now - ref)
            out["fires_at"] = ref + self.for_s
        return out


KIND = TriggerKind(when=StaleWhen, runtime=StaleRuntime)
