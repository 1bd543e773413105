"""Firings and the transactional outbox: a firing and its outbox row are written in one transaction.

Over 500 lines on purpose: every transition of the outbox state machine lives here and nowhere else, each
guarded by the status (and claim token) it expects; splitting it would scatter the transitions.

Outbox row states (transitions live in this module only):
    queued     waiting for its first attempt or a retry at next_attempt_at
    delivered  the CMMS accepted it (or dry_run recorded it); kept until the retention period is over
    dead       the CMMS rejected it (4xx); kept with the server's reasons until an operator retries/drops it
    dropped    an operator dropped it; kept for the record
    shadow             a `mode: shadow` firing: the dispatcher stores the request the backend would send
                       (`render_shadow`), nothing is ever sent and no quota used; never becomes queued
    awaiting_approval  a `mode: approve` firing: never claimed; `approve` makes it queued, `reject` rejected
    rejected           an operator rejected it before it was sent; kept for the record

An attempt is *claimed* before its request leaves (`claim`: `attempt_started_at` and a random
`claim_token` are set and fsynced; only a row `claim` returned may be sent) and the claim is cleared with its
result. Every transition that records a result names the row's status and the attempt's token it expects,
so a stale or foreign result changes nothing. Outbox ids are AUTOINCREMENT: never reused. A row still
claimed when the store is opened again was in flight when the gateway died: `recover_interrupted` counts
that attempt as *maybe committed*, like a request whose response was lost. `maybe_committed > 0` on a row
means the CMMS may hold two tasks for this firing; the ledger and the reconciliation look for them, and
`mw-gateway outbox show` says so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import secrets
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.core.clock import Clock
from gateway.core.delivery import Delivery, OutboxItem
from gateway.core.firings import Firing, Priority, firing_uuid
from gateway.store.db import Database


class OutboxStatus(enum.StrEnum):
    QUEUED = "queued"  # waiting for an attempt (first or retry) at next_attempt_at
    DELIVERED = "delivered"  # accepted by the CMMS
    DEAD = "dead"  # rejected by the CMMS; needs a person
    DROPPED = "dropped"  # dropped by an operator
    SHADOW = "shadow"  # mode: shadow; rendered, never sent (docs/rollout.md)
    AWAITING_APPROVAL = "awaiting_approval"  # mode: approve; waits for an operator
    REJECTED = "rejected"  # mode: approve; an operator said no: never sent


class FiringStatus(enum.StrEnum):
    QUEUED = "queued"  # has an outbox row
    SUPPRESSED = "suppressed"  # the rule's previous task for this equipment was still open
    DUPLICATE = "duplicate"  # the same firing key was recorded before (not stored again)
    SHADOW = "shadow"  # mode: shadow: has an outbox row in state shadow, never sent, never suppresses
    AWAITING_APPROVAL = "awaiting_approval"  # mode: approve: has an outbox row waiting for an operator


# Task states from the webhooks that count as "still open" for while_open suppression.
OPEN_TASK_STATES = ("scheduled", "started")
PRUNE_BATCH = 500  # rows per retention transaction: each one short, the lock free in between

INTERRUPTED_ERROR = (
    "interrupted: the gateway stopped while this request was in flight; the CMMS may have created the task"
)


@dataclass(frozen=True)
class Recorded:
    key: str
    uuid: str
    status: FiringStatus
    suppressed_by: str | None = None


@dataclass(frozen=True)
class QuotaUsage:
    """Tasks of one month: delivered (the CMMS said so) and uncertain (a request whose answer was lost)."""

    delivered: int = 0
    uncertain: int = 0

    @property
    def total(self) -> int:
        return self.delivered + self.uncertain


@dataclass(frozen=True)
class OutboxRow:
    id: int
    firing_uuid: str
    firing_key: str
    rule_id: str
    priority: str
    status: OutboxStatus
    attempts: int
    next_attempt_at: float
    created_at: float
    updated_at: float
    delivered_at: float | None
    delivered_by: str | None
    last_status_code: int | None
    last_error: str | None
    last_details: Any
    last_request: Any
    remote_id: str | None
    firing: Firing
    first_attempt_at: float | None = None
    attempt_started_at: float | None = None  # set while a request is in flight
    maybe_committed: int = 0  # attempts that may have created a task without us seeing the answer
    maybe_committed_at: float | None = None
    dead_at: float | None = None
    decided_at: float | None = None  # approve/reject: when
    decided_by: str | None = None  # approve/reject: who (cli, web:<user>)
    rendered_at: float | None = None  # shadow: when the rendering was stored in last_request

    @property
    def maybe_duplicated(self) -> bool:
        """The CMMS may hold more than one task for this firing (at-least-once: the ledger checks)."""
        return self.maybe_committed > 0

    @staticmethod
    def from_row(row: sqlite3.Row) -> OutboxRow:
        return OutboxRow(
            id=row["id"],
            firing_uuid=row["uuid"],
            firing_key=row["key"],
            rule_id=row["rule_id"],
            priority=row["fpriority"],
            status=OutboxStatus(row["status"]),
            attempts=row["attempts"],
            next_attempt_at=row["next_attempt_at"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            delivered_at=row["delivered_at"],
            delivered_by=row["delivered_by"],
            last_status_code=row["last_status_code"],
            last_error=row["last_error"],
            last_details=json.loads(row["last_details"]) if row["last_details"] else None,
            last_request=json.loads(row["last_request"]) if row["last_request"] else None,
            remote_id=row["remote_id"],
            firing=Firing.from_json(json.loads(row["body"])),
            first_attempt_at=row["first_attempt_at"],
            attempt_started_at=row["attempt_started_at"],
            maybe_committed=row["maybe_committed"],
            maybe_committed_at=row["maybe_committed_at"],
            dead_at=row["dead_at"],
            decided_at=row["decided_at"],
            decided_by=row["decided_by"],
            rendered_at=row["rendered_at"],
        )


_SELECT = """
    SELECT o.*, f.uuid, f.key, f.rule_id, f.priority AS fpriority, f.body
    FROM outbox o JOIN firings f ON f.id = o.firing_id
"""

# Asked on every dispatcher pass: served by the partial index outbox_unrendered_shadow (migration 33).
UNRENDERED_SHADOWS = _SELECT + " WHERE o.status='shadow' AND o.rendered_at IS NULL ORDER BY o.id LIMIT ?"


def equipment_key(firing: Firing) -> str:
    return json.dumps(firing.task.equipment)


def _item(row: sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        outbox_id=row["id"],
        firing_uuid=row["uuid"],
        firing=Firing.from_json(json.loads(row["body"])),
        attempts=row["attempts"],
        maybe_committed=row["maybe_committed"],
    )


class Outbox:
    def __init__(self, db: Database, clock: Clock, gateway_id: str) -> None:
        self._db = db
        self._clock = clock
        self._gateway_id = gateway_id
        self._installation_id: str | None = None

    async def installation_id(self) -> str:
        """This database's installation id (meta `installation_id`, made by the migration that added it)."""
        if self._installation_id is None:
            row = await self._db.fetchone("SELECT value FROM meta WHERE key = 'installation_id'")
            if row is None:
                raise RuntimeError("the state database has no installation_id: it was not migrated")
            self._installation_id = str(row[0])
        return self._installation_id

    # ------------------------------------------------------------------ writing firings

    async def record_firings(
        self, firings: Sequence[Firing], *, rule_states: Mapping[str, Any] | None = None
    ) -> list[Recorded]:
        """Write firings (and the rule states that go with them) in ONE transaction: group commit.

        A firing whose key is already stored (or repeated within `firings`) is reported as DUPLICATE and not
        written again. A firing whose rule has `while_open: suppress` while the previous task of the same rule
        and equipment is still open (queued for delivery, or scheduled/started per the webhooks) is stored as
        SUPPRESSED, without an outbox row.

        Rule modes (docs/rollout.md): a `mode: shadow` firing is stored as SHADOW with an outbox row in state
        shadow; while_open neither suppresses it nor lets it suppress a live firing (a shadow task is never
        open in the CMMS). A `mode: approve` firing gets an outbox row in state awaiting_approval and takes
        part in while_open like a queued one (approved, it becomes the open task).
        """
        now = self._clock.now()
        results: list[Recorded] = []
        installation = await self.installation_id()
        async with self._db.write() as conn:
            stored = await _stored_keys(conn, [f.key for f in firings])
            queued_here: dict[tuple[str, str], str] = {}  # (rule, equipment) -> uuid queued in this burst
            firing_rows: list[tuple[Any, ...]] = []
            outbox_rows: list[tuple[Any, ...]] = []
            for firing in firings:
                uid = firing_uuid(installation, self._gateway_id, firing.key)
                if firing.key in stored:
                    results.append(Recorded(firing.key, uid, FiringStatus.DUPLICATE))
                    continue
                stored.add(firing.key)
                eq = equipment_key(firing)
                blocker = None
                shadow = firing.mode == "shadow"
                if firing.while_open == "suppress" and not shadow:
                    blocker = queued_here.get((firing.rule_id, eq)) or await self._open_firing(
                        conn, firing.rule_id, eq
                    )
                status = FiringStatus.SUPPRESSED if blocker else FiringStatus.QUEUED
                if shadow:
                    status = FiringStatus.SHADOW
                firing_rows.append(
                    (
                        firing.key,
                        uid,
                        firing.rule_id,
                        eq,
                        firing.fired_at,
                        str(firing.priority),
                        str(status),
                        blocker,
                        json.dumps(firing.to_json(), default=str),
                    )
                )
                if status is not FiringStatus.SUPPRESSED:
                    out_status = OutboxStatus.QUEUED
                    if shadow:
                        out_status = OutboxStatus.SHADOW
                    else:
                        queued_here[(firing.rule_id, eq)] = uid
                        if firing.mode == "approve":
                            out_status = OutboxStatus.AWAITING_APPROVAL
                            status = FiringStatus.AWAITING_APPROVAL
                    priority = 0 if firing.priority is Priority.HIGH else 1
                    outbox_rows.append((priority, out_status.value, now, now, now, firing.key))
                results.append(Recorded(firing.key, uid, status, blocker))
            # Few statements whatever the burst size: the whole burst costs one fsync and little CPU.
            if firing_rows:
                await conn.executemany(
                    "INSERT INTO firings(key, uuid, rule_id, equipment, fired_at, priority, status,"
                    " suppressed_by, body) VALUES (?,?,?,?,?,?,?,?,?)",
                    firing_rows,
                )
            if outbox_rows:
                await conn.executemany(
                    "INSERT INTO outbox(firing_id, priority, status, next_attempt_at, created_at, updated_at)"
                    " SELECT id, ?, ?, ?, ?, ? FROM firings WHERE key = ?",
                    outbox_rows,
                )
            if rule_states:
                await _save_rule_states(conn, rule_states, now)
        return results

    @staticmethod
    async def _open_firing(conn: Any, rule_id: str, equipment: str) -> str | None:
        """The uuid of this rule's latest firing for this equipment if its task is still open, else None."""
        rows = await conn.execute_fetchall(
            """
            SELECT f.uuid, f.task_state, o.status FROM firings f LEFT JOIN outbox o ON o.firing_id = f.id
            WHERE f.rule_id = ? AND f.equipment = ? AND f.status = 'queued'
            ORDER BY f.fired_at DESC, f.id DESC LIMIT 1
            """,
            (rule_id, equipment),
        )
        if not rows:
            return None
        uid, task_state, out_status = rows[0]
        if task_state in OPEN_TASK_STATES:
            return str(uid)
        if task_state is None and out_status in (OutboxStatus.QUEUED, OutboxStatus.AWAITING_APPROVAL):
            return str(uid)  # not yet delivered: it will become an open task
        return None

    # ------------------------------------------------------------------ the dispatcher's side

    async def due(
        self, *, now: float, limit: int, high_only: bool = False, exclude: Collection[int] = ()
    ) -> list[OutboxItem]:
        """Unclaimed rows ready for an attempt, except `exclude` (ids the dispatcher already holds): high
        priority first, then oldest first."""
        sql = _SELECT + " WHERE o.status='queued' AND o.next_attempt_at <= ? AND o.attempt_started_at IS NULL"
        params: list[Any] = [now]
        if high_only:
            sql += " AND o.priority = 0"
        if exclude:
            sql += f" AND o.id NOT IN ({','.join('?' * len(exclude))})"
            params.extend(exclude)
        sql += " ORDER BY o.priority, o.created_at, o.id LIMIT ?"
        params.append(limit)
        return [_item(r) for r in await self._db.fetchall(sql, params)]

    async def next_due_at(self, *, high_only: bool = False) -> float | None:
        """When the next unclaimed queued row becomes due (None: nothing queued)."""
        sql = "SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'queued' AND attempt_started_at IS NULL"
        if high_only:
            sql += " AND priority = 0"
        row = await self._db.fetchone(sql)
        return None if row is None or row[0] is None else float(row[0])

    async def claim(self, items: Sequence[OutboxItem]) -> list[OutboxItem]:
        """Durably mark these rows as in flight, in one transaction, BEFORE their requests leave.

        Returns the items actually claimed, each carrying its claim token (`item.claim`): only those may be
        sent. A row that is no longer queued, already claimed, or no longer holds the item's firing (an id
        the item saw in a transaction that was rolled back) is not claimed.
        """
        if not items:
            return []
        now = self._clock.now()
        claimed: list[OutboxItem] = []
        async with self._db.write() as conn:
            for item in items:
                token = secrets.token_hex(8)
                cur = await conn.execute(
                    "UPDATE outbox SET attempt_started_at=?, claim_token=?,"
                    " first_attempt_at=COALESCE(first_attempt_at, ?)"
                    " WHERE id=? AND status='queued' AND attempt_started_at IS NULL AND claim_token IS NULL"
                    " AND firing_id = (SELECT id FROM firings WHERE uuid=?)",
                    (now, token, now, item.outbox_id, item.firing_uuid),
                )
                if cur.rowcount == 1:
                    claimed.append(dataclasses.replace(item, claim=token))
        return claimed

    async def release(self, items: Sequence[OutboxItem]) -> int:
        """Clear claims whose request never left (nothing was sent): the rows are simply due again.
        Only the claims these items hold; returns how many were released."""
        if not items:
            return 0
        released = 0
        async with self._db.write() as conn:
            for item in items:
                cur = await conn.execute(
                    "UPDATE outbox SET attempt_started_at=NULL, claim_token=NULL"
                    " WHERE id=? AND status='queued' AND claim_token IS ?",
                    (item.outbox_id, item.claim),
                )
                released += int(cur.rowcount or 0)
        return released

    async def recover_interrupted(self, *, quota_month: Callable[[float], str] | None = None) -> list[int]:
        """Rows claimed by a previous run that died mid-request: count that attempt as maybe committed.

        `quota_month(ts)` names the quota month of an attempt when the backend counts against a quota: such an
        attempt may have used one task of it. Returns the ids of the rows concerned.
        """
        now = self._clock.now()
        async with self._db.write() as conn:
            rows = await conn.execute_fetchall(
                "SELECT id, attempt_started_at FROM outbox WHERE attempt_started_at IS NOT NULL"
            )
            for row_id, started in rows:
                await conn.execute(
                    "UPDATE outbox SET attempt_started_at=NULL, claim_token=NULL,"
                    " maybe_committed=maybe_committed+1,"
                    " maybe_committed_at=?, attempts=attempts+1, updated_at=?,"
                    " last_error=CASE WHEN status='queued' THEN ? ELSE last_error END,"
                    " last_status_code=CASE WHEN status='queued' THEN NULL ELSE last_status_code END,"
                    " next_attempt_at=CASE WHEN status='queued' THEN ? ELSE next_attempt_at END"
                    " WHERE id=?",
                    (started, now, INTERRUPTED_ERROR, now, row_id),
                )
                if quota_month is not None:
                    await _count_quota(conn, quota_month(started), uncertain=1)
        return [int(r[0]) for r in rows]

    # Every transition that records an attempt's result is guarded twice: the row must still be queued, and
    # it must hold the item's claim (`claim_token IS ?`: the token of the attempt, or NULL for a row nobody
    # claimed, e.g. an operator's tool). A result that does not match changes nothing and returns False.
    _GUARD = " WHERE id=? AND status='queued' AND claim_token IS ?"

    async def mark_delivered(
        self, item: OutboxItem, delivery: Delivery, *, backend: str, quota_month: str | None
    ) -> bool:
        now = self._clock.now()
        async with self._db.write() as conn:
            cur = await conn.execute(
                "UPDATE outbox SET status='delivered', attempts=attempts+1, delivered_at=?, delivered_by=?,"
                " updated_at=?, last_status_code=?, last_error=NULL, last_details=NULL, last_request=?,"
                " remote_id=?, attempt_started_at=NULL, claim_token=NULL" + self._GUARD,
                (
                    now,
                    backend,
                    now,
                    delivery.status_code,
                    _dumps(delivery.request),
                    delivery.remote_id,
                    item.outbox_id,
                    item.claim,
                ),
            )
            if cur.rowcount != 1:
                return False
            if quota_month is not None:
                await _count_quota(conn, quota_month, delivered=1)
        return True

    async def mark_retry(
        self,
        item: OutboxItem,
        delivery: Delivery,
        *,
        next_attempt_at: float,
        count_attempt: bool = True,
        quota_month: str | None = None,
    ) -> bool:
        """Keep the row queued for another attempt. A `maybe_committed` delivery is counted on the row and,
        when `quota_month` is given, as an uncertain task of that month."""
        now = self._clock.now()
        maybe = 1 if delivery.maybe_committed else 0
        async with self._db.write() as conn:
            cur = await conn.execute(
                "UPDATE outbox SET attempts=attempts+?, next_attempt_at=?, updated_at=?, last_status_code=?,"
                " last_error=?, last_details=?, last_request=?, attempt_started_at=NULL, claim_token=NULL,"
                " maybe_committed=maybe_committed+?,"
                " maybe_committed_at=CASE WHEN ? THEN ? ELSE maybe_committed_at END" + self._GUARD,
                (
                    1 if count_attempt else 0,
                    next_attempt_at,
                    now,
                    delivery.status_code,
                    delivery.error,
                    _dumps(delivery.details),
                    _dumps(delivery.request),
                    maybe,
                    maybe,
                    now,
                    item.outbox_id,
                    item.claim,
                ),
            )
            if cur.rowcount != 1:
                return False
            if maybe and quota_month is not None:
                await _count_quota(conn, quota_month, uncertain=1)
        return True

    async def mark_dead(self, item: OutboxItem, delivery: Delivery) -> bool:
        now = self._clock.now()
        async with self._db.write() as conn:
            cur = await conn.execute(
                "UPDATE outbox SET status='dead', attempts=attempts+1, updated_at=?, dead_at=?,"
                " last_status_code=?, last_error=?, last_details=?, last_request=?, attempt_started_at=NULL,"
                " claim_token=NULL" + self._GUARD,
                (
                    now,
                    now,
                    delivery.status_code,
                    delivery.error,
                    _dumps(delivery.details),
                    _dumps(delivery.request),
                    item.outbox_id,
                    item.claim,
                ),
            )
            return cur.rowcount == 1

    async def release_backoff(self, *, now: float) -> int:
        """After an outage: every queued row waiting out a backoff is due now, so that the order is again
        high priority first, then oldest first (not "whichever failed last")."""
        async with self._db.write() as conn:
            cur = await conn.execute(
                "UPDATE outbox SET next_attempt_at=? WHERE status='queued' AND next_attempt_at > ?"
                " AND attempt_started_at IS NULL",
                (now, now),
            )
            return int(cur.rowcount or 0)

    # ------------------------------------------------------------------ operators (CLI) and status

    async def get(self, outbox_id: int) -> OutboxRow | None:
        row = await self._db.fetchone(_SELECT + " WHERE o.id = ?", (outbox_id,))
        return OutboxRow.from_row(row) if row else None

    async def maybe_duplicated(self) -> list[OutboxRow]:
        """Every row whose firing may have become more than one task (for the ledger, the reconciliation)."""
        rows = await self._db.fetchall(_SELECT + " WHERE o.maybe_committed > 0 ORDER BY o.id")
        return [OutboxRow.from_row(r) for r in rows]

    async def retry(self, outbox_id: int) -> bool:
        """Put a dead, dropped (or queued) row back for an immediate attempt. False when it cannot be."""
        now = self._clock.now()
        async with self._db.write() as conn:
            cur = await conn.execute(
                "UPDATE outbox SET status='queued', next_attempt_at=?, updated_at=?, dead_at=NULL "
                "WHERE id=? AND status IN ('dead','queued','dropped')",
                (now, now, outbox_id),
            )
            return bool(cur.rowcount)

    async def drop(self, outbox_id: int) -> bool:
        now = self._clock.now()
        async with self._db.write() as conn:
            cur = await conn.execute(
                "UPDATE outbox SET status='dropped', updated_at=? WHERE id=? AND status IN ('dead','queued')"
                " AND attempt_started_at IS NULL",  # a request in flight: its result decides
                (now, outbox_id),
            )
            return bool(cur.rowcount)

    # ------------------------------------------------------------------ rule modes (docs/rollout.md)

    async def approve(self, outbox_id: int, *, by: str = "cli") -> bool:
        """Release a row awaiting approval: it becomes queued, due now (then normal delivery, quota
        applies). False when the row is not awaiting approval (unknown, already decided, or another mode)."""
        now = self._clock.now()
        async with self._db.write() as conn:
            cur = await conn.execute(
                "UPDATE outbox SET status='queued', next_attempt_at=?, updated_at=?, decided_at=?,"
                " decided_by=? WHERE id=? AND status='awaiting_approval'",
                (now, now, now, by, outbox_id),
            )
            return bool(cur.rowcount)

    async def reject(self, outbox_id: int, *, by: str = "cli") -> bool:
        """Discard a row awaiting approval: it is kept as rejected and never sent. False as for approve."""
        now = self._clock.now()
        async with self._db.write() as conn:
            cur = await conn.execute(
                "UPDATE outbox SET status='rejected', updated_at=?, decided_at=?, decided_by=?"
                " WHERE id=? AND status='awaiting_approval'",
                (now, now, by, outbox_id),
            )
            return bool(cur.rowcount)

    async def unrendered_shadows(self, *, limit: int = 100) -> list[OutboxItem]:
        """Shadow rows whose rendering is not stored yet, oldest first."""
        rows = await self._db.fetchall(UNRENDERED_SHADOWS, (limit,))
        return [_item(r) for r in rows]

    async def render_shadow(self, outbox_id: int, request: Any, *, error: str | None = None) -> bool:
        """Store what the backend would have sent for a shadow row (or why it could not build it). The row
        stays shadow: nothing ever sends it, whatever the rule's mode later."""
        now = self._clock.now()
        async with self._db.write() as conn:
            cur = await conn.execute(
                "UPDATE outbox SET rendered_at=?, updated_at=?, last_request=?, last_error=?"
                " WHERE id=? AND status='shadow'",
                (now, now, _dumps(request), error, outbox_id),
            )
            return bool(cur.rowcount)

    async def approval_queue(self) -> tuple[int, float | None]:
        """(rows awaiting approval, created_at of the oldest or None)."""
        row = await self._db.fetchone(
            "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE status='awaiting_approval'"
        )
        if row is None:
            return 0, None
        return int(row[0]), None if row[1] is None else float(row[1])

    async def counts(self) -> dict[str, int]:
        rows = await self._db.fetchall(
            "SELECT CASE WHEN status='queued' AND attempts>0 THEN 'retrying' ELSE status END AS s, COUNT(*) "
            "FROM outbox GROUP BY s"
        )
        out = {"queued": 0, "retrying": 0, "delivered": 0, "dead": 0, "dropped": 0}
        out.update({"shadow": 0, "awaiting_approval": 0, "rejected": 0})
        out.update({r[0]: r[1] for r in rows})
        return out

    async def maybe_duplicated_count(self) -> int:
        row = await self._db.fetchone("SELECT COUNT(*) FROM outbox WHERE maybe_committed > 0")
        return int(row[0]) if row else 0

    async def quota_usage(self, month: str) -> QuotaUsage:
        row = await self._db.fetchone("SELECT used, uncertain FROM quota_usage WHERE month = ?", (month,))
        return QuotaUsage(int(row[0]), int(row[1])) if row else QuotaUsage()

    async def quota_used(self, month: str) -> int:
        """Tasks of `month` counted against the quota: delivered + uncertain (a lost answer may hide one)."""
        return (await self.quota_usage(month)).total

    async def prune_delivered(self, *, older_than: float, batch: int = PRUNE_BATCH) -> int:
        """Delete delivered outbox rows (their firings stay) delivered before `older_than`, `batch` rows per
        transaction (other writers get the lock in between: issue 18.11).

        Rows that may have made a duplicate task are kept: the reconciliation still needs them. Rows whose
        task is still open (scheduled or started per the webhooks) are kept too: "one open task per rule and
        equipment" looks at them (issue 18.12; `_open_firing` no longer needs the row either).
        """
        total = 0
        while True:
            async with self._db.write() as conn:
                cur = await conn.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT o.id FROM outbox o WHERE o.status='delivered'"
                    " AND o.delivered_at < ? AND o.maybe_committed = 0 AND NOT EXISTS (SELECT 1 FROM"
                    f" firings f WHERE f.id = o.firing_id AND f.task_state IN {OPEN_TASK_STATES!r}) LIMIT ?)",
                    (older_than, batch),
                )
                deleted = int(cur.rowcount or 0)
            total += deleted
            if deleted < batch:
                return total
            await asyncio.sleep(0)

    async def firing_counts(self) -> dict[str, int]:
        rows = await self._db.fetchall("SELECT status, COUNT(*) FROM firings GROUP BY status")
        return {r[0]: r[1] for r in rows}

    # `list` last: below it, the name would shadow the builtin in annotations
    async def list(
        self,
        *,
        statuses: Sequence[str] | None = None,
        delivered_by: str | None = None,
        maybe_duplicated: bool = False,
        limit: int = 200,
    ) -> list[OutboxRow]:
        sql = _SELECT + " WHERE 1=1"
        params: list[Any] = []
        if statuses:
            sql += f" AND o.status IN ({','.join('?' * len(statuses))})"
            params.extend(statuses)
        if delivered_by is not None:
            sql += " AND o.delivered_by = ?"
            params.append(delivered_by)
        if maybe_duplicated:
            sql += " AND o.maybe_committed > 0"
        sql += " ORDER BY o.priority, o.created_at, o.id LIMIT ?"
        params.append(limit)
        return [OutboxRow.from_row(r) for r in await self._db.fetchall(sql, params)]


async def _stored_keys(conn: Any, keys: Sequence[str]) -> set[str]:
    """Which of `keys` are stored already (one query per 500 keys)."""
    unique = list(dict.fromkeys(keys))
    found: set[str] = set()
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        rows = await conn.execute_fetchall(
            f"SELECT key FROM firings WHERE key IN ({','.join('?' * len(chunk))})", chunk
        )
        found.update(str(r[0]) for r in rows)
    return found


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


async def _count_quota(conn: Any, month: str, *, delivered: int = 0, uncertain: int = 0) -> None:
    await conn.execute(
        "INSERT INTO quota_usage(month, used, uncertain) VALUES (?, ?, ?)"
        " ON CONFLICT(month) DO UPDATE SET used = used + excluded.used,"
        " uncertain = uncertain + excluded.uncertain",
        (month, delivered, uncertain),
    )


async def _save_rule_states(conn: Any, states: Mapping[str, Any], now: float) -> None:
    for rule_id, state in states.items():
        if state is None:
            await conn.execute("DELETE FROM rule_state WHERE rule_id = ?", (rule_id,))
        else:
            await conn.execute(
                "INSERT INTO rule_state(rule_id, state, updated_at) VALUES (?,?,?)"
                " ON CONFLICT(rule_id) DO UPDATE SET state=excluded.state, updated_at=excluded.updated_at",
                (rule_id, json.dumps(state), now),
            )
