"""The gateway's state as plain data: what /api/status returns and the status page renders.

`health(gw)` is the one place that decides whether the gateway is healthy: /healthz, the status page's banner
and /api/status all use it.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from gateway.disk import DiskStatus, check_disk

if TYPE_CHECKING:
    from gateway.app import Gateway

LATEST_WEBHOOKS = 20
OUTBOX_ROWS_SHOWN = 50
RECENT_FIRINGS = 20
DISCREPANCY_WINDOW_S = 30 * 86400.0
DISCREPANCIES_SHOWN = 50
NOT_DRAINING_AFTER_S = 600.0  # retrying rows and no successful delivery for this long: the outbox is stuck


class FiringLog:
    """The latest firings and, per rule, what became of its last one (queued, or suppressed because the task
    of an earlier firing is still open). Fed by the Gateway's "firing" events; kept in memory."""

    def __init__(self, size: int = RECENT_FIRINGS) -> None:
        self.recent: deque[dict[str, Any]] = deque(maxlen=size)
        self.by_rule: dict[str, dict[str, Any]] = {}

    def on_event(self, kind: str, payload: Any) -> None:
        if kind != "firing":
            return
        firing, result = payload
        entry = {
            "rule": firing.rule_id,
            "key": firing.key,
            "firing": result.uuid,
            "fired_at": firing.fired_at,
            "status": result.status.value,
            "suppressed_by": result.suppressed_by,
            "description": firing.task.description,
        }
        self.recent.appendleft(entry)
        self.by_rule[firing.rule_id] = entry


_firing_logs: dict[int, FiringLog] = {}


def firing_log(gw: Gateway) -> FiringLog:
    """The gateway's FiringLog, created and subscribed on first use."""
    log = _firing_logs.get(id(gw))
    if log is None or log.on_event not in gw.listeners:
        log = _firing_logs[id(gw)] = FiringLog()
        gw.listeners.append(log.on_event)
    return log


def _disk(gw: Gateway) -> DiskStatus:
    last = gw.housekeeping.disk
    if isinstance(last, DiskStatus) and gw.housekeeping.disk_fresh:
        return last
    return check_disk(gw.config.state_dir)


async def health(gw: Gateway, *, outbox_counts: dict[str, int] | None = None) -> dict[str, Any]:
    """{"status": "ok" | "unhealthy", "reasons": [...]}: each reason one line a person can act on."""
    now = gw.clock.now()
    reasons: list[str] = []
    status = gw.dispatcher.status
    if status.state.value == "paused":
        reasons.append(f"CMMS paused (credentials or plan refused): {status.reason}; fix the key and reload")
    disk = _disk(gw)
    if disk.problem:
        reasons.append(disk.problem)
    store_error = gw.housekeeping.store_error
    if store_error:
        reasons.append(f"database not writable: {store_error}")
    if not status.link_up:
        reasons.append(f"CMMS unreachable: {status.link_error}; tasks stay queued and leave when it answers")
    down = sorted(n for n, s in gw.sources.items() if s.stats.link.value == "down")
    if down:
        reasons.append(f"sources down: {', '.join(down)}")
    counts = outbox_counts if outbox_counts is not None else await gw.store.outbox.counts()
    if status.state.value == "running" and counts.get("retrying", 0):
        last_ok = status.last_success_at
        since = gw.started_at if last_ok is None else last_ok
        if now - since > NOT_DRAINING_AFTER_S:
            reasons.append(
                f"outbox not draining: {counts['retrying']} rows retrying, no delivery for "
                f"{(now - since) / 60:.0f} min"
            )
    return {"status": "unhealthy" if reasons else "ok", "reasons": reasons}


def _plain(value: Any) -> Any:
    """Rows and dataclasses from other parts, as JSON-ready data."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    if hasattr(value, "keys"):
        return {k: value[k] for k in value.keys()}  # noqa: SIM118 (sqlite3.Row has keys(), no iteration)
    return value


async def _webhooks(gw: Gateway) -> list[dict[str, Any]]:
    """The latest webhook events, newest first, without their bodies."""
    return await gw.store.ledger.latest_events(limit=LATEST_WEBHOOKS)


async def _discrepancies(gw: Gateway) -> list[dict[str, Any]]:
    """Reconciliation problems of the firings of the last DISCREPANCY_WINDOW_S, newest first."""
    from gateway.reconcile import build_report

    report = await build_report(gw.store, since=gw.clock.now() - DISCREPANCY_WINDOW_S)
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


async def _outbox(gw: Gateway, counts: dict[str, int]) -> dict[str, Any]:
    rows = await gw.store.outbox.list(statuses=["queued", "dead"], limit=OUTBOX_ROWS_SHOWN)
    items = [
        {
            "id": r.id,
            "rule": r.rule_id,
            "firing": r.firing_uuid,
            "priority": r.priority,
            "state": "retrying" if r.status.value == "queued" and r.attempts else r.status.value,
            "attempts": r.attempts,
            "next_attempt_at": r.next_attempt_at if r.status.value == "queued" else None,
            "created_at": r.created_at,
            "last_status_code": r.last_status_code,
            "last_error": r.last_error,
            "last_details": r.last_details,
            "description": r.firing.task.description,
        }
        for r in rows
    ]
    return {"counts": counts, "dispatcher": gw.dispatcher.status.as_dict(), "rows": items}


async def collect_status(gw: Gateway) -> dict[str, Any]:
    now = gw.clock.now()
    sources = []
    for name, source in gw.sources.items():
        st = source.stats
        sources.append(
            {
                "name": name,
                "link": st.link.value,
                "reads": st.reads,
                "errors": st.errors,
                "reconnects": st.reconnects,
                "samples": st.samples,
                "last_error": st.last_error,
                "last_sample_age_s": None if st.last_sample_ts is None else round(now - st.last_sample_ts, 3),
            }
        )
    signals = [
        {
            "signal": name,
            "value": s.value,
            "quality": s.quality.value,
            "ts": s.ts,
            "age_s": round(now - s.ts, 3),
            "reason": s.reason,
        }
        for name, s in sorted(gw.engine.last_values.items())
    ]
    counts = await gw.store.outbox.counts()
    status = gw.dispatcher.status
    disk = _disk(gw)
    flog = firing_log(gw)
    rules = gw.engine.rule_status(now)
    for rule in rules:
        last = flog.by_rule.get(str(rule.get("id")))
        if last is not None and last["status"] == "suppressed":
            rule["suppressed_by"] = last["suppressed_by"]
    return {
        "now": now,
        "gateway": {
            "id": gw.config.gateway.id,
            "started_at": gw.started_at,
            "uptime_s": round(now - gw.started_at, 1),
            "timezone": gw.timezone,
            "cmms": gw.backend.kind,
            "samples_in": gw.samples_in,
            "firings": gw.firings_out,
            "last_reload": gw.last_reload,
        },
        "health": await health(gw, outbox_counts=counts),
        "sources": sources,
        "signals": signals,
        "rules": rules,
        "firings": list(flog.recent),
        "outbox": await _outbox(gw, counts),
        "quota": {
            "month": status.quota_month,
            "used": status.quota_used,
            "limit": status.quota_limit,
            "high_only": status.high_only,
        },
        "webhooks": await _webhooks(gw),
        "fleet": gw.fleet.status() if getattr(gw, "fleet", None) is not None else None,
        "discrepancies": await _discrepancies(gw),
        "disk": disk.as_dict(),
    }
