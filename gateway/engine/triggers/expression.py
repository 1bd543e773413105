"""Evaluating a rule's compiled expression (`expr` triggers, `hours: {expr: ...}`) against the last values."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.core.firings import Evidence
from gateway.core.samples import Quality, Sample
from gateway.engine.triggers.base import evidence_of

if TYPE_CHECKING:
    from gateway.engine.ruleview import CompiledView

log = logging.getLogger("gateway.engine")

GOOD = Quality.GOOD


def evaluate_expr(
    c: CompiledView, values: Mapping[str, Sample], ctx: Mapping[str, Any] | None
) -> bool | None:
    """True/False, or None (unknown) when a referenced signal is missing or bad, or evaluation fails."""
    expr = c.expr
    assert expr is not None and ctx is not None
    try:
        if expr.fast is not None:
            return expr.fast(values)  # checks the signals itself (pyexpr.py)
        for name in expr.refs.signals:
            sample = values.get(name)
            if sample is None or sample.quality is not GOOD:
                return None
        return bool(expr.evaluate(ctx))
    except Exception as exc:  # a sandboxed expression may raise anything on odd values: unknown, not a crash
        log.debug("rule %s: expression failed: %s", c.rule.id, exc)
        return None


def expr_evidence(c: CompiledView, values: Mapping[str, Sample]) -> tuple[Evidence, ...]:
    assert c.expr is not None
    return tuple(evidence_of(values.get(name), name) for name in c.expr.refs.signals)
