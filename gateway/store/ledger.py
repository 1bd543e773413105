"""The webhook ledger: what the CMMS did with the tasks the gateway created, and which spare parts went where.

Just over 500 lines: the binding rules below are one state machine whose queries are kept together.

The web side (gateway/web/read_*.py, receiver.py) verifies a webhook and turns its JSON into typed ledger
operations (`LedgerOps`); `Ledger.record()` stores the raw event and applies the operations in ONE
transaction, so a webhook is answered 200 only once everything it says is durable.

Binding: a task event whose `metadata.firing` names a firing uuid binds that task to the firing
(`tasks.firing_uuid`) and keeps `firings.task_id` / `firings.task_state` current — the outbox reads them for
the "one open task per rule and equipment" suppression. Any task event may carry the binding (scheduled,
started, completed, canceled, activity), so events arriving out of order are bound as soon as one of them
names the firing. Consumption rows only name a task id; they join through it, whenever the task is bound.

Task state moves scheduled -> started -> completed | canceled and never back: a late `started` after
`completed` records its time but does not reopen the task. A second task bound to the same firing is a
duplicate (a retried POST that had reached the CMMS): `tasks.duplicate_of` names the first one.

A firing's `task_state` aggregates its tasks: completed if any task is completed, else started/scheduled if
any is still open, else canceled. When it becomes completed or canceled the result carries a `TaskClosed`
for the engine (`rearm: on_completion`); the caller passes it on, the store calls nobody.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.core.clock import Clock
from gateway.core.webhooks import (
    STATE_RANK,
    TASK_STATES,
    TERMINAL_STATES,
    Incoming,
    NonceReplayed,
    NonceUse,
    RecordResult,
    TaskClosed,
    TaskUpdate,
)
from gateway.store.db import Database
from gateway.store.outbox import PRUNE_BATCH, _save_rule_states


@dataclass(frozen=True, slots=True)
class TaskRow:
    task_id: str
    source: str
    firing_uuid: str | None
    rule_id: str | None
    equipment: Any
    state: str
    scheduled_at: float | None
    scheduled_by: str | None
    started_at: float | None
    started_by: str | None
    completed_at: float | None
    completed_by: str | None
    canceled_at: float | None
    canceled_by: str | None
    duplicate_of: str | None
    first_seen: float

    @staticmethod
    def from_row(row: sqlite3.Row) -> TaskRow:
        return TaskRow(
            task_id=row["task_id"],
            source=row["source"],
            firing_uuid=row["firing_uuid"],
            rule_id=row["rule_id"],
            equipment=json.loads(row["equipment"]) if row["equipment"] else None,
            state=row["state"],
            scheduled_at=row["scheduled_at"],
            scheduled_by=row["scheduled_by"],
            started_at=row["started_at"],
            started_by=row["started_by"],
            completed_at=row["completed_at"],
            completed_by=row["completed_by"],
            canceled_at=row["canceled_at"],
            canceled_by=row["canceled_by"],
            duplicate_of=row["duplicate_of"],
            first_seen=row["first_seen"],
        )


@dataclass(frozen=True, slots=True)
class MovementRow:
    task_id: str | None
    kind: str
    article: str
    quantity: float  # signed
    source: str
    at: float | None


@dataclass(frozen=True, slots=True)
class FiringRow:
    uuid: str
    key: str
    rule_id: str
    equipment: Any
    fired_at: float
    status: str
    suppressed_by: str | None
    task_id: str | None
    task_state: str | None
    outbox_status: str | None
    body: dict[str, Any]
    maybe_committed: int = 0  # delivery attempts that may have reached the CMMS without our seeing the answer
    delivered_at: float | None = None


class Ledger:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    # ------------------------------------------------------------------ writing

    async def record(
        self,
        incoming: Incoming,
        *,
        nonce: NonceUse | None = None,
        on_closed: Callable[[tuple[TaskClosed, ...]], Mapping[str, Any]] | None = None,
    ) -> RecordResult:
        """Store the event and apply its operations in one transaction.

        on_closed: called inside the transaction with the tasks the event closed (when there are any); the
        rule states it returns are saved in that same transaction (`rearm: on_completion`).

        With a nonce: a nonce already seen with the same body is the same delivery again (a retry of a request
        whose answer was lost): nothing is stored and the result is a duplicate. The same nonce with another
        body raises NonceReplayed and nothing is stored.
        """
        now = self._clock.now()
        async with self._db.write() as conn:
            if nonce is not None:
                await conn.execute("DELETE FROM webhook_nonces WHERE expires_at < ?", (now,))
                seen = list(
                    await conn.execute_fetchall(
                        "SELECT body_hash FROM webhook_nonces WHERE nonce = ?", (nonce.nonce,)
                    )
                )
                if seen:
                    if seen[0][0] == nonce.body_hash:
                        return RecordResult(stored=False)
                    raise NonceReplayed(nonce.nonce)
                await conn.execute(
                    "INSERT INTO webhook_nonces(nonce, body_hash, expires_at) VALUES (?,?,?)",
                    (nonce.nonce, nonce.body_hash, nonce.expires_at),
                )
            cur = await conn.execute(
                "INSERT INTO webhook_events(source, event, dedupe_key, received_at, task_id, known, body)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT(source, dedupe_key) DO NOTHING",
                (
                    incoming.source,
                    incoming.event,
                    incoming.dedupe_key,
                    now,
                    incoming.task_id,
                    int(incoming.known),
                    incoming.body,
                ),
            )
            if not cur.rowcount:
                return RecordResult(stored=False)
            event_id = int(cur.lastrowid or 0)
            closed = await self._apply(conn, incoming, event_id, now)
            if closed and on_closed is not None:
                await _save_rule_states(conn, on_closed(tuple(closed)), now)
        return RecordResult(stored=True, event_id=event_id, closed=tuple(closed), stock=incoming.ops.stock)

    async def _apply(self, conn: Any, incoming: Incoming, event_id: int, now: float) -> list[TaskClosed]:
        ops = incoming.ops
        touched_firings: set[str] = set()
        for update in ops.tasks:
            firing = await _upsert_task(conn, incoming.source, update, now)
            if firing:
                touched_firings.add(firing)
        for act in ops.activities:
            await _ensure_task(conn, incoming.source, act.task_id, now)
            await conn.execute(
                "INSERT INTO task_activities(task_id, activity_id, description, minutes, at, reporter,"
                " event_id) VALUES (?,?,?,?,?,?,?) ON CONFLICT(task_id, activity_id) DO UPDATE SET"
                " description=excluded.description, minutes=excluded.minutes, at=excluded.at,"
                " reporter=excluded.reporter, event_id=excluded.event_id",
                (act.task_id, act.activity_id, act.description, act.minutes, act.at, act.reporter, event_id),
            )
        for mv in ops.movements:
            signed = mv.quantity if mv.kind == "consumed" else -mv.quantity
            await conn.execute(
                "INSERT INTO consumptions(event_id, source, kind, task_id, article, spare_part_id, name,"
                " quantity, location, at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    event_id,
                    incoming.source,
                    mv.kind,
                    mv.task_id,
                    mv.article,
                    mv.spare_part_id,
                    mv.name,
                    signed,
                    mv.location,
                    mv.at,
                ),
            )
        for st in ops.stock:
            await conn.execute(
                "INSERT INTO stock_levels(article, spare_part_id, name, quantity, threshold, last_event,"
                " updated_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT(article) DO UPDATE SET"
                " spare_part_id=COALESCE(excluded.spare_part_id, spare_part_id),"
                " name=COALESCE(excluded.name, name), quantity=COALESCE(excluded.quantity, quantity),"
                " threshold=COALESCE(excluded.threshold, threshold), last_event=excluded.last_event,"
                " updated_at=excluded.updated_at",
                (st.article, st.spare_part_id, st.name, st.quantity, st.threshold, st.event, now),
            )
        closed = []
        for firing_uuid in sorted(touched_firings):
            result = await _refresh_firing(conn, firing_uuid, now)
            if result is not None:
                closed.append(result)
        return closed

    async def prune_events(
        self, *, older_than: float, history_older_than: float | None = None, batch: int = PRUNE_BATCH
    ) -> int:
        """Retention (runtime/housekeeping.py): raw webhook events received before `older_than` go. Events the
        ledger still points at (consumptions, activities) keep their row, without the raw body. Consumptions
        and activities whose event was received before `history_older_than` go with their event (None: they
        are kept). Tasks and stock levels stay. Returns how many events were pruned or emptied.

        Walks the events in id order, `batch` per transaction (the write lock is free in between, so a long
        prune never holds the engine or the webhooks back: issue 18.11)."""
        now = self._clock.now()
        total = 0
        while True:
            async with self._db.write() as conn:
                cur = await conn.execute(
                    "DELETE FROM webhook_nonces WHERE rowid IN"
                    " (SELECT rowid FROM webhook_nonces WHERE expires_at < ? LIMIT ?)",
                    (now, batch),
                )
                if int(cur.rowcount or 0) < batch:
                    break
            await asyncio.sleep(0)
        history = history_older_than if history_older_than is not None else float("-inf")
        scan_before = max(older_than, history)
        last_id = 0
        while True:
            async with self._db.write() as conn:
                rows = await conn.execute_fetchall(
                    "SELECT id FROM webhook_events WHERE id > ? AND received_at < ? ORDER BY id LIMIT ?",
                    (last_id, scan_before, batch),
                )
                ids = [int(r[0]) for r in rows]
                if not ids:
                    return total
                last_id = ids[-1]
                marks = ",".join("?" * len(ids))
                if history_older_than is not None:
                    old = f"SELECT id FROM webhook_events WHERE id IN ({marks}) AND received_at < ?"
                    for table in ("consumptions", "task_activities"):
                        await conn.execute(f"DELETE FROM {table} WHERE event_id IN ({old})", (*ids, history))
                cur = await conn.execute(
                    f"DELETE FROM webhook_events WHERE id IN ({marks}) AND received_at < ?"
                    " AND NOT EXISTS (SELECT 1 FROM consumptions c WHERE c.event_id = webhook_events.id)"
                    " AND NOT EXISTS (SELECT 1 FROM task_activities a WHERE a.event_id = webhook_events.id)",
                    (*ids, older_than),
                )
                total += int(cur.rowcount or 0)
                cur = await conn.execute(
                    f"UPDATE webhook_events SET body = '' WHERE id IN ({marks})"
                    " AND received_at < ? AND body != ''",
                    (*ids, older_than),
                )
                total += int(cur.rowcount or 0)
            if len(ids) < batch:
                return total
            await asyncio.sleep(0)

    # ------------------------------------------------------------------ reading

    async def event_count(self, *, source: str | None = None) -> int:
        sql = "SELECT COUNT(*) FROM webhook_events"
        params: list[Any] = []
        if source is not None:
            sql += " WHERE source = ?"
            params.append(source)
        row = await self._db.fetchone(sql, params)
        return int(row[0]) if row else 0

    async def latest_events(self, *, limit: int = 20) -> list[dict[str, Any]]:
        """The newest webhook events first, without their bodies (for the status page)."""
        return await self._events(newest_first=True, limit=limit, body=False)

    async def events(self, *, limit: int = 1000) -> list[dict[str, Any]]:
        """The oldest webhook events first, with their raw bodies."""
        return await self._events(newest_first=False, limit=limit, body=True)

    async def _events(self, *, newest_first: bool, limit: int, body: bool) -> list[dict[str, Any]]:
        columns = "id, source, event, dedupe_key, received_at, task_id, known" + (", body" if body else "")
        order = "DESC" if newest_first else "ASC"
        rows = await self._db.fetchall(
            f"SELECT {columns} FROM webhook_events ORDER BY id {order} LIMIT ?", (limit,)
        )
        out = []
        for r in rows:
            event = {k: r[k] for k in ("id", "source", "event", "dedupe_key", "received_at", "task_id")}
            event["known"] = bool(r["known"])
            if body:
                raw = r["body"]
                event["body"] = bytes(raw) if isinstance(raw, bytes | memoryview) else str(raw).encode()
            out.append(event)
        return out

    async def task(self, task_id: str) -> TaskRow | None:
        row = await self._db.fetchone("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        return TaskRow.from_row(row) if row else None

    async def tasks(self) -> list[TaskRow]:
        return [
            TaskRow.from_row(r) for r in await self._db.fetchall("SELECT * FROM tasks ORDER BY first_seen")
        ]

    async def stock_levels(self) -> dict[str, dict[str, Any]]:
        rows = await self._db.fetchall("SELECT * FROM stock_levels ORDER BY article")
        return {
            r["article"]: {
                "quantity": r["quantity"],
                "threshold": r["threshold"],
                "event": r["last_event"],
                "name": r["name"],
                "updated_at": r["updated_at"],
            }
            for r in rows
        }

    async def activities(self, task_id: str) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT activity_id, description, minutes, at, reporter FROM task_activities WHERE task_id = ?"
            " ORDER BY id",
            (task_id,),
        )
        return [dict(r) for r in rows]

    async def movements(self, *, task_ids: Sequence[str] | None = None) -> list[MovementRow]:
        sql = "SELECT task_id, kind, article, quantity, source, at FROM consumptions"
        params: list[Any] = []
        if task_ids is not None:
            if not task_ids:
                return []
            sql += f" WHERE task_id IN ({','.join('?' * len(task_ids))})"
            params.extend(task_ids)
        sql += " ORDER BY id"
        return [
            MovementRow(r["task_id"], r["kind"], r["article"], float(r["quantity"]), r["source"], r["at"])
            for r in await self._db.fetchall(sql, params)
        ]

    async def firings(self, *, since: float | None = None, rule: str | None = None) -> list[FiringRow]:
        sql = (
            "SELECT f.uuid, f.key, f.rule_id, f.equipment, f.fired_at, f.status, f.suppressed_by, f.task_id,"
            " f.task_state, f.body, o.status AS outbox_status,"
            " COALESCE(o.maybe_committed, 0) AS maybe_committed, o.delivered_at FROM firings f"
            " LEFT JOIN outbox o ON o.firing_id = f.id WHERE 1=1"
        )
        params: list[Any] = []
        if since is not None:
            sql += " AND f.fired_at >= ?"
            params.append(since)
        if rule is not None:
            sql += " AND f.rule_id = ?"
            params.append(rule)
        sql += " ORDER BY f.fired_at, f.id"
        rows = await self._db.fetchall(sql, params)
        # Decoding thousands of firing bodies is CPU work: a worker thread, never the event loop.
        return await asyncio.to_thread(_firing_rows, rows)

    async def tasks_for_firings(self, firing_uuids: Sequence[str]) -> dict[str, list[TaskRow]]:
        out: dict[str, list[TaskRow]] = {}
        for i in range(0, len(firing_uuids), 500):
            chunk = list(firing_uuids[i : i + 500])
            rows = await self._db.fetchall(
                f"SELECT * FROM tasks WHERE firing_uuid IN ({','.join('?' * len(chunk))})"
                " ORDER BY first_seen, task_id",
                chunk,
            )
            for r in rows:
                task = TaskRow.from_row(r)
                out.setdefault(str(task.firing_uuid), []).append(task)
        return out


# ---------------------------------------------------------------------- helpers (inside the transaction)


async def _ensure_task(conn: Any, source: str, task_id: str, now: float) -> None:
    await conn.execute(
        "INSERT INTO tasks(task_id, source, state, first_seen, updated_at) VALUES (?,?,?,?,?)"
        " ON CONFLICT(task_id) DO NOTHING",
        (task_id, source, "unknown", now, now),
    )


async def _upsert_task(conn: Any, source: str, up: TaskUpdate, now: float) -> str | None:
    """Apply one task update; return the firing uuid the task is bound to (if any)."""
    await _ensure_task(conn, source, up.task_id, now)
    rows = await conn.execute_fetchall(
        "SELECT state, firing_uuid, equipment, rule_id, gateway FROM tasks WHERE task_id = ?", (up.task_id,)
    )
    state, firing, equipment, rule_id, gateway = rows[0]
    sets: dict[str, Any] = {"updated_at": now}
    if up.state in TASK_STATES:
        new_rank, old_rank = STATE_RANK[up.state], STATE_RANK.get(state, 0)
        if new_rank > old_rank:  # monotonic: a late "started" never reopens a completed task
            sets["state"] = up.state
        at_col, by_col = f"{up.state}_at", f"{up.state}_by"
        sets[at_col] = up.at if up.at is not None else now
        sets[by_col] = up.by
        # The first time of each step counts: never overwrite a known time with a later delivery.
        time_rows = await conn.execute_fetchall(
            f"SELECT {at_col} FROM tasks WHERE task_id = ?", (up.task_id,)
        )
        if time_rows and time_rows[0][0] is not None:
            del sets[at_col], sets[by_col]
    if equipment is None and up.equipment is not None:
        sets["equipment"] = json.dumps(up.equipment, default=str)
    if rule_id is None and up.rule_id:
        sets["rule_id"] = up.rule_id
    if gateway is None and up.gateway:
        sets["gateway"] = up.gateway
    if firing is None and up.firing_uuid:
        firing = up.firing_uuid
        sets["firing_uuid"] = firing
        first = await conn.execute_fetchall(
            "SELECT task_id FROM tasks WHERE firing_uuid = ? AND task_id != ? AND duplicate_of IS NULL"
            " ORDER BY first_seen, task_id LIMIT 1",
            (firing, up.task_id),
        )
        if first:
            sets["duplicate_of"] = first[0][0]
    assignments = ", ".join(f"{col} = ?" for col in sets)
    await conn.execute(f"UPDATE tasks SET {assignments} WHERE task_id = ?", (*sets.values(), up.task_id))
    return str(firing) if firing else None


def _aggregate(states: Sequence[str]) -> str | None:
    if not states:
        return None
    if "completed" in states:
        return "completed"
    if "started" in states:
        return "started"
    if "scheduled" in states or "unknown" in states:
        return "scheduled"  # a task we heard of (activity first) exists and is not closed: open
    return "canceled"


async def _refresh_firing(conn: Any, firing_uuid: str, now: float) -> TaskClosed | None:
    """Recompute firings.task_id/task_state from the bound tasks; a TaskClosed when the firing just closed."""
    frows = await conn.execute_fetchall(
        "SELECT rule_id, task_state FROM firings WHERE uuid = ?", (firing_uuid,)
    )
    if not frows:
        return None  # a firing of another gateway, or one this database never had
    rule_id, old_state = frows[0]
    trows = await conn.execute_fetchall(
        "SELECT task_id, state, duplicate_of FROM tasks WHERE firing_uuid = ? ORDER BY first_seen, task_id",
        (firing_uuid,),
    )
    primary = next((t[0] for t in trows if t[2] is None), trows[0][0] if trows else None)
    new_state = _aggregate([t[1] for t in trows])
    await conn.execute(
        "UPDATE firings SET task_id = ?, task_state = ? WHERE uuid = ?", (primary, new_state, firing_uuid)
    )
    if new_state in TERMINAL_STATES and old_state not in TERMINAL_STATES and primary is not None:
        return TaskClosed(
            rule_id=str(rule_id),
            firing_uuid=firing_uuid,
            task_id=str(primary),
            outcome=str(new_state),
            at=now,
        )
    return None


def _firing_rows(rows: Sequence[Any]) -> list[FiringRow]:
    return [
        FiringRow(
            uuid=r["uuid"],
            key=r["key"],
            rule_id=r["rule_id"],
            equipment=json.loads(r["equipment"]) if r["equipment"] else None,
            fired_at=r["fired_at"],
            status=r["status"],
            suppressed_by=r["suppressed_by"],
            task_id=r["task_id"],
            task_state=r["task_state"],
            outbox_status=r["outbox_status"],
            body=json.loads(r["body"]),
            maybe_committed=int(r["maybe_committed"]),
            delivered_at=r["delivered_at"],
        )
        for r in rows
    ]
