"""The condition machine shared by condition triggers (signal, expr): a condition that must hold for `for`,
fires once, and re-arms only when a reset condition holds (the plain negation, or a hysteresis band)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.core.firings import Evidence
from gateway.engine.triggers.base import Firings, Host, RuleRuntime, iso

if TYPE_CHECKING:
    from gateway.engine.ruleview import CompiledView


def check_hysteresis(
    above: float | None, below: float | None, reset_above: float | None, reset_below: float | None
) -> None:
    """The re-arm thresholds of a condition trigger (signal, avg/min/max): each goes with its side and lies on
    the re-arming side of it. ValueError, in the rule author's words, otherwise."""
    if reset_below is not None:
        if above is None:
            raise ValueError("reset_below goes with above (re-arm once the value is back under it)")
        if reset_below > above:
            raise ValueError(f"reset_below ({reset_below:g}) must not be over above ({above:g})")
    if reset_above is not None:
        if below is None:
            raise ValueError("reset_above goes with below (re-arm once the value is back over it)")
        if reset_above < below:
            raise ValueError(f"reset_above ({reset_above:g}) must not be under below ({below:g})")


class Phase(enum.StrEnum):
    """The phases of a latched condition. The values are persisted (`phase` in the rule state) and shown on
    the status page: do not rename them."""

    IDLE = "idle"  # armed: the condition is false or unknown
    PENDING = "pending"  # the condition holds and has not yet held for `for`
    FIRING = "firing"  # fired (or swallowed by a cooldown); re-arms only when the reset condition holds


class LatchedRuntime(RuleRuntime):
    """The explicit machine of condition rules (signal, expr):

    IDLE --condition true--> PENDING (since = now) --held for `for`--> fire, FIRING
    PENDING --condition false or unknown (bad/missing sample)--> IDLE   (`for` means continuously)
    FIRING --reset condition (condition false; with hysteresis: past reset_below/reset_above)--> IDLE
    FIRING --unknown (bad sample, link down)--> FIRING                  (a link drop is not a re-arm)
    Without `for`, IDLE goes straight to FIRING. The firing key is the rule id + the time the condition began.

    A PENDING phase restored from saved state (after a restart, or a reload that changed the rule) is
    `unconfirmed`: the samples that made it pending belong to the past, so the timer does not fire on ticks
    until a fresh evaluation says the condition still holds (then it fires at once if `for` has elapsed
    since the original start, keeping that start in its key); a fresh false or unknown ends it.

    A subclass feeds `step()` from its on_sample and says what a firing carries (evidence, value,
    signal_name, threshold).
    """

    __slots__ = ("for_s", "last_start", "needs_tick", "phase", "since", "start_evidence", "unconfirmed")

    def __init__(self, compiled: CompiledView, host: Host, for_s: float) -> None:
        super().__init__(compiled, host)
        self.for_s = for_s
        self.needs_tick = for_s > 0
        self.phase = Phase.IDLE
        self.since: float | None = None
        self.start_evidence: tuple[Evidence, ...] = ()
        self.unconfirmed = False  # a restored PENDING waiting for a fresh sample that confirms the condition
        self.last_start: float | None = None  # the start of the last episode (its key's time)

    def evidence(self) -> tuple[Evidence, ...]:
        raise NotImplementedError

    def value(self) -> Any:
        raise NotImplementedError

    def signal_name(self) -> str:
        return ""

    def threshold(self) -> Any:
        return None

    def step(self, cond: bool | None, reset: bool, now: float) -> Firings:
        """Apply one evaluation: cond True/False/None (unknown); reset: the re-arm condition holds."""
        phase = self.phase
        if phase is Phase.IDLE:
            if not cond:
                return None
            start = now
            last = self.last_start
            if last is not None and now - 1.0 < last and iso(now) <= iso(last):
                # Another episode within the same millisecond as the last (a burst of samples processed at
                # one `now`): its key would repeat the last one's and the store would drop it as a
                # duplicate. It starts 1 ms after the last one instead.
                start = last + 0.001
                while iso(start) <= iso(last):
                    start += 0.0005
            self.since = self.last_start = start
            self.start_evidence = self.evidence()
            if self.for_s <= 0:
                return self._fire(now)
            self.phase = Phase.PENDING
            self.host.dirty.add(self.id)
            return None
        if phase is Phase.PENDING:
            self.unconfirmed = False
            if not cond:
                self.phase = Phase.IDLE
                self.since = None
                self.host.dirty.add(self.id)
                return None
            return self._check_for(now)
        if cond is not None and reset:
            self.phase = Phase.IDLE
            self.since = None
            self.host.dirty.add(self.id)
        return None

    def _check_for(self, now: float) -> Firings:
        assert self.since is not None
        if now - self.since >= self.for_s:
            return self._fire(now)
        return None

    def _fire(self, now: float) -> Firings:
        since = self.since if self.since is not None else now
        self.phase = Phase.FIRING
        self.host.dirty.add(self.id)
        latest = self.evidence()
        evidence = self.start_evidence + tuple(e for e in latest if e not in self.start_evidence)
        firing = self.fire(
            now,
            iso(since),
            value=self.value(),
            signal=self.signal_name(),
            evidence=evidence,
            since=since,
            threshold=self.threshold(),
        )
        return [firing] if firing is not None else None

    def on_tick(self, now: float) -> Firings:
        if self.phase is Phase.PENDING and not self.unconfirmed:
            return self._check_for(now)
        return None

    def shift(self, delta: float) -> None:
        super().shift(delta)
        if self.phase is Phase.PENDING and self.since is not None:
            self.since += delta

    def export(self) -> dict[str, Any]:
        return {**super().export(), "phase": str(self.phase), "since": self.since}

    def restore(self, state: Mapping[str, Any]) -> bool:
        same = super().restore(state)
        if same:
            self.phase = Phase(state.get("phase", "idle"))
            since = state.get("since")
            self.since = None if since is None else float(since)
            if self.phase is Phase.PENDING and self.since is None:
                self.phase = Phase.IDLE
            self.unconfirmed = self.phase is Phase.PENDING
        return same

    def succeed(self, old: RuleRuntime) -> None:
        if isinstance(old, LatchedRuntime) and self.phase is Phase.PENDING:
            self.unconfirmed = old.unconfirmed  # a reload: the samples that made it pending are current

    def phase_status(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"state": str(self.phase)}
        if self.phase is Phase.PENDING and self.since is not None:
            out["since"] = self.since
            out["fires_at"] = self.since + self.for_s
            if self.unconfirmed:
                out["awaiting"] = "a fresh sample confirming the condition (restored after a restart)"
        elif self.phase is Phase.FIRING and self.since is not None:
            out["since"] = self.since
        return out
