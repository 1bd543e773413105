"""The gateway's state as plain data: what /api/status returns and the status page renders, made from a
StatusSnapshot (gateway/core/views.py) and the outbox/ledger readers of WebDeps.

`health(snapshot, counts)` is the one place that decides whether the gateway is healthy: /healthz, the status
page's banner and /api/status all use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.core.samples import LinkState
from gateway.core.views import StatusSnapshot, WebDeps

LATEST_WEBHOOKS = 20
OUTBOX_ROWS_SHOWN = 50
DISCREPANCY_WINDOW_S = 30 * 86400.0
DISCREPANCIES_SHOWN = 50
NOT_DRAINING_AFTER_S = 600.0  # retrying rows and no successful delivery for this long: the outbox is stuck


def health(snap: StatusSnapshot, counts: Mapping[str, int]) -> dict[str, Any]:
    """{"status": "ok" | "unhealthy", "reasons": [...]}: each reason one line a person can act on."""
    reasons, _ = assess(snap, counts)
    return {"status": "unhealthy" if reasons else "ok", "reasons": reasons}


def public_health(snap: StatusSnapshot, counts: Mapping[str, int]) -> dict[str, Any]:
    """/healthz for a client without credentials while auth is on: the status and the failing components'
    names (tasks, cmms, disk, database, sources, outbox), never the CMMS's error text nor source names."""
    reasons, failing = assess(snap, counts)
    return {"status": "unhealthy" if reasons else "ok", "failing": failing}


def assess(snap: StatusSnapshot, counts: Mapping[str, int]) -> tuple[list[str], list[str]]:
    """The reasons (lines a person can act on) and the failing components' names."""
    reasons: list[str] = []
    failing: list[str] = []  # component names only: what an unauthenticated probe may see
    for name, why in snap.failed_tasks.items():
        reasons.append(f"task {name} died ({why}): the gateway is stopping; systemd restarts it")
        failing.append("tasks")
    status = snap.dispatcher
    if status.paused:
        reasons.append(f"CMMS paused (credentials or plan refused): {status.reason}; fix the key and reload")
        failing.append("cmms")
    if snap.disk is not None and snap.disk.problem:
        reasons.append(snap.disk.problem)
        failing.append("disk")
    if snap.store_error:
        reasons.append(f"database not writable: {snap.store_error}")
        failing.append("database")
    if not status.link_up:
        reasons.append(f"CMMS unreachable: {status.link_error}; tasks stay queued and leave when it answers")
        failing.append("cmms")
    down = sorted(s.name for s in snap.sources if s.link is LinkState.DOWN)
    if down:
        reasons.append(f"sources down: {', '.join(down)}")
        failing.append("sources")
    if status.running and counts.get("retrying", 0):
        last_ok = status.last_success_at
        since = snap.started_at if last_ok is None else last_ok
        if snap.now - since > NOT_DRAINING_AFTER_S:
            reasons.append(
                f"outbox not draining: {counts['retrying']} rows retrying, no delivery for "
                f"{(snap.now - since) / 60:.0f} min"
            )
            failing.append("outbox")
    return reasons, list(dict.fromkeys(failing))


async def discrepancies(deps: WebDeps, now: float) -> list[dict[str, Any]]:
    """Reconciliation problems of the firings of the last DISCREPANCY_WINDOW_S, newest first."""
    report = await deps.reconciliation(now - DISCREPANCY_WINDOW_S, None)
    out = [
        {
            "kind": problem.get("code"),
            "rule": row.get("rule"),
            "firing": row.get("firing"),
            "task": row.get("task_id"),
            "message": problem.get("message"),
        }
        for row in reversed(report.get("rows", []))
        for problem in row.get("discrepancies", [])
    ]
    return out[:DISCREPANCIES_SHOWN]


def outbox_rows(rows: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": r.id,
            "rule": r.rule_id,
            "firing": r.firing_uuid,
            "priority": r.priority,
            "state": "retrying" if r.status == "queued" and r.attempts else str(r.status),
            "attempts": r.attempts,
            "next_attempt_at": r.next_attempt_at if r.status == "queued" else None,
            "created_at": r.created_at,
            "last_status_code": r.last_status_code,
            "last_error": r.last_error,
            "last_details": r.last_details,
            "description": r.firing.task.description,
        }
        for r in rows
    ]


def approval_rows(rows: Any, now: float) -> list[dict[str, Any]]:
    """Rows awaiting approval (rule `mode: approve`), oldest first, with their age."""
    return [
        {
            "id": r.id,
            "rule": r.rule_id,
            "firing": r.firing_uuid,
            "priority": r.priority,
            "created_at": r.created_at,
            "age_s": round(now - r.created_at, 1),
            "description": r.firing.task.description,
            "equipment": r.firing.task.equipment,
        }
        for r in rows
    ]


def shadow_rows(rows: Any) -> list[dict[str, Any]]:
    """Firings of `mode: shadow` rules with the request the backend would have sent (never sent)."""
    return [
        {
            "id": r.id,
            "rule": r.rule_id,
            "firing": r.firing_uuid,
            "created_at": r.created_at,
            "description": r.firing.task.description,
            "request": r.last_request,
            "error": r.last_error,
        }
        for r in rows
    ]


def status_document(
    snap: StatusSnapshot,
    counts: Mapping[str, int],
    *,
    rows: list[dict[str, Any]] | None = None,
    webhooks: list[dict[str, Any]] | None = None,
    problems: list[dict[str, Any]] | None = None,
    approvals: list[dict[str, Any]] | None = None,
    shadows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The /api/status document (and the status page's data) from a snapshot and what the database said."""
    now = snap.now
    sources = [
        {
            "name": s.name,
            "link": s.link.value,
            "reads": s.reads,
            "errors": s.errors,
            "reconnects": s.reconnects,
            "samples": s.samples,
            "last_error": s.last_error,
            "last_sample_age_s": None if s.last_sample_ts is None else round(now - s.last_sample_ts, 3),
        }
        for s in snap.sources
    ]
    signals = [
        {
            "signal": name,
            "value": s.value,
            "quality": s.quality.value,
            "ts": s.ts,
            "age_s": round(now - s.ts, 3),
            "reason": s.reason,
            "refused": snap.refused.get(name, 0),
        }
        for name, s in sorted(snap.signals.items())
    ]
    rules = [dict(rule) for rule in snap.rules]
    for rule in rules:
        last = snap.last_firing_by_rule.get(str(rule.get("id")))
        if last is not None and last.status == "suppressed":
            rule["suppressed_by"] = last.suppressed_by
    d = snap.dispatcher
    return {
        "now": now,
        "gateway": {
            "id": snap.gateway_id,
            "started_at": snap.started_at,
            "uptime_s": round(now - snap.started_at, 1),
            "timezone": snap.timezone,
            "cmms": snap.cmms,
            "samples_in": snap.samples_in,
            "firings": snap.firings,
            "last_reload": snap.last_reload.as_dict() if snap.last_reload is not None else {},
        },
        "health": health(snap, counts),
        "sources": sources,
        "signals": signals,
        "rules": rules,
        "firings": [f.as_dict() for f in snap.recent_firings],
        "outbox": {
            "counts": dict(counts),
            "dispatcher": dict(d.detail),
            "rows": rows or [],
            "awaiting_approval": approvals or [],
            "shadow": shadows or [],
        },
        "quota": {
            "month": d.quota_month,
            "used": d.quota_used,
            "limit": d.quota_limit,
            "high_only": d.high_only,
        },
        "webhooks": webhooks or [],
        "fleet": dict(snap.fleet) if snap.fleet is not None else None,
        "discrepancies": problems or [],
        "disk": dict(snap.disk.detail) if snap.disk is not None else {},
    }


async def collect_status(deps: WebDeps) -> dict[str, Any]:
    snap = deps.snapshot()
    counts = await deps.outbox.counts()
    rows = await deps.outbox.list(statuses=["queued", "dead"], limit=OUTBOX_ROWS_SHOWN)
    waiting = await deps.outbox.list(statuses=["awaiting_approval"], limit=OUTBOX_ROWS_SHOWN)
    shadow = (
        await deps.outbox.list(statuses=["shadow"], limit=OUTBOX_ROWS_SHOWN) if counts.get("shadow") else []
    )
    return status_document(
        snap,
        counts,
        rows=outbox_rows(rows),
        approvals=approval_rows(waiting, snap.now),
        shadows=shadow_rows(shadow),
        webhooks=await deps.latest_webhooks(LATEST_WEBHOOKS),
        problems=await discrepancies(deps, snap.now),
    )
