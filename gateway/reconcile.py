"""Reconciliation: for every firing, which task it became, what happened to it, and which spare parts the rule
expected against those really consumed (consumed minus canceled), with the discrepancies.

Used by `mw-gateway reconcile [--since DATE] [--rule ID] [--format table|json|csv]` and
`GET /api/reconciliation?since=…&rule=…` (the same JSON). Times in the output are ISO 8601 in UTC.

Discrepancy codes (each row lists every one that applies):
    never_scheduled                  a delivered (or queued, or dead) firing no TaskWasScheduled names
    duplicate_task                   more than one task bound to the firing (a retried POST reached the CMMS)
    completed_without_expected_parts completed, and an expected spare part was not consumed at all
    unexpected_part                  a spare part consumed that the rule did not expect
    quantity_difference              an expected spare part consumed in another quantity
Movements count for a task only when they come from the task's own source (a Mobility Work task: Mobility
Work's consumption webhooks), unless their source is linked on purpose (`linked`; gateway.yaml
`http.servicemobility_work_orders_are_tasks: true` links ServiceMobility, whose work-order numbers are then
taken for the task ids): a consumption posted by another system never lands on a task by a coincidence of
ids (issue 18.9).
Suppressed firings (the rule's previous task was still open) are rows with status "suppressed" and no
discrepancy: they never became a task on purpose.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.store.ledger import FiringRow, MovementRow, TaskRow

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from gateway.config import Config
    from gateway.store import Store

EPSILON = 1e-9


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def qty(value: float) -> int | float:
    """1.0 -> 1 in the output; 0.5 stays 0.5."""
    rounded = round(value, 9)
    return int(rounded) if float(rounded).is_integer() else rounded


def parse_since(value: str, timezone: str | None = None) -> float:
    """`YYYY-MM-DD` or ISO 8601; without an offset, in the gateway's timezone (UTC when none is set)."""
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {value!r}: write a date (YYYY-MM-DD) or an ISO 8601 date-time") from None
    if dt.tzinfo is None:
        try:
            tz: Any = ZoneInfo(timezone) if timezone else UTC
        except (ZoneInfoNotFoundError, ValueError):
            tz = UTC
        dt = dt.replace(tzinfo=tz)
    return dt.timestamp()


def _expected(firing: FiringRow) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for part in (firing.body.get("task") or {}).get("spare_parts") or ():
        if isinstance(part, dict) and part.get("article") is not None:
            out[str(part["article"])] += float(part.get("quantity") or 0)
    return dict(out)


def _consumed(movements: list[MovementRow]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for mv in movements:
        out[mv.article] += mv.quantity
    return {article: q for article, q in out.items() if abs(q) > EPSILON}


# A task's TaskWasScheduled webhook normally follows its creation within seconds; until this long after the
# delivery, a firing without a task is "awaiting the webhook", not "never scheduled".
SCHEDULED_GRACE_S = 600.0


UNSENT_BY_MODE = ("shadow", "awaiting_approval", "rejected")  # outbox states that are never sent (yet)


def reconcile_firing(
    firing: FiringRow, tasks: list[TaskRow], movements: list[MovementRow], *, now: float | None = None
) -> dict[str, Any]:
    """One row of the report (pure)."""
    primary = next((t for t in tasks if t.task_id == firing.task_id), tasks[0] if tasks else None)
    expected = _expected(firing)
    consumed = _consumed(movements)
    state = "suppressed" if firing.status == "suppressed" else (firing.task_state or None)
    problems: list[dict[str, Any]] = []
    awaiting = (
        not tasks
        and firing.outbox_status == "delivered"
        and firing.delivered_at is not None
        and now is not None
        and now - firing.delivered_at < SCHEDULED_GRACE_S
    )
    if awaiting:
        state = "awaiting_webhook"
    # Rule modes (docs/rollout.md): a shadow, awaiting or rejected firing is not meant to have a task (yet).
    unsent = firing.outbox_status in UNSENT_BY_MODE
    if unsent and not tasks:
        state = firing.outbox_status
    if firing.status != "suppressed":
        if not tasks and not awaiting and not unsent:
            problems.append(
                {
                    "code": "never_scheduled",
                    "message": "no TaskWasScheduled for this firing"
                    f" (delivery: {firing.outbox_status or 'none'})",
                }
            )
        if len(tasks) > 1:
            ids = [t.task_id for t in tasks]
            problems.append(
                {
                    "code": "duplicate_task",
                    "tasks": ids,
                    "message": f"{len(ids)} tasks for one firing: {', '.join(ids)}",
                }
            )
        if firing.maybe_committed and len(tasks) <= 1:
            problems.append(
                {
                    "code": "possible_duplicate",
                    "attempts": firing.maybe_committed,
                    "message": f"{firing.maybe_committed} delivery attempt(s) may have reached the CMMS"
                    " without an answer: look for a second task whose metadata.firing is this firing",
                }
            )
        if state == "completed":
            missing = sorted(a for a in expected if consumed.get(a, 0) <= EPSILON)
            if missing:
                problems.append(
                    {
                        "code": "completed_without_expected_parts",
                        "articles": missing,
                        "message": f"completed without consuming {', '.join(missing)}",
                    }
                )
        for article in sorted(consumed):
            if article not in expected and consumed[article] > EPSILON:
                problems.append(
                    {
                        "code": "unexpected_part",
                        "article": article,
                        "consumed": qty(consumed[article]),
                        "message": f"{article} x{qty(consumed[article])} consumed, not expected",
                    }
                )
        for article in sorted(expected):
            got = consumed.get(article, 0.0)
            if got > EPSILON and abs(got - expected[article]) > EPSILON:
                problems.append(
                    {
                        "code": "quantity_difference",
                        "article": article,
                        "expected": qty(expected[article]),
                        "consumed": qty(got),
                        "message": f"{article}: expected {qty(expected[article])}, consumed {qty(got)}",
                    }
                )
    return {
        "firing": firing.uuid,
        "key": firing.key,
        "rule": firing.rule_id,
        "equipment": firing.equipment,
        "fired_at": iso(firing.fired_at),
        "status": firing.status,
        "suppressed_by": firing.suppressed_by,
        "delivery": firing.outbox_status,
        "task_id": primary.task_id if primary else None,
        "task_state": state,
        "scheduled_at": iso(primary.scheduled_at) if primary else None,
        "scheduled_by": primary.scheduled_by if primary else None,
        "started_at": iso(primary.started_at) if primary else None,
        "started_by": primary.started_by if primary else None,
        "completed_at": iso(primary.completed_at) if primary else None,
        "completed_by": primary.completed_by if primary else None,
        "canceled_at": iso(primary.canceled_at) if primary else None,
        "canceled_by": primary.canceled_by if primary else None,
        "tasks": [t.task_id for t in tasks],
        "expected": {a: qty(q) for a, q in sorted(expected.items())},
        "consumed": {a: qty(q) for a, q in sorted(consumed.items())},
        "discrepancies": problems,
    }


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    per_rule: dict[str, dict[str, int]] = {}
    per_part: dict[str, dict[str, float]] = defaultdict(lambda: {"expected": 0.0, "consumed": 0.0})
    for row in rows:
        r = per_rule.setdefault(
            row["rule"],
            {
                "firings": 0,
                "suppressed": 0,
                "tasks": 0,
                "open": 0,
                "completed": 0,
                "canceled": 0,
                "never_scheduled": 0,
                "with_discrepancies": 0,
            },
        )
        r["firings"] += 1
        if row["status"] == "suppressed":
            r["suppressed"] += 1
            continue
        if row["task_id"]:
            r["tasks"] += 1
        state = row["task_state"]
        if state in ("scheduled", "started"):
            r["open"] += 1
        elif state in ("completed", "canceled"):
            r[state] += 1
        codes = {d["code"] for d in row["discrepancies"]}
        r["never_scheduled"] += "never_scheduled" in codes
        r["with_discrepancies"] += bool(codes)
        for article, q in row["expected"].items():
            per_part[article]["expected"] += q
        for article, q in row["consumed"].items():
            per_part[article]["consumed"] += q
    parts = {
        a: {
            "expected": qty(v["expected"]),
            "consumed": qty(v["consumed"]),
            "difference": qty(v["consumed"] - v["expected"]),
        }
        for a, v in sorted(per_part.items())
    }
    return {"rules": dict(sorted(per_rule.items())), "spare_parts": parts}


async def build_report(
    store: Store,
    *,
    since: float | None = None,
    rule: str | None = None,
    now: float | None = None,
    linked: Collection[str] = (),
) -> dict[str, Any]:
    firings = await store.ledger.firings(since=since, rule=rule)
    tasks_by_firing = await store.ledger.tasks_for_firings([f.uuid for f in firings])
    task_ids = [t.task_id for ts in tasks_by_firing.values() for t in ts]
    by_task: dict[str, list[MovementRow]] = defaultdict(list)
    for mv in await store.ledger.movements(task_ids=task_ids):
        by_task[str(mv.task_id)].append(mv)
    at = store.clock.now() if now is None else now

    def reconcile_all() -> list[dict[str, Any]]:
        rows = []
        for firing in firings:
            tasks = tasks_by_firing.get(firing.uuid, [])
            movements = [
                mv
                for t in tasks
                for mv in by_task.get(t.task_id, [])
                if mv.source == t.source or mv.source in linked
            ]
            rows.append(reconcile_firing(firing, tasks, movements, now=at))
        return rows

    # The status page asks for this every few seconds over thousands of firings: CPU work for a worker
    # thread, so that the event loop (webhooks, the engine, delivery) is never held up by it.
    rows = await asyncio.to_thread(reconcile_all)
    return {
        "generated_at": iso(store.clock.now() if now is None else now),
        "filters": {"since": iso(since), "rule": rule},
        "rows": rows,
        "totals": totals(rows),
    }


# ---------------------------------------------------------------------- output formats

CSV_COLUMNS = (
    "firing",
    "key",
    "rule",
    "equipment",
    "fired_at",
    "status",
    "delivery",
    "task_id",
    "task_state",
    "scheduled_at",
    "scheduled_by",
    "started_at",
    "started_by",
    "completed_at",
    "completed_by",
    "canceled_at",
    "canceled_by",
    "tasks",
    "expected",
    "consumed",
    "discrepancies",
)


def _parts(parts: dict[str, Any]) -> str:
    return "; ".join(f"{a} x{q}" for a, q in parts.items())


def _cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if column in ("expected", "consumed"):
        return _parts(value or {})
    if column == "discrepancies":
        return "; ".join(d["message"] for d in value or ())
    if column == "tasks":
        return " ".join(value or ())
    if column == "equipment":
        return "" if value is None else str(value)
    return "" if value is None else str(value)


def format_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in report["rows"]:
        writer.writerow([_cell(row, c) for c in CSV_COLUMNS])
    return buf.getvalue()


def _short_time(value: str | None) -> str:
    return "-" if not value else value[:16].replace("T", " ")


def format_table(report: dict[str, Any]) -> str:
    headers = (
        "FIRED AT (UTC)",
        "RULE",
        "EQUIPMENT",
        "TASK",
        "STATE",
        "EXPECTED",
        "CONSUMED",
        "DISCREPANCIES",
    )
    lines = [
        [
            _short_time(r["fired_at"]),
            r["rule"],
            _cell(r, "equipment") or "-",
            r["task_id"] or "-",
            r["task_state"] or "-",
            _parts(r["expected"]) or "-",
            _parts(r["consumed"]) or "-",
            "; ".join(d["code"] for d in r["discrepancies"]) or "-",
        ]
        for r in report["rows"]
    ]
    widths = [
        max(len(h), *(len(str(line[i])) for line in lines)) if lines else len(h)
        for i, h in enumerate(headers)
    ]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    if not lines:
        out.append("(no firings)")
    out.append("")
    out.append(
        "PER RULE: firings / suppressed / tasks / open / completed / canceled / never scheduled / "
        "with discrepancies"
    )
    for rule_id, t in report["totals"]["rules"].items():
        out.append(
            f"  {rule_id}: {t['firings']} / {t['suppressed']} / {t['tasks']} / {t['open']} / "
            f"{t['completed']} / {t['canceled']} / {t['never_scheduled']} / {t['with_discrepancies']}"
        )
    out.append("PER SPARE PART: expected / consumed / difference")
    for article, t in report["totals"]["spare_parts"].items():
        out.append(f"  {article}: {t['expected']} / {t['consumed']} / {t['difference']}")
    details = [(r["rule"], r["firing"], d["message"]) for r in report["rows"] for d in r["discrepancies"]]
    if details:
        out.append("DISCREPANCIES")
        out += [f"  {rule_id} {firing[:8]}: {message}" for rule_id, firing, message in details]
    return "\n".join(out) + "\n"


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n"
    if fmt == "csv":
        return format_csv(report)
    return format_table(report)


# ---------------------------------------------------------------------- entry points


def linked_sources(http: Any) -> tuple[str, ...]:
    """Movement sources counted against any task, whatever its source (http: a gateway.config.HttpSection)."""
    return ("servicemobility",) if getattr(http, "servicemobility_work_orders_are_tasks", False) else ()


async def cmd_reconcile(
    config: Config, *, fmt: str = "table", since: str | None = None, rule: str | None = None
) -> int:
    """`mw-gateway reconcile`: read the state database (safe while the gateway runs) and print the report."""
    from gateway.store import Store

    try:
        since_ts = parse_since(since, config.gateway.timezone) if since else None
    except ValueError as exc:
        print(f"mw-gateway reconcile: {exc}", file=sys.stderr)
        return 2
    store = await Store.open(config.state_dir, gateway_id=config.gateway.id)
    try:
        report = await build_report(store, since=since_ts, rule=rule, linked=linked_sources(config.http))
    finally:
        await store.close()
    sys.stdout.write(render(report, fmt))
    return 0


def reconciliation_endpoint(
    report_of: Callable[[float | None, str | None], Awaitable[dict[str, Any]]],
    timezone: Callable[[], str | None],
) -> Callable[[Request], Awaitable[Response]]:
    """`GET /api/reconciliation?since=…&rule=…&format=json|csv` (JSON by default). `report_of(since, rule)`
    is build_report over the gateway's store; `timezone()` the configured one (a date without an offset)."""
    from starlette.responses import JSONResponse, Response

    async def endpoint(request: Request) -> Response:
        since = request.query_params.get("since")
        try:
            since_ts = parse_since(since, timezone()) if since else None
        except ValueError as exc:
            return JSONResponse({"error": str(exc).replace("--since", "since")}, status_code=400)
        report = await report_of(since_ts, request.query_params.get("rule") or None)
        if request.query_params.get("format") == "csv":
            return Response(format_csv(report), media_type="text/csv; charset=utf-8")
        return Response(json.dumps(report, ensure_ascii=False, default=str), media_type="application/json")

    return endpoint
