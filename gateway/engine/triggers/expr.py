"""`expr:` triggers: a safe expression over signals, latched like a signal condition, optionally held
for `for`.

    when: {expr: "press1.pressure > 200 and press1.mode == 'AUTO'", for: 30s}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field

from gateway.core.firings import Evidence
from gateway.core.samples import Sample
from gateway.engine import templates as tpl
from gateway.engine.schema import Duration
from gateway.engine.triggers.base import Firings, Host, TriggerKind, WhenModel
from gateway.engine.triggers.expression import evaluate_expr, expr_evidence
from gateway.engine.triggers.latch import LatchedRuntime, Phase

if TYPE_CHECKING:
    from gateway.engine.ruleview import CompiledView


class ExprWhen(WhenModel):
    """A safe expression over signals, e.g. `press1.pressure > 200 and press1.mode == 'AUTO'`."""

    kind: ClassVar[str] = "expr"
    expr: Annotated[str, Field(strict=True, min_length=1)]
    for_: Duration = Field(default=0.0, alias="for")

    def expression(self) -> tuple[str, tuple[str, ...]] | None:
        return (self.expr, ("expr",))

    def probe_value(self) -> Any:
        return True


class ExprRuntime(LatchedRuntime):
    """The latched condition (see LatchedRuntime) on the expression, evaluated on every sample of a signal it
    names; unknown while one of them is missing or bad. Persisted: phase, since."""

    __slots__ = ("ctx",)

    def __init__(self, compiled: CompiledView, host: Host) -> None:
        when = compiled.rule.when
        assert isinstance(when, ExprWhen)
        super().__init__(compiled, host, when.for_)
        self.ctx = tpl.signal_context(host.values, compiled.roots, compiled.prefixes)

    def on_sample(self, sample: Sample, now: float) -> Firings:
        cond = evaluate_expr(self.c, self.host.values, self.ctx)
        if not cond and self.phase is _IDLE:
            return None  # armed and false or unknown: what step() does, without the call
        return self.step(cond, cond is False, now)

    def evidence(self) -> tuple[Evidence, ...]:
        return expr_evidence(self.c, self.host.values)

    def value(self) -> Any:
        return True


_IDLE = Phase.IDLE

KIND = TriggerKind(when=ExprWhen, runtime=ExprRuntime)
