"""`change:` triggers: the value now minus the value that held `W` ago, compared with above / below.

when: {signal: oven.temp, change: 5m, above: 10}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import model_validator

from gateway.engine.schema import Duration
from gateway.engine.triggers.base import Host, TriggerKind, WhenModel
from gateway.engine.triggers.window import Segments
from gateway.engine.triggers.windowed import WindowedCondition, WindowedRuntime, seconds

if TYPE_CHECKING:
    from gateway.engine.ruleview import CompiledView


class ChangeWhen(WindowedCondition, WhenModel):
    """`value(now) - value(now - W)`, where value(t) is the good value that held at t."""

    kind: ClassVar[str] = "change"
    carries: ClassVar[tuple[str, ...]] = ("signal",)
    change: Duration
    coverage: float | None = None  # refused: an aggregate's key

    def _what(self) -> str:
        return "change"

    @model_validator(mode="after")
    def _checks(self) -> ChangeWhen:
        if self.change <= 0:
            raise ValueError("change: the window must be longer than 0s")
        if self.coverage is not None:
            raise ValueError("coverage goes with avg, min or max: change compares two values, not a window")
        self._check_condition()
        return self

    def windows(self) -> tuple[tuple[str, float], ...]:
        return (("change", self.change),)

    def template_values(self) -> dict[str, Any]:
        return {"window": seconds(self.change)}


class ChangeRuntime(WindowedRuntime):
    """The change over the window; unknown when no good value holds now or none held at `now - W`."""

    __slots__ = ()

    def __init__(self, compiled: CompiledView, host: Host) -> None:
        when = compiled.rule.when
        assert isinstance(when, ChangeWhen)
        super().__init__(compiled, host, Segments(when.change))

    def measure(self, now: float) -> float | None:
        seg = self.seg
        then = seg.value_at_edge(now)
        current = seg.current()
        if then is None or current is None:
            return None
        return current - then

    def template_extra(self) -> dict[str, Any] | None:
        return {"window": seconds(self.win)}


KIND = TriggerKind(when=ChangeWhen, runtime=ChangeRuntime)
