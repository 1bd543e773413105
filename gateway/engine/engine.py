"""The engine: a pure, synchronous core from samples and ticks to firings.

    engine = Engine(ruleset, gateway_id="press-line-1", state=store_state)
    firings = engine.process(sample, now)     # for every sample
    firings += engine.tick(now)               # about once a second: `for` timers, hours, stale rules
    store.save(firings, engine.take_dirty_state())   # in one transaction

No clock reads, no I/O: time comes in as `now`. Rules are indexed by signal, so a sample only touches the
rules that use it. `reload()` swaps the rule set; a rule with the same id and content keeps its runtime
(a `for` timer in progress is not reset by editing another rule), a changed rule restarts from the exported
state of its predecessor (a counter keeps its meter when its description changes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.core.firings import Firing
from gateway.core.samples import Sample
from gateway.engine.admit import FLOAT_MAX, INT_MAX, INT_MIN, Door
from gateway.engine.clockwatch import ClockWatch
from gateway.engine.loader import RuleSet
from gateway.engine.triggers import Host, RuleRuntime, make_runtime

log = logging.getLogger("gateway.engine")


class Route:
    """Where the samples of one signal go: the runtimes of the enabled rules it drives (`one` when there is a
    single one, the usual case: no loop), and how many samples reached them (`evaluations()`). One object per
    signal, so the hot loop touches one small object per sample instead of a tuple, bound methods and a
    separate counter (the engine's cost is mostly memory reads, see docs/performance.md)."""

    __slots__ = ("one", "runtimes", "samples")

    def __init__(self, runtimes: tuple[RuleRuntime, ...], samples: int) -> None:
        self.runtimes = runtimes
        self.one = runtimes[0] if len(runtimes) == 1 else None
        self.samples = samples


class Engine:
    def __init__(
        self,
        ruleset: RuleSet,
        *,
        gateway_id: str,
        state: Mapping[str, Any] | None = None,
        values: dict[str, Sample] | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        # `values`: the backtest passes a dict that looks up the signals no rule is driven by on demand
        self.last_values: dict[str, Sample] = {} if values is None else values
        self._dirty: set[str] = set()
        self._host = Host(gateway_id, self.last_values, self._dirty)
        self._runtimes: dict[str, RuleRuntime] = {}
        self._index: dict[str, Route] = {}
        self._retired: dict[str, int] = {}  # the counts of signals no enabled rule reads any more (a reload)
        self._timed: tuple[RuleRuntime, ...] = ()
        self._ticks = 0
        self.door = Door()  # the values the engine refuses (admit.py)
        self.clock = ClockWatch()  # wall-clock steps, absorbed by every rule's timers (clockwatch.py)
        self.ruleset = ruleset
        self._install(ruleset, previous={}, state=state or {})

    # ------------------------------------------------------------ rules

    def _install(
        self, ruleset: RuleSet, *, previous: Mapping[str, RuleRuntime], state: Mapping[str, Any]
    ) -> None:
        runtimes: dict[str, RuleRuntime] = {}
        for rule in ruleset.rules:
            compiled = ruleset.compiled[rule.id]
            old = previous.get(rule.id)
            if old is not None and old.c.rule == rule:
                old.c = compiled  # same content: keep the runtime and its in-memory state
                runtimes[rule.id] = old
                continue
            runtime = make_runtime(compiled, self._host)
            saved = old.export() if old is not None else state.get(rule.id)
            if saved:
                try:
                    runtime.restore(saved)
                    if old is not None:
                        runtime.succeed(old)
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    log.warning("rule %s: saved state ignored (%s); starting afresh", rule.id, exc)
                    runtime = make_runtime(compiled, self._host)
                if old is not None:
                    self._dirty.add(rule.id)
            runtimes[rule.id] = runtime
        index: dict[str, list[RuleRuntime]] = {}
        timed: list[RuleRuntime] = []
        for runtime in runtimes.values():
            if not runtime.c.rule.enabled:
                continue
            for signal in runtime.c.trigger_signals:
                index.setdefault(signal, []).append(runtime)
            if runtime.needs_tick:
                timed.append(runtime)
        self._runtimes = runtimes
        counted = self._counted()  # per signal: samples that reached a rule since start, kept over a reload
        self._index = {signal: Route(tuple(rts), counted.pop(signal, 0)) for signal, rts in index.items()}
        self._retired = counted
        self._timed = tuple(timed)
        self.ruleset = ruleset

    def reload(self, ruleset: RuleSet) -> None:
        """Swap in a new, already validated rule set."""
        previous = self._runtimes
        self._install(ruleset, previous=previous, state={})
        removed = set(previous) - set(self._runtimes)
        self._dirty -= removed
        changed = sum(1 for rid, rt in self._runtimes.items() if previous.get(rid) is not rt)
        log.info(
            "rules reloaded: %d rules (%d new or changed, %d removed)",
            len(self._runtimes),
            changed,
            len(removed),
        )

    # ------------------------------------------------------------ evaluation

    def process(self, sample: Sample, now: float, mono: float | None = None) -> list[Firing]:
        """Feed one sample. Pure: the result depends only on the state, the sample and `now`.

        `mono` (optional): a monotonic reading taken with `now`; with it, steps of the wall clock are told
        from real time (see clockwatch.py); without it only steps back are."""
        return self.process_batch((sample,), now, mono)

    def process_batch(self, samples: Iterable[Sample], now: float, mono: float | None = None) -> list[Firing]:
        """Feed many samples at once, in order: the same as calling process() for each (process() is this with
        one sample), without a method call per sample (most samples touch no rule: the gateway's hot path)."""
        if self.clock.step(now, mono):
            self._shift(self.clock.last_shift)
        last_values = self.last_values
        route_of = self._index.get
        door = self.door
        door.now = now
        check = door.check
        fmax, nfmax, imin, imax = FLOAT_MAX, -FLOAT_MAX, INT_MIN, INT_MAX
        out: list[Firing] = []
        for sample in samples:
            signal = sample.signal
            route = route_of(signal)
            if route is None:  # no rule reads it: kept as received (templates, status page)
                last_values[signal] = sample
                continue
            # The door (admit.py), inlined for numbers in range; anything else goes through Door.check.
            v = sample.value
            tv = type(v)
            if tv is float:
                if not nfmax <= v <= fmax:  # type: ignore[operator]
                    sample = check(sample)
            elif tv is not int or not imin <= v <= imax:  # type: ignore[operator]
                sample = check(sample)
            last_values[signal] = sample
            if sample.retained:  # a last known value, not an observation: no trigger
                continue
            route.samples += 1
            runtime = route.one
            if runtime is not None:
                fired = runtime.on_sample(sample, now)
                if fired:
                    out.extend(fired)
                continue
            for runtime in route.runtimes:
                fired = runtime.on_sample(sample, now)
                if fired:
                    out.extend(fired)
        return out

    def tick(self, now: float, mono: float | None = None) -> list[Firing]:
        """Advance timers: `for` conditions maturing, running hours, stale signals."""
        if self.clock.step(now, mono):
            self._shift(self.clock.last_shift)
        self._ticks += 1
        out: list[Firing] = []
        for runtime in self._timed:
            fired = runtime.on_tick(now)
            if fired:
                out.extend(fired)
        return out

    def _shift(self, delta: float) -> None:
        """The wall clock stepped by `delta` seconds: every rule moves its timers with it, so no duration
        (hours, `for`, stale, cooldown) gains or loses the step."""
        for runtime in self._runtimes.values():
            runtime.shift(delta)

    def refused(self) -> dict[str, int]:
        """Per signal: samples whose value the engine refused since start (admit.py)."""
        return dict(self.door.refused)

    @property
    def needs_tick(self) -> bool:
        """Whether tick() can do anything (some enabled rule has timers, hours or stale signals)."""
        return bool(self._timed)

    def evaluations(self) -> dict[str, int]:
        """Per enabled rule: the samples of its signals and the ticks it was evaluated on since start."""
        counts = self._counted()
        return {
            rid: sum(counts.get(s, 0) for s in rt.c.trigger_signals) + (self._ticks if rt.needs_tick else 0)
            for rid, rt in self._runtimes.items()
            if rt.c.rule.enabled
        }

    def _counted(self) -> dict[str, int]:
        """Per signal: the samples that reached at least one rule since start."""
        return {**self._retired, **{signal: route.samples for signal, route in self._index.items()}}

    def task_closed(self, rule_id: str, outcome: str, now: float) -> None:
        """A task from this rule was completed or canceled (per the CMMS webhooks): `rearm: on_completion`."""
        runtime = self._runtimes.get(rule_id)
        if runtime is not None:
            runtime.task_closed(outcome, now)

    # ------------------------------------------------------------ state

    def take_dirty_state(self) -> dict[str, Any]:
        """The persistent state of every rule changed since the last call (rule id -> JSON-able state)."""
        out = {rid: self._runtimes[rid].export() for rid in self._dirty if rid in self._runtimes}
        self._dirty.clear()
        return out

    def mark_dirty(self, rule_ids: Iterable[str]) -> None:
        """These rules' state was taken but not saved (the write failed): take it again with the next call."""
        self._dirty.update(rid for rid in rule_ids if rid in self._runtimes)

    def export_state(self) -> dict[str, Any]:
        return {rid: runtime.export() for rid, runtime in self._runtimes.items()}

    def rule_status(self, now: float) -> list[dict[str, Any]]:
        """One entry per rule for the status page: id, name, trigger, state, progress..."""
        return [runtime.status(now) for runtime in self._runtimes.values()]

    @property
    def rule_ids(self) -> list[str]:
        return list(self._runtimes)
