"""What a task template sees when a rule fires (and, with probe values, when the loader checks it)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.core.samples import Sample
from gateway.engine import templates as tpl

if TYPE_CHECKING:
    from gateway.engine.ruleview import RuleView


def base_context(
    rule: RuleView,
    values: dict[str, Sample] | Any,
    roots: Collection[str],
    prefixes: Collection[str],
    *,
    value: Any,
    signal: str,
    fired_at: float,
    threshold: Any,
    since: float | None,
    evidence: list[dict[str, Any]],
    gateway: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a task template sees."""
    ctx = tpl.signal_context(values, roots, prefixes)
    ctx.update(
        value=value,
        signal=signal,
        rule={"id": rule.id, "name": rule.title, "kind": rule.kind},
        fired_at=datetime.fromtimestamp(fired_at, UTC),
        threshold=threshold,
        every=getattr(rule.when, "every", None),
        since=None if since is None else datetime.fromtimestamp(since, UTC),
        evidence=evidence,
        gateway=gateway,
        window=None,  # windowed kinds (avg, min, max, change, count): the window in seconds
        coverage=None,  # avg, min, max: the share of the window good data covered
    )
    if extra:
        ctx.update(extra)
    return ctx
