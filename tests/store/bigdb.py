"""A large state database made fast: webhook events (with consumptions and activities pointing at some of
them) and delivered outbox rows written straight with sqlite3, for the retention tests, the torture campaign
and the bench. Not a mock: the real schema, the real Store opens it afterwards."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from gateway.store.db import DB_FILENAME

BODY = json.dumps({"_event": "SparePartWasConsumed", "pad": "x" * 300})


def fill(
    state_dir: Path,
    *,
    events: int,
    start: float,
    step: float = 1.0,
    consumption_every: int = 2,
    activity_every: int = 3,
    outbox_rows: int = 0,
) -> None:
    """Append `events` webhook events received from `start`, one each `step` seconds; every
    `consumption_every`-th carries a consumption, every `activity_every`-th an activity; plus `outbox_rows`
    delivered outbox rows (with their firings) delivered at `start`. The Store must have made the schema."""
    conn = sqlite3.connect(state_dir / DB_FILENAME)
    try:
        conn.execute("PRAGMA foreign_keys=ON")
        base = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM webhook_events").fetchone()[0])
        with conn:
            conn.executemany(
                "INSERT INTO webhook_events(id, source, event, dedupe_key, received_at, task_id, known, body)"
                " VALUES (?, 'mobility_work', 'SparePartWasConsumed', ?, ?, ?, 1, ?)",
                (
                    (base + i, f"k{base + i}", start + i * step, f"T{(base + i) % 997}", BODY)
                    for i in range(1, events + 1)
                ),
            )
            conn.executemany(
                "INSERT INTO consumptions(event_id, source, kind, task_id, article, quantity, at)"
                " VALUES (?, 'mobility_work', 'consumed', ?, 'LUBE-5L', 1, ?)",
                (
                    (base + i, f"T{(base + i) % 997}", start + i * step)
                    for i in range(1, events + 1)
                    if consumption_every and i % consumption_every == 0
                ),
            )
            conn.executemany(
                "INSERT INTO task_activities(task_id, activity_id, minutes, at, event_id)"
                " VALUES (?, ?, 5, ?, ?)",
                (
                    (f"T{(base + i) % 997}", f"a{base + i}", start + i * step, base + i)
                    for i in range(1, events + 1)
                    if activity_every and i % activity_every == 0
                ),
            )
            fbase = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM firings").fetchone()[0])
            conn.executemany(
                "INSERT INTO firings(id, key, uuid, rule_id, equipment, fired_at, priority, status, body)"
                " VALUES (?, ?, ?, 'bulk', ?, ?, 'normal', 'queued', '{}')",
                (
                    (fbase + i, f"bulk:{fbase + i}", f"u-{fbase + i}", f"EQ-{fbase + i}", start)
                    for i in range(1, outbox_rows + 1)
                ),
            )
            conn.executemany(
                "INSERT INTO outbox(firing_id, priority, status, next_attempt_at, created_at, updated_at,"
                " delivered_at, delivered_by) VALUES (?, 1, 'delivered', ?, ?, ?, ?, 'mobility_work')",
                ((fbase + i, start, start, start, start) for i in range(1, outbox_rows + 1)),
            )
    finally:
        conn.close()


def counts(state_dir: Path) -> dict[str, int]:
    conn = sqlite3.connect(state_dir / DB_FILENAME)
    try:
        tables = ("webhook_events", "consumptions", "task_activities", "outbox")
        return {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in tables}
    finally:
        conn.close()
