"""The state of one rule and its transitions: one class per trigger kind.

Every runtime is driven by `on_sample(sample, now)` (only for the signals it uses, through the engine's index)
and, when it has timers, by `on_tick(now)`. Both return None or a list of firings. Time is always `now` as
given by the caller (the gateway's clock); sample timestamps go into the evidence only.

The persistent part of each state is `export()`ed as JSON-able data and `restore()`d after a restart or a
reload; what is not exported (the running flag of an hours rule, the last good sample of a stale rule) is
re-learnt from the next samples, so the gateway's own downtime is never counted as machine time.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from gateway.core.firings import Evidence, Firing, Priority, SparePart, TaskSpec
from gateway.core.samples import Quality, Sample
from gateway.engine import templates as tpl
from gateway.engine.loader import CompiledRule, base_context
from gateway.engine.model import CounterWhen, ExprWhen, HoursWhen, SignalWhen, StaleWhen

log = logging.getLogger("gateway.engine")

GOOD = Quality.GOOD
Firings = list[Firing] | None


class Phase(enum.StrEnum):
    IDLE = "idle"  # armed: the condition is false or unknown
    PENDING = "pending"  # the condition holds and has not yet held for `for`
    FIRING = "firing"  # fired (or swallowed by a cooldown); re-arms only when the reset condition holds


_IDLE = Phase.IDLE


class Host:
    """What every runtime shares with its engine: the last values, the gateway id, the dirty set."""

    __slots__ = ("dirty", "gateway_id", "values")

    def __init__(self, gateway_id: str, values: dict[str, Sample], dirty: set[str]) -> None:
        self.gateway_id = gateway_id
        self.values = values
        self.dirty = dirty


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def num(x: float) -> str:
    """50000.0 -> '50000', 0.5 -> '0.5' (for keys and messages)."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def evidence_of(sample: Sample | None, signal: str) -> Evidence:
    if sample is None:
        return Evidence(signal=signal, value=None, ts=0.0, quality="missing")
    return Evidence(signal=sample.signal, value=sample.value, ts=sample.ts, quality=str(sample.quality))


_NUMBER_TYPES = (int, float)


def _is_number(v: object) -> bool:
    """int or float, not bool, not NaN (exact type checks: this runs for every sample)."""
    return type(v) in _NUMBER_TYPES and v == v


class RuleRuntime:
    """Common part: identity, cooldown, firing construction."""

    __slots__ = ("c", "cooldown_s", "cooldown_until", "host", "id", "last_fired_at", "swallowed")

    needs_tick = False

    def __init__(self, compiled: CompiledRule, host: Host) -> None:
        self.c = compiled
        self.id = compiled.rule.id
        self.host = host
        self.cooldown_s = compiled.rule.cooldown
        self.cooldown_until = 0.0
        self.swallowed = 0  # occurrences dropped by the cooldown since start (status page)
        self.last_fired_at: float | None = None

    # -- overridden by each kind
    def on_sample(self, sample: Sample, now: float) -> Firings:
        return None

    def on_tick(self, now: float) -> Firings:
        return None

    def task_closed(self, outcome: str, now: float) -> None:
        return None

    def export(self) -> dict[str, Any]:
        return {
            "kind": self.c.rule.kind,
            "fp": self.c.rule.trigger_fingerprint(),
            "cooldown_until": self.cooldown_until,
            "last_fired_at": self.last_fired_at,
        }

    def restore(self, state: Mapping[str, Any]) -> bool:
        """Restore the common part; returns whether the trigger-specific part applies (same trigger)."""
        self.cooldown_until = float(state.get("cooldown_until") or 0.0)
        last = state.get("last_fired_at")
        self.last_fired_at = None if last is None else float(last)
        return state.get("kind") == self.c.rule.kind and state.get("fp") == self.c.rule.trigger_fingerprint()

    def progress(self) -> dict[str, Any] | None:
        return None

    def phase_status(self, now: float) -> dict[str, Any]:
        return {"state": "idle"}

    def status(self, now: float) -> dict[str, Any]:
        rule = self.c.rule
        out: dict[str, Any] = {"id": rule.id, "name": rule.title, "trigger": rule.kind, "file": self.c.file}
        if not rule.enabled:
            out["state"] = "disabled"
        else:
            out.update(self.phase_status(now))
            if out["state"] == "idle" and now < self.cooldown_until:
                out["state"] = "cooldown"
            if now < self.cooldown_until:
                out["until"] = self.cooldown_until
        out["last_fired_at"] = self.last_fired_at
        out["swallowed_by_cooldown"] = self.swallowed
        progress = self.progress()
        if progress is not None:
            out["progress"] = progress
        return out

    # -- firing
    def fire(
        self,
        now: float,
        occurrence: str,
        *,
        value: Any,
        signal: str,
        evidence: tuple[Evidence, ...],
        threshold: Any = None,
        since: float | None = None,
    ) -> Firing | None:
        """Build the firing, or None when the cooldown swallows it."""
        if now < self.cooldown_until:
            self.swallowed += 1
            log.debug("rule %s: occurrence %s swallowed by the cooldown", self.id, occurrence)
            return None
        if self.cooldown_s > 0:
            self.cooldown_until = now + self.cooldown_s
        self.last_fired_at = now
        self.host.dirty.add(self.id)
        c = self.c
        rule = c.rule
        ctx = base_context(
            rule,
            self.host.values,
            c.roots,
            c.prefixes,
            value=value,
            signal=signal,
            fired_at=now,
            threshold=threshold,
            since=since,
            evidence=[asdict(e) for e in evidence],
            gateway=self.host.gateway_id,
        )
        description = self._render(c.description, ctx, rule.task.description, "description")
        if len(description) > tpl.MAX_DESCRIPTION:
            description = description[: tpl.MAX_DESCRIPTION - 1] + "…"
        if len(description) < tpl.MIN_DESCRIPTION:
            description = description.ljust(tpl.MIN_DESCRIPTION, ".")
        title = self._render(c.title, ctx, rule.task.title or "", "title") if c.title is not None else None
        metadata = {
            key: self._render(v, ctx, str(rule.metadata[key]), f"metadata {key}") if not _is_plain(v) else v
            for key, v in c.metadata.items()
        }
        task = rule.task
        extra = dict(task.extra)
        for name in ("thing_id", "location_id"):
            if getattr(task, name) is not None:
                extra[name] = getattr(task, name)
        if title is not None:
            extra["title"] = title
        spec = TaskSpec(
            equipment=task.equipment,
            description=description,
            assignees=tuple(task.assignees),
            tags=tuple(task.tags),
            duration_s=task.duration,
            spare_parts=tuple(SparePart(p.article, p.quantity) for p in task.spare_parts),
            checklist=task.checklist,
            all_day=task.all_day,
            send_email_to_assignees=task.send_email_to_assignees,
            inherit_equipment_tags=task.inherit_equipment_tags,
            title=title,
            extra=extra,
        )
        return Firing(
            key=f"{rule.id}:{occurrence}",
            rule_id=rule.id,
            fired_at=now,
            task=spec,
            priority=Priority(rule.priority),
            evidence=evidence,
            metadata=metadata,
            while_open=rule.while_open,
            trigger=rule.kind,
        )

    def _render(self, template: Any, ctx: Mapping[str, Any], source: str, what: str) -> str:
        try:
            return tpl.render(template, ctx)
        except Exception as exc:  # a template must never lose a firing: fall back to its source text
            log.warning(
                "rule %s: the %s template failed at firing time (%s); sending it unrendered",
                self.id,
                what,
                exc,
            )
            return f"{source} [template error: {exc}]"


def _is_plain(value: Any) -> bool:
    return not hasattr(value, "render")


# ---------------------------------------------------------------- counter


class CounterRuntime(RuleRuntime):
    """`counter` + `every`.

    The rule keeps a meter, `total`: it starts at the counter's first value ever seen and grows by every
    increase. A decrease is a reset to 0 (the increase is then the new value), except with `wrap: N` when the
    counter goes from the upper half of its range to the lower half: that is a wrap-around (increase =
    new + N - previous). Thresholds are the multiples of `every` of the meter (with `rearm: on_completion`,
    the meter at the task's completion plus `every`); each threshold crossed fires once, so one sample jumping
    over two thresholds makes two firings, keyed by their thresholds.
    """

    __slots__ = ("every", "last", "next", "signal", "total", "unit", "wrap")

    def __init__(self, compiled: CompiledRule, host: Host) -> None:
        super().__init__(compiled, host)
        when = compiled.rule.when
        assert isinstance(when, CounterWhen)
        self.every = float(when.every)
        self.wrap = when.wrap_modulus
        self.signal = when.counter
        self.unit = when.unit
        self.last: float | None = None  # the counter's last raw value
        self.total: float | None = None  # the meter
        self.next: float | None = None  # the next threshold, in meter units

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
            return None
        if sample.quality is not GOOD or not _is_number(v):
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
        if outcome == "completed" and self.c.rule.when.rearm == "on_completion" and self.total is not None:  # type: ignore[union-attr]
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

    def progress(self) -> dict[str, Any]:
        return {
            "current": self.total,
            "every": self.every,
            "next": self.next,
            "remaining": None if self.next is None or self.total is None else self.next - self.total,
            "unit": self.unit,
        }


# ---------------------------------------------------------------- hours


class HoursRuntime(RuleRuntime):
    """`hours` + `every`: running time accumulated while a boolean signal (or an expression) is true.

    Time counts from a sample saying "running" to the next sample or tick; a bad sample, a missing value or
    the gateway's own downtime never count. Each multiple of `every` hours fires once.
    """

    __slots__ = ("acc_s", "ctx", "every_s", "last_t", "next_s", "on", "signal")

    needs_tick = True

    def __init__(self, compiled: CompiledRule, host: Host) -> None:
        super().__init__(compiled, host)
        when = compiled.rule.when
        assert isinstance(when, HoursWhen)
        self.every_s = float(when.every) * 3600.0
        self.signal = when.hours if isinstance(when.hours, str) else ""
        self.acc_s = 0.0
        self.next_s = self.every_s
        self.on = False
        self.last_t: float | None = None
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
        if not self.on or last is None:
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
        self.on = self._condition(sample)
        if self.last_t is None or now > self.last_t:
            self.last_t = now
        return out

    def on_tick(self, now: float) -> Firings:
        return self._advance(now)

    def task_closed(self, outcome: str, now: float) -> None:
        if outcome == "completed" and self.c.rule.when.rearm == "on_completion":  # type: ignore[union-attr]
            self._advance(now)
            self.next_s = self.acc_s + self.every_s
            self.host.dirty.add(self.id)

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
        return {"state": "running" if self.on else "idle"}

    def progress(self) -> dict[str, Any]:
        return {
            "current": round(self.acc_s / 3600.0, 3),
            "every": self.every_s / 3600.0,
            "next": self.next_s / 3600.0,
            "unit": "h",
        }


# ---------------------------------------------------------------- signal and expr


class LatchedRuntime(RuleRuntime):
    """The explicit machine of condition rules (signal, expr):

    IDLE --condition true--> PENDING (since = now) --held for `for`--> fire, FIRING
    PENDING --condition false or unknown (bad/missing sample)--> IDLE   (`for` means continuously)
    FIRING --reset condition (condition false; with hysteresis: past reset_below/reset_above)--> IDLE
    FIRING --unknown (bad sample, link down)--> FIRING                  (a link drop is not a re-arm)
    Without `for`, IDLE goes straight to FIRING. The firing key is the rule id + the time the condition began.
    """

    __slots__ = ("for_s", "needs_tick", "phase", "since", "start_evidence")

    def __init__(self, compiled: CompiledRule, host: Host, for_s: float) -> None:
        super().__init__(compiled, host)
        self.for_s = for_s
        self.needs_tick = for_s > 0
        self.phase = Phase.IDLE
        self.since: float | None = None
        self.start_evidence: tuple[Evidence, ...] = ()

    def evidence(self) -> tuple[Evidence, ...]:
        raise NotImplementedError

    def value(self) -> Any:
        raise NotImplementedError

    def step(self, cond: bool | None, reset: bool, now: float) -> Firings:
        """Apply one evaluation: cond True/False/None (unknown); reset: the re-arm condition holds."""
        phase = self.phase
        if phase is Phase.IDLE:
            if not cond:
                return None
            self.since = now
            self.start_evidence = self.evidence()
            if self.for_s <= 0:
                return self._fire(now)
            self.phase = Phase.PENDING
            self.host.dirty.add(self.id)
            return None
        if phase is Phase.PENDING:
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

    def signal_name(self) -> str:
        return ""

    def threshold(self) -> Any:
        return None

    def on_tick(self, now: float) -> Firings:
        if self.phase is Phase.PENDING:
            return self._check_for(now)
        return None

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
        return same

    def phase_status(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"state": str(self.phase)}
        if self.phase is Phase.PENDING and self.since is not None:
            out["since"] = self.since
            out["fires_at"] = self.since + self.for_s
        elif self.phase is Phase.FIRING and self.since is not None:
            out["since"] = self.since
        return out


class SignalRuntime(LatchedRuntime):
    __slots__ = ("cond", "limit", "mask", "reset", "signal")

    def __init__(self, compiled: CompiledRule, host: Host) -> None:
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
        for v in (when.above, when.below, when.equals, when.in_, when.bit):
            if v is not None:
                return v
        return None


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
    """(condition, reset) as functions of a good value; the condition returns None when it cannot apply."""
    if when.above is not None:
        above = when.above
        rb = when.reset_below

        def cond_above(v: Any) -> bool | None:
            return v > above if type(v) in _NUMBER_TYPES else None  # NaN > x is False: never fires

        return cond_above, (lambda v: v < rb) if rb is not None else (lambda v: not v > above)
    if when.below is not None:
        below = when.below
        ra = when.reset_above

        def cond_below(v: Any) -> bool | None:
            return v < below if type(v) in _NUMBER_TYPES else None

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


def evaluate_expr(
    c: CompiledRule, values: Mapping[str, Sample], ctx: Mapping[str, Any] | None
) -> bool | None:
    """True/False, or None (unknown) when a referenced signal is missing or bad, or evaluation fails."""
    assert c.expr is not None and ctx is not None
    for name in c.expr.refs.signals:
        sample = values.get(name)
        if sample is None or sample.quality is not GOOD:
            return None
    try:
        if c.expr.fast is not None:
            return bool(c.expr.fast(values))
        return bool(c.expr.evaluate(ctx))
    except Exception as exc:  # a sandboxed expression may raise anything on odd values: unknown, not a crash
        log.debug("rule %s: expression failed: %s", c.rule.id, exc)
        return None


def expr_evidence(c: CompiledRule, values: Mapping[str, Sample]) -> tuple[Evidence, ...]:
    assert c.expr is not None
    return tuple(evidence_of(values.get(name), name) for name in c.expr.refs.signals)


class ExprRuntime(LatchedRuntime):
    __slots__ = ("ctx",)

    def __init__(self, compiled: CompiledRule, host: Host) -> None:
        when = compiled.rule.when
        assert isinstance(when, ExprWhen)
        super().__init__(compiled, host, when.for_)
        self.ctx = tpl.signal_context(host.values, compiled.roots, compiled.prefixes)

    def on_sample(self, sample: Sample, now: float) -> Firings:
        cond = evaluate_expr(self.c, self.host.values, self.ctx)
        return self.step(cond, cond is False, now)

    def evidence(self) -> tuple[Evidence, ...]:
        return expr_evidence(self.c, self.host.values)

    def value(self) -> Any:
        return True


# ---------------------------------------------------------------- stale


class StaleRuntime(RuleRuntime):
    """`stale` + `for`: no good sample for `for`, counted from the last good sample, or from the engine's
    start when none was seen since (the gateway's own downtime is not the machine's silence). Fires once, then
    re-arms on the next good sample. Bad samples do not reset the timer: they are not good samples."""

    __slots__ = ("for_s", "last_good", "phase", "signal", "started")

    needs_tick = True

    def __init__(self, compiled: CompiledRule, host: Host) -> None:
        super().__init__(compiled, host)
        when = compiled.rule.when
        assert isinstance(when, StaleWhen)
        self.signal = when.stale
        self.for_s = when.for_
        self.phase = Phase.IDLE
        self.last_good: float | None = None
        self.started: float | None = None

    def on_sample(self, sample: Sample, now: float) -> Firings:
        if self.started is None:
            self.started = now
        if sample.quality is GOOD:
            self.last_good = now
            if self.phase is Phase.FIRING:
                self.phase = Phase.IDLE
                self.host.dirty.add(self.id)
            return None
        return self.on_tick(now)

    def on_tick(self, now: float) -> Firings:
        if self.started is None:
            self.started = now
        if self.phase is not Phase.IDLE:
            return None
        ref = self.last_good if self.last_good is not None else self.started
        if now - ref < self.for_s:
            return None
        self.phase = Phase.FIRING
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

    def export(self) -> dict[str, Any]:
        return {**super().export(), "phase": str(self.phase)}

    def restore(self, state: Mapping[str, Any]) -> bool:
        same = super().restore(state)
        if same:
            self.phase = Phase.FIRING if state.get("phase") == "firing" else Phase.IDLE
        return same

    def phase_status(self, now: float) -> dict[str, Any]:
        if self.phase is Phase.FIRING:
            return {"state": "firing"}
        ref = self.last_good if self.last_good is not None else self.started
        out: dict[str, Any] = {"state": "idle"}
        if ref is not None:
            out["silent_for"] = max(0.0, now - ref)
            out["fires_at"] = ref + self.for_s
        return out


def _signal_runtime(compiled: CompiledRule, host: Host) -> RuleRuntime:
    when = compiled.rule.when
    assert isinstance(when, SignalWhen)
    if when.above is not None:
        return AboveRuntime(compiled, host)
    if when.below is not None:
        return BelowRuntime(compiled, host)
    if when.bit is not None:
        return BitRuntime(compiled, host)
    return SignalRuntime(compiled, host)


def make_runtime(compiled: CompiledRule, host: Host) -> RuleRuntime:
    kinds: dict[str, Callable[[CompiledRule, Host], RuleRuntime]] = {
        "counter": CounterRuntime,
        "hours": HoursRuntime,
        "signal": _signal_runtime,
        "expr": ExprRuntime,
        "stale": StaleRuntime,
    }
    return kinds[compiled.rule.kind](compiled, host)
