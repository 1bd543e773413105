from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest

from gateway.core.clock import ManualClock
from gateway.core.delivery import Delivery, Outcome
from gateway.core.firings import Firing, Priority, TaskSpec
from gateway.store import FiringStatus, Store


def firing(
    key: str,
    *,
    rule: str = "r1",
    equipment: str | int = "EQ-1",
    priority: Priority = Priority.NORMAL,
    while_open: str = "suppress",
    at: float = 1000.0,
) -> Firing:
    return Firing(
        key=key,
        rule_id=rule,
        fired_at=at,
        task=TaskSpec(equipment=equipment, description="do it", assignees=(3,)),
        priority=priority,
        while_open=while_open,
    )


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(tmp_path, gateway_id="gw", clock=ManualClock(1000.0))
    yield s
    await s.close()


async def test_same_key_is_never_queued_twice(store: Store) -> None:
    first = await store.outbox.record_firings([firing("r1:1", while_open="create")])
    again = await store.outbox.record_firings([firing("r1:1", while_open="create")])
    assert first[0].status is FiringStatus.QUEUED
    assert again[0].status is FiringStatus.DUPLICATE
    assert (await store.outbox.counts())["queued"] == 1


async def test_open_task_suppresses_next_firing_of_same_rule_and_equipment(store: Store) -> None:
    a, b, c = await store.outbox.record_firings(
        [firing("r1:1"), firing("r1:2"), firing("r1:3", equipment="EQ-2")]
    )
    assert a.status is FiringStatus.QUEUED
    assert b.status is FiringStatus.SUPPRESSED and b.suppressed_by == a.uuid
    assert c.status is FiringStatus.QUEUED  # other equipment


async def test_high_priority_leaves_first_then_oldest(store: Store) -> None:
    await store.outbox.record_firings(
        [
            firing("a", rule="a", while_open="create"),
            firing("b", rule="b", priority=Priority.HIGH),
            firing("c", rule="c"),
        ]
    )
    due = await store.outbox.due(now=2000.0, limit=10)
    assert [i.firing.key for i in due] == ["b", "a", "c"]


async def test_retry_dead_and_deliver_transitions(store: Store) -> None:
    await store.outbox.record_firings([firing("a", rule="a"), firing("b", rule="b")])
    a, b = await store.outbox.due(now=1000.0, limit=10)
    await store.outbox.mark_retry(a, Delivery(Outcome.RETRY, 503, "HTTP 503"), next_attempt_at=1500.0)
    await store.outbox.mark_dead(
        b, Delivery(Outcome.DEAD, 400, "bad", details={"property_errors": {"/x": []}})
    )
    assert [i.firing.key for i in await store.outbox.due(now=1400.0, limit=10)] == []
    (again,) = await store.outbox.due(now=1500.0, limit=10)
    assert again.attempts == 1
    await store.outbox.mark_delivered(
        again, Delivery(Outcome.DONE, 201), backend="mobility_work", quota_month="2026-01"
    )
    counts = await store.outbox.counts()
    assert counts["delivered"] == 1 and counts["dead"] == 1
    assert await store.outbox.quota_used("2026-01") == 1
    dead = (await store.outbox.list(statuses=["dead"]))[0]
    assert dead.last_details == {"property_errors": {"/x": []}}
    assert await store.outbox.retry(dead.id)
    assert len(await store.outbox.due(now=1500.0, limit=10)) == 1


async def test_rule_state_saved_with_firings_survives_reopen(tmp_path: Path) -> None:
    s = await Store.open(tmp_path, gateway_id="gw", clock=ManualClock())
    await s.outbox.record_firings([firing("a")], rule_states={"r1": {"next": 50000}})
    await s.close()
    s = await Store.open(tmp_path, gateway_id="gw", clock=ManualClock())
    assert await s.rules.load() == {"r1": {"next": 50000}}
    assert (await s.outbox.counts())["queued"] == 1
    await s.close()


async def test_a_burst_of_firings_is_one_transaction_one_commit(store: Store) -> None:
    statements: list[str] = []
    await store.db.conn.set_trace_callback(statements.append)
    results = await store.outbox.record_firings(
        [firing(f"r1:{i}", while_open="create") for i in range(500)], rule_states={"r1": {"next": 501}}
    )
    await store.db.conn.set_trace_callback(None)
    assert [r.status for r in results] == [FiringStatus.QUEUED] * 500
    assert [s for s in statements if s.split()[0] in ("BEGIN", "COMMIT")] == ["BEGIN IMMEDIATE", "COMMIT"]


async def test_durability_pragmas(store: Store) -> None:
    async def pragma(name: str) -> object:
        row = await store.db.fetchone(f"PRAGMA {name}")
        assert row is not None
        return row[0]

    assert await pragma("journal_mode") == "wal"
    assert await pragma("synchronous") == 2  # FULL: the WAL is fsynced at every commit
    assert await pragma("foreign_keys") == 1


async def test_a_key_repeated_inside_one_burst_is_stored_once(store: Store) -> None:
    a, b = await store.outbox.record_firings([firing("r1:7", while_open="create")] * 2)
    assert (a.status, b.status) == (FiringStatus.QUEUED, FiringStatus.DUPLICATE)
    assert await store.outbox.firing_counts() == {"queued": 1}


async def test_a_failed_burst_writes_nothing(store: Store) -> None:
    bad = firing("r1:2", while_open="create")
    object.__setattr__(bad, "key", None)  # NOT NULL constraint: the whole transaction rolls back
    with pytest.raises(sqlite3.IntegrityError):
        await store.outbox.record_firings([firing("r1:1", while_open="create"), bad])
    assert await store.outbox.firing_counts() == {}
    assert (await store.outbox.record_firings([firing("r1:1", while_open="create")]))[
        0
    ].status is FiringStatus.QUEUED


async def test_a_write_cancelled_mid_transaction_leaves_the_connection_clean(store: Store) -> None:
    started = asyncio.Event()

    async def slow_write() -> None:
        async with store.db.write() as conn:
            await conn.execute("INSERT INTO meta(key, value) VALUES ('a', '1')")
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(slow_write())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not store.db.conn.in_transaction
    assert await store.db.fetchall("SELECT * FROM meta WHERE key='a'") == []
    await store.outbox.record_firings([firing("r1:1")])  # the next write works
    assert (await store.outbox.counts())["queued"] == 1


async def test_claim_recover_and_prune_keep_possible_duplicates(tmp_path: Path) -> None:
    clock = ManualClock(1000.0)
    s = await Store.open(tmp_path, gateway_id="gw", clock=clock)
    await s.outbox.record_firings([firing("a", rule="a"), firing("b", rule="b")])
    a, b = await s.outbox.due(now=1000.0, limit=10)
    await s.outbox.claim([a])
    assert [i.firing.key for i in await s.outbox.due(now=1000.0, limit=10)] == ["b"]  # claimed: not due
    await s.outbox.mark_delivered(b, Delivery(Outcome.DONE, 201), backend="mobility_work", quota_month=None)
    await s.close()  # a dies in flight

    s = await Store.open(tmp_path, gateway_id="gw", clock=clock)
    assert await s.outbox.recover_interrupted(quota_month=lambda ts: "2026-01") == [a.outbox_id]
    assert await s.outbox.recover_interrupted() == []  # once
    assert (await s.outbox.quota_usage("2026-01")).uncertain == 1
    (again,) = await s.outbox.due(now=1000.0, limit=10)
    await s.outbox.mark_delivered(
        again, Delivery(Outcome.DONE, 201), backend="mobility_work", quota_month=None
    )
    clock.advance(100)
    assert await s.outbox.prune_delivered(older_than=1050.0) == 1  # b goes, a (maybe duplicated) stays
    assert [r.firing_key for r in await s.outbox.list()] == ["a"]
    assert (await s.outbox.get(a.outbox_id)).maybe_duplicated  # type: ignore[union-attr]
    await s.close()


# ---------------------------------------------------------------------------------------------- issue 13.1


async def test_a_read_never_sees_a_write_that_is_not_committed(store: Store) -> None:
    inserted, fail = asyncio.Event(), asyncio.Event()

    async def doomed_burst() -> None:  # record_firings failing on its last statement, held open meanwhile
        async with store.db.write() as conn:
            await conn.execute(
                "INSERT INTO firings(key, uuid, rule_id, fired_at, priority, status, body)"
                " VALUES ('k', 'u', 'r', 1, 'normal', 'queued', '{}')"
            )
            await conn.execute(
                "INSERT INTO outbox(firing_id, priority, status, next_attempt_at, created_at, updated_at)"
                " SELECT id, 1, 'queued', 0, 0, 0 FROM firings WHERE key='k'"
            )
            inserted.set()
            await fail.wait()
            raise sqlite3.OperationalError("database or disk is full")

    writer = asyncio.create_task(doomed_burst())
    await inserted.wait()
    reads = asyncio.gather(store.outbox.due(now=1000.0, limit=10), store.outbox.counts())
    for _ in range(20):  # give the reads every chance to run inside the open transaction
        await asyncio.sleep(0)
    fail.set()
    with pytest.raises(sqlite3.OperationalError):
        await writer
    due, counts = await reads
    assert due == [] and counts["queued"] == 0


async def test_claim_takes_only_a_queued_unclaimed_row_that_still_holds_the_firing(store: Store) -> None:
    await store.outbox.record_firings([firing("a", rule="a"), firing("b", rule="b")])
    a, b = await store.outbox.due(now=1000.0, limit=10)
    assert await store.outbox.drop(b.outbox_id)  # dropped between due() and claim()
    assert await store.outbox.claim([b]) == []
    foreign = dataclasses.replace(a, firing_uuid=b.firing_uuid)  # an id seen in a rolled-back transaction
    assert await store.outbox.claim([foreign]) == []
    (claimed,) = await store.outbox.claim([a])
    assert claimed.claim and claimed.outbox_id == a.outbox_id
    assert await store.outbox.claim([a]) == []  # already claimed
    assert not await store.outbox.drop(a.outbox_id)  # in flight: its result decides


async def test_a_result_is_recorded_only_by_the_attempt_that_claimed_the_row(store: Store) -> None:
    await store.outbox.record_firings([firing("a", rule="a")])
    (a,) = await store.outbox.due(now=1000.0, limit=10)
    (claimed,) = await store.outbox.claim([a])
    done = Delivery(Outcome.DONE, 201)
    for stale in (a, dataclasses.replace(a, claim="not-this-attempt")):
        assert not await store.outbox.mark_delivered(stale, done, backend="mw", quota_month="2026-01")
        assert not await store.outbox.mark_dead(stale, Delivery(Outcome.DEAD, 400))
        assert not await store.outbox.mark_retry(stale, Delivery(Outcome.RETRY, 503), next_attempt_at=0)
    row = await store.outbox.get(a.outbox_id)
    assert row is not None and row.status == "queued" and row.attempt_started_at is not None
    assert await store.outbox.mark_delivered(claimed, done, backend="mw", quota_month="2026-01")
    assert not await store.outbox.mark_delivered(claimed, done, backend="mw", quota_month="2026-01")
    assert await store.outbox.quota_used("2026-01") == 1  # counted once


async def test_outbox_ids_are_never_reused(store: Store) -> None:
    await store.outbox.record_firings([firing("a", rule="a")])
    (a,) = await store.outbox.due(now=1000.0, limit=10)
    assert await store.outbox.mark_delivered(a, Delivery(Outcome.DONE, 201), backend="mw", quota_month=None)
    assert await store.outbox.prune_delivered(older_than=2000.0) == 1  # the highest id is gone
    await store.outbox.record_firings([firing("b", rule="b")])
    (b,) = await store.outbox.due(now=1000.0, limit=10)
    assert b.outbox_id > a.outbox_id


async def test_migration_31_keeps_rows_and_ids(tmp_path: Path) -> None:
    from gateway.store.db import DB_FILENAME, Database
    from gateway.store.schema import MIGRATIONS

    old = await Database.open(tmp_path / DB_FILENAME, migrations=[m for m in MIGRATIONS if m[0] < 31])
    body = json.dumps(firing("old", rule="old").to_json())
    async with old.write() as conn:  # a database written by the previous version
        await conn.execute(
            "INSERT INTO firings(id, key, uuid, rule_id, fired_at, priority, status, body)"
            " VALUES (3, 'old', 'u-old', 'old', 1, 'normal', 'queued', ?)",
            (body,),
        )
        await conn.execute(
            "INSERT INTO outbox(id, firing_id, priority, status, next_attempt_at, created_at, updated_at)"
            " VALUES (7, 3, 1, 'queued', 0, 0, 0)"
        )
    await old.close()
    s = await Store.open(tmp_path, gateway_id="gw", clock=ManualClock(1000.0))
    try:
        (kept,) = await s.outbox.due(now=1000.0, limit=10)
        assert (kept.outbox_id, kept.firing_uuid) == (7, "u-old")
        await s.outbox.record_firings([firing("new", rule="new")])
        ids = [r.id for r in await s.outbox.list()]
        assert ids == [7, 8]
        (claimed,) = await s.outbox.claim([kept])
        assert claimed.claim
    finally:
        await s.close()


async def test_the_shadows_to_render_are_found_by_their_own_index(store: Store) -> None:
    """The dispatcher asks on every pass; shadow rows are never pruned, so the query must not read them all
    (through the status index, then sorted: 17 ms a pass with 50,000)."""
    from gateway.store.outbox import UNRENDERED_SHADOWS

    plan = await store.db.fetchall("EXPLAIN QUERY PLAN " + UNRENDERED_SHADOWS, (100,))
    detail = " | ".join(str(r[-1]) for r in plan)
    assert "outbox_unrendered_shadow" in detail and "TEMP B-TREE" not in detail, detail


async def test_migration_33_indexes_an_existing_database(tmp_path: Path) -> None:
    from gateway.store.db import DB_FILENAME, Database
    from gateway.store.schema import MIGRATIONS

    old = await Database.open(tmp_path / DB_FILENAME, migrations=[m for m in MIGRATIONS if m[0] != 33])
    await old.close()  # a database of the previous version: every migration but 33 applied
    s = await Store.open(tmp_path, gateway_id="gw", clock=ManualClock(1000.0))
    try:
        row = await s.db.fetchone("SELECT 1 FROM sqlite_master WHERE name = 'outbox_unrendered_shadow'")
        assert row is not None
    finally:
        await s.close()
