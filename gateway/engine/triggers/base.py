"""What every trigger kind is made of: its schema (a `WhenModel`), its runtime (a `RuleRuntime`), and the
`TriggerKind` pairing them that the registry (`gateway/engine/triggers/__init__.py`) lists.

Every runtime is driven by `on_sample(sample, now)` (only for the signals it uses, through the engine's index)
and, when it has timers (`needs_tick`), by `on_tick(now)`. Both return None or a list of firings. Time is
always `now` as given by the caller (the gateway's clock); sample timestamps go into the evidence only.

The persistent part of each state is `export()`ed as JSON-able data and `restore()`d after a restart or a
reload; what is not exported (the running flag of an hours rule, the last good sample of a stale rule) is
re-learnt from the next samples, so the gateway's own downtime is never counted as machine time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from gateway.core.firings import Evidence, Firing
from gateway.core.samples import Quality, Sample
from gateway.engine.schema import Strict
from gateway.engine.triggers.cooldown import Cooldown
from gateway.engine.triggers.firing import build_firing

if TYPE_CHECKING:
    from gateway.engine.ruleview import CompiledView

log = logging.getLogger("gateway.engine")

GOOD = Quality.GOOD
Firings = list[Firing] | None


# ---------------------------------------------------------------- schema


class WhenModel(Strict):
    """The `when:` block of one trigger kind. A subclass declares its keys as fields (the key named like the
    kind is what tells the kinds apart), its cross-field checks as pydantic validators (their ValueError
    messages reach the user as FILE:LINE:COL: message), and overrides what applies below."""

    kind: ClassVar[str]  # the key that selects this kind in `when:`, e.g. "counter"
    # Models of mappings nested in `when:`, by their path inside it, e.g. {("hours",): HoursExpr}: the loader
    # names their keys in "unknown key ...; did you mean" messages.
    nested: ClassVar[Mapping[tuple[str, ...], type[BaseModel]]] = {}
    # Trigger keys of other kinds this kind's block may hold (`signal` in `{signal: x, avg: 10m}`): the
    # registry then selects this kind when both keys are present.
    carries: ClassVar[tuple[str, ...]] = ()
    # Keys of the block whose value names one signal (`counter: press1.strokes`): `check` looks each up among
    # the configured signals even when the rule's schema is wrong (lint.py).
    signal_keys: ClassVar[tuple[str, ...]] = ()

    @property
    def signals(self) -> tuple[str, ...]:
        """The signals named in the trigger (those of an expression are found by the loader)."""
        return ()

    def expression(self) -> tuple[str, tuple[str, ...]] | None:
        """The trigger's expression, if any, and its path inside `when:` (for error positions)."""
        return None

    def probe_value(self) -> Any:
        """A plausible `value` (and `threshold`) to render the task templates with at load time."""
        return 0.0

    def windows(self) -> tuple[tuple[str, float], ...]:
        """The time windows of the trigger, as (key, seconds): `check` compares them with the poll
        interval of the sources of the trigger's signals."""
        return ()

    def template_values(self) -> dict[str, Any]:
        """Extra names the task templates see (probe values at load time; the runtime's
        `template_extra()` gives the real ones at firing time)."""
        return {}


# ---------------------------------------------------------------- runtime helpers


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


NUMBER_TYPES = (int, float)


def is_number(v: object) -> bool:
    """int or float, not bool, not NaN (exact type checks: this runs for every sample)."""
    return type(v) in NUMBER_TYPES and v == v


# ---------------------------------------------------------------- runtime


class RuleRuntime:
    """The state of one rule. This base holds what every kind shares: identity, cooldown, last firing,
    the common part of the persisted state and of the status, and firing construction."""

    __slots__ = ("c", "cooldown", "host", "id", "last_fired_at")

    needs_tick = False  # True: the engine calls on_tick about once a second

    def __init__(self, compiled: CompiledView, host: Host) -> None:
        self.c = compiled
        self.id = compiled.rule.id
        self.host = host
        self.cooldown = Cooldown(compiled.rule.cooldown)
        self.last_fired_at: float | None = None

    # -- overridden by each kind
    def on_sample(self, sample: Sample, now: float) -> Firings:
        return None

    def on_tick(self, now: float) -> Firings:
        return None

    def task_closed(self, outcome: str, now: float) -> None:
        return None

    def shift(self, delta: float) -> None:
        """The wall clock stepped by `delta` seconds (engine/clockwatch.py): move every stored instant that
        a duration is measured from by `delta`, so the step counts as no time. A kind with instants of its
        own extends this (calling super)."""
        if self.cooldown.until > 0:
            self.cooldown.until += delta

    def export(self) -> dict[str, Any]:
        """The persisted state (JSON-able). A kind adds its own keys to this dict."""
        return {
            "kind": self.c.rule.kind,
            "fp": self.c.rule.trigger_fingerprint(),
            "cooldown_until": self.cooldown.until,
            "last_fired_at": self.last_fired_at,
        }

    def restore(self, state: Mapping[str, Any]) -> bool:
        """Restore the common part; returns whether the trigger-specific part applies (same trigger)."""
        self.cooldown.until = float(state.get("cooldown_until") or 0.0)
        last = state.get("last_fired_at")
        self.last_fired_at = None if last is None else float(last)
        return state.get("kind") == self.c.rule.kind and state.get("fp") == self.c.rule.trigger_fingerprint()

    def succeed(self, old: RuleRuntime) -> None:
        """After restore(old.export()) on a reload: take over what the previous runtime of the rule knew in
        memory and did not export (the engine's samples are still current on a reload, unlike a restart)."""
        return None

    def template_extra(self) -> dict[str, Any] | None:
        """Extra names for the task templates of a firing (see WhenModel.template_values)."""
        return None

    def progress(self) -> dict[str, Any] | None:
        """Status page: how far a meter is (counter, hours), or None."""
        return None

    def phase_status(self, now: float) -> dict[str, Any]:
        """Status page: {"state": ...} and the kind's details (since, fires_at...)."""
        return {"state": "idle"}

    def status(self, now: float) -> dict[str, Any]:
        rule = self.c.rule
        out: dict[str, Any] = {"id": rule.id, "name": rule.title, "trigger": rule.kind, "file": self.c.file}
        cooldown = self.cooldown
        if not rule.enabled:
            out["state"] = "disabled"
        else:
            out.update(self.phase_status(now))
            if out["state"] == "idle" and cooldown.active(now):
                out["state"] = "cooldown"
            if cooldown.active(now):
                out["until"] = cooldown.until
        out["last_fired_at"] = self.last_fired_at
        out["swallowed_by_cooldown"] = cooldown.swallowed
        progress = self.progress()
        if progress is not None:
            out["progress"] = progress
        forecast = self.forecast(now) if rule.enabled else None
        if forecast is not None:
            out["forecast"] = forecast
        return out

    def forecast(self, now: float) -> dict[str, Any] | None:
        """Meter rules (counter, hours): the next threshold and when it will be reached at the recent rate
        (forecast.RateWindow). None for the other kinds."""
        return None

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
        """Build the firing (key: rule id + `occurrence`), or None when the cooldown swallows it."""
        if not self.cooldown.admit(now):
            log.debug("rule %s: occurrence %s swallowed by the cooldown", self.id, occurrence)
            return None
        self.last_fired_at = now
        self.host.dirty.add(self.id)
        host = self.host
        return build_firing(
            self.c,
            host.values,
            host.gateway_id,
            now,
            occurrence,
            value=value,
            signal=signal,
            evidence=evidence,
            threshold=threshold,
            since=since,
            extra=self.template_extra(),
        )


@dataclass(frozen=True)
class TriggerKind:
    """One entry of the registry: the schema of a kind's `when:` block and the factory of its runtime."""

    when: type[WhenModel]
    runtime: Callable[[CompiledView, Host], RuleRuntime]

    @property
    def name(self) -> str:
        return self.when.kind
