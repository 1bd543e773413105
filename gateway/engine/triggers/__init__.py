"""The registry of trigger kinds: the one list the schema (`when:`), the loader and the engine read.

Each kind is one module of this package holding both halves of the kind:

- the schema: a `WhenModel` subclass, the pydantic model of its `when:` block. `kind` (a ClassVar) is the key
  that selects it (`when: {counter: ...}`); cross-field checks are pydantic validators raising ValueError
  with a message for the user (the loader adds FILE:LINE:COL). Override `signals` (the signals named in the
  trigger: the engine routes their samples to the rule), `expression()` (if the kind takes an expression;
  the loader compiles it and adds its signals), `probe_value()` (a plausible `value` for the load-time
  template check) and `nested` (models of mappings nested in the block, for "did you mean" hints).
- the runtime: a `RuleRuntime` subclass (base.py) built from the compiled rule and the engine's `Host`:
  `on_sample(sample, now)` for the samples of its signals, `on_tick(now)` when `needs_tick`, each returning
  None or a list of firings made with `self.fire(now, occurrence, ...)` (the firing key is
  `rule id:occurrence`; the cooldown is applied there); `export()` / `restore()` for the persisted state
  (JSON-able; add keys to the base's dict, restore them only when the base's `restore` says the trigger is
  the same); `phase_status(now)` and `progress()` for the status page; `task_closed` for
  `rearm: on_completion`; `shift(delta)` when the runtime stores instants durations are measured from (the
  wall clock stepped: move them by `delta`, see engine/clockwatch.py); `succeed(old)` for in-memory knowledge
  a reload keeps. No I/O and no clock reads: time is always the `now` argument. State machines are
  enums (see latch.Phase); the `for` / re-arm machine of condition triggers is latch.LatchedRuntime.
- `KIND = TriggerKind(when=..., runtime=...)` at the end of the module.

A kind whose block also holds another kind's key (`{signal: x, avg: 10m}`) lists that key in its `carries`.
The windowed kinds (avg, min, max, change, count) share their sliding windows (window.py) and runtimes
(windowed.py).

Adding a kind: write `gateway/engine/triggers/<kind>.py` as above, add its `KIND` to `_KINDS` below (the
order is the order in error messages), write `tests/engine/test_<kind>.py`, document it in docs/rules.md.
Nothing else names the kinds: model.py, loader.py and engine.py work from this registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, TypeAlias, Union

from pydantic import BaseModel, Discriminator, Tag

from gateway.engine.triggers import avg, change, count, counter, expr, hours, signal, stale
from gateway.engine.triggers import max as max_
from gateway.engine.triggers import min as min_
from gateway.engine.triggers.base import Host, RuleRuntime, TriggerKind, WhenModel

if TYPE_CHECKING:
    from gateway.engine.loader import CompiledRule

_KINDS: tuple[TriggerKind, ...] = (
    counter.KIND,
    hours.KIND,
    signal.KIND,
    expr.KIND,
    stale.KIND,
    avg.KIND,
    min_.KIND,
    max_.KIND,
    change.KIND,
    count.KIND,
)

KINDS: dict[str, TriggerKind] = {k.name: k for k in _KINDS}
TRIGGER_KINDS: tuple[str, ...] = tuple(KINDS)
WHEN_MODELS: dict[str, type[WhenModel]] = {name: k.when for name, k in KINDS.items()}


def when_kind(value: Any) -> str | None:
    """The discriminator of `when:`: the one trigger key present, or the kind that carries the others
    (`{signal: x, avg: 10m}` is an `avg` trigger: see WhenModel.carries)."""
    if isinstance(value, BaseModel):
        return str(getattr(value, "kind", None))
    if isinstance(value, dict):
        keys = [k for k in TRIGGER_KINDS if k in value]
        if len(keys) > 1:
            keys = [k for k in keys if all(o == k or o in WHEN_MODELS[k].carries for o in keys)]
        return keys[0] if keys else None
    return None


def _one_of(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _when_type() -> Any:
    members = tuple(Annotated[model, Tag(name)] for name, model in WHEN_MODELS.items())
    return Annotated[
        Union[members],  # noqa: UP007 (a union built from the registry)
        Discriminator(
            when_kind,
            custom_error_type="when_kind",
            custom_error_message=f"when: needs exactly one trigger: {_one_of(TRIGGER_KINDS)}",
        ),
    ]


if TYPE_CHECKING:
    When: TypeAlias = WhenModel  # what code may rely on; the concrete class is one of the kinds'
else:
    When = _when_type()


def make_runtime(compiled: CompiledRule, host: Host) -> RuleRuntime:
    return KINDS[compiled.rule.kind].runtime(compiled, host)


__all__ = [
    "KINDS",
    "TRIGGER_KINDS",
    "WHEN_MODELS",
    "Host",
    "RuleRuntime",
    "TriggerKind",
    "When",
    "WhenModel",
    "make_runtime",
    "when_kind",
]
