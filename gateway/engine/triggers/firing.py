"""From an occurrence of a rule to a `Firing`: the task's templates rendered against the signal values, the
task spec, the priority, the evidence, and `while_open` stamped on the firing (the store enforces it: a firing
of a `while_open: suppress` rule whose previous task is still open is kept but not sent)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from gateway.core.firings import Evidence, Firing, Priority, SparePart, TaskSpec
from gateway.core.samples import Sample
from gateway.engine import templates as tpl
from gateway.engine.context import base_context

if TYPE_CHECKING:
    from gateway.engine.ruleview import CompiledView

log = logging.getLogger("gateway.engine")


def build_firing(
    c: CompiledView,
    values: dict[str, Sample],
    gateway_id: str,
    now: float,
    occurrence: str,
    *,
    value: Any,
    signal: str,
    evidence: tuple[Evidence, ...],
    threshold: Any = None,
    since: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Firing:
    """The firing of rule `c` at `now`; its key is `rule id:occurrence`."""
    rule = c.rule
    ctx = base_context(
        rule,
        values,
        c.roots,
        c.prefixes,
        value=value,
        signal=signal,
        fired_at=now,
        threshold=threshold,
        since=since,
        evidence=[asdict(e) for e in evidence],
        gateway=gateway_id,
        extra=extra,
    )
    description = _render(rule.id, c.description, ctx, rule.task.description, "description")
    if len(description) > tpl.MAX_DESCRIPTION:
        description = description[: tpl.MAX_DESCRIPTION - 1] + "…"
    if len(description) < tpl.MIN_DESCRIPTION:
        description = description.ljust(tpl.MIN_DESCRIPTION, ".")
    title = _render(rule.id, c.title, ctx, rule.task.title or "", "title") if c.title is not None else None
    metadata = {
        key: _render(rule.id, v, ctx, str(rule.metadata[key]), f"metadata {key}") if not _is_plain(v) else v
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
        mode=rule.mode,
    )


def _render(rule_id: str, template: Any, ctx: Mapping[str, Any], source: str, what: str) -> str:
    try:
        return tpl.render(template, ctx)
    except Exception as exc:  # a template must never lose a firing: fall back to its source text
        log.warning(
            "rule %s: the %s template failed at firing time (%s); sending it unrendered",
            rule_id,
            what,
            exc,
        )
        return f"{source} [template error: {exc}]"


def _is_plain(value: Any) -> bool:
    return not hasattr(value, "render")
