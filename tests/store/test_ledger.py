"""The ledger on a real SQLite database: binding, monotonic states, duplicates, out-of-order, nonces."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.clock import ManualClock
from gateway.core.firings import Firing, SparePart, TaskSpec
from gateway.core.webhooks import (
    ActivityAdd,
    Incoming,
    LedgerOps,
    Movement,
    NonceReplayed,
    NonceUse,
    StockUpdate,
    TaskUpdate,
)
from gateway.store import FiringStatus, Store


def firing(key: str, *, rule: str = "r1", equipment: str = "EQ-1") -> Firing:
    return Firing(
        key=key,
        rule_id=rule,
        fired_at=1000.0,
        task=TaskSpec(
            equipment=equipment,
            description="lubricate",
            assignees=(3,),
            spare_parts=(SparePart("LUBE-5L", 1),),
        ),
    )


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(tmp_path, gateway_id="gw", clock=ManualClock(2000.0))
    yield s
    await s.close()


_seq = iter(range(1, 1_000_000))


def task_event(task_id: str, state: str | None, firing_uuid: str | None, *, at: float = 0.0) -> Incoming:
    n = next(_seq)
    return Incoming(
        source="mobility_work",
        event=f"Task:{state}",
        dedupe_key=f"k{n}",
        body=b"{}",
        task_id=task_id,
        ops=LedgerOps(tasks=(TaskUpdate(task_id, state, at or None, "John Doe", firing_uuid, "r1", "gw"),)),
    )


def consumption(task_id: str, article: str, qty: float, kind: str = "consumed") -> Incoming:
    n = next(_seq)
    return Incoming(
        source="mobility_work",
        event="SparePart",
        dedupe_key=f"c{n}",
        body=b"{}",
        task_id=task_id,
        ops=LedgerOps(movements=(Movement(kind, article, qty, task_id),)),
    )


async def firing_row(store: Store, uuid: str) -> tuple[str | None, str | None]:
    row = await store.db.fetchone("SELECT task_id, task_state FROM firings WHERE uuid = ?", (uuid,))
    assert row is not None
    return row[0], row[1]


async def test_scheduled_binds_task_to_firing_and_states_only_move_forward(store: Store) -> None:
    [rec] = await store.outbox.record_firings([firing("r1:1")])
    await store.ledger.record(task_event("t1", "scheduled", rec.uuid, at=1500.0))
    assert await firing_row(store, rec.uuid) == ("t1", "scheduled")
    await store.ledger.record(task_event("t1", "started", None, at=1600.0))
    assert await firing_row(store, rec.uuid) == ("t1", "started")
    done = await store.ledger.record(task_event("t1", "completed", rec.uuid, at=1700.0))
    assert [(c.rule_id, c.outcome, c.task_id) for c in done.closed] == [("r1", "completed", "t1")]
    # A late "started" (delivered after "completed") records nothing new and does not reopen the task.
    late = await store.ledger.record(task_event("t1", "started", rec.uuid, at=1650.0))
    assert late.closed == ()
    task = await store.ledger.task("t1")
    assert task is not None and task.state == "completed"
    assert (task.scheduled_at, task.started_at, task.completed_at) == (1500.0, 1600.0, 1700.0)
    assert await firing_row(store, rec.uuid) == ("t1", "completed")


async def test_open_task_suppresses_and_completion_rearms_suppression(store: Store) -> None:
    [a] = await store.outbox.record_firings([firing("r1:1")])
    await store.ledger.record(task_event("t1", "scheduled", a.uuid))
    # Delivered rows are no longer "queued": only the webhook state keeps the task open now.
    await store.db.conn.execute("UPDATE outbox SET status='delivered'")
    [b] = await store.outbox.record_firings([firing("r1:2")])
    assert b.status is FiringStatus.SUPPRESSED and b.suppressed_by == a.uuid
    await store.ledger.record(task_event("t1", "canceled", None))
    [c] = await store.outbox.record_firings([firing("r1:3")])
    assert c.status is FiringStatus.QUEUED


async def test_consumption_before_scheduled_is_bound_when_the_binding_arrives(store: Store) -> None:
    [rec] = await store.outbox.record_firings([firing("r1:1")])
    await store.ledger.record(consumption("t9", "LUBE-5L", 2))
    await store.ledger.record(
        Incoming(
            source="mobility_work",
            event="ActivityWasAddedOnTask",
            dedupe_key="act",
            body=b"{}",
            task_id="t9",
            ops=LedgerOps(activities=(ActivityAdd("t9", "19823", "oil", 30, None, "Jo"),)),
        )
    )
    assert await store.ledger.tasks_for_firings([rec.uuid]) == {}
    await store.ledger.record(task_event("t9", "scheduled", rec.uuid))
    tasks = await store.ledger.tasks_for_firings([rec.uuid])
    assert [t.task_id for t in tasks[rec.uuid]] == ["t9"]
    moves = await store.ledger.movements(task_ids=["t9"])
    assert [(m.article, m.quantity) for m in moves] == [("LUBE-5L", 2.0)]
    assert [a["activity_id"] for a in await store.ledger.activities("t9")] == ["19823"]


async def test_two_tasks_for_one_firing_are_flagged_duplicate(store: Store) -> None:
    [rec] = await store.outbox.record_firings([firing("r1:1")])
    await store.ledger.record(task_event("t1", "scheduled", rec.uuid))
    await store.ledger.record(task_event("t2", "scheduled", rec.uuid))
    t2 = await store.ledger.task("t2")
    assert t2 is not None and t2.duplicate_of == "t1"
    assert await firing_row(store, rec.uuid) == ("t1", "scheduled")
    # The firing is closed only when no task of it is open any more... unless one is completed.
    closed = await store.ledger.record(task_event("t2", "canceled", None))
    assert closed.closed == ()
    closed = await store.ledger.record(task_event("t1", "completed", None))
    assert [c.outcome for c in closed.closed] == ["completed"]


async def test_same_dedupe_key_is_stored_once(store: Store) -> None:
    incoming = consumption("t1", "LUBE-5L", 1)
    assert (await store.ledger.record(incoming)).stored
    assert not (await store.ledger.record(incoming)).stored
    assert await store.ledger.event_count() == 1
    assert len(await store.ledger.movements()) == 1


async def test_nonce_replay_survives_a_restart(tmp_path: Path) -> None:
    clock = ManualClock(2000.0)
    store = await Store.open(tmp_path, gateway_id="gw", clock=clock)
    nonce = NonceUse("n1", "hash-a", expires_at=2301.0)
    assert (await store.ledger.record(consumption("t1", "A", 1), nonce=nonce)).stored
    await store.close()
    store = await Store.open(tmp_path, gateway_id="gw", clock=clock)
    try:
        # The very same request again (same body): acknowledged, nothing stored.
        again = await store.ledger.record(consumption("t1", "A", 1), nonce=NonceUse("n1", "hash-a", 2301.0))
        assert not again.stored
        with pytest.raises(NonceReplayed):
            await store.ledger.record(consumption("t1", "B", 1), nonce=NonceUse("n1", "hash-b", 2301.0))
        assert await store.ledger.event_count() == 1
        # Once the window is over the nonce is forgotten (the timestamp check refuses such requests anyway).
        clock.advance(400)
        assert (
            await store.ledger.record(consumption("t1", "C", 1), nonce=NonceUse("n1", "hash-c", 2800.0))
        ).stored
    finally:
        await store.close()


async def test_stock_updates_keep_the_last_level(store: Store) -> None:
    for event, quantity, threshold in (
        ("SparePartStockWasUnderMinThreshold", 98.0, 100.0),
        ("SparePartWasOutOfStock", 0.0, None),
    ):
        await store.ledger.record(
            Incoming(
                source="mobility_work",
                event=event,
                dedupe_key=event,
                body=b"{}",
                ops=LedgerOps(stock=(StockUpdate("SP987678", event, quantity, threshold),)),
            )
        )
    levels = await store.ledger.stock_levels()
    assert levels["SP987678"]["quantity"] == 0.0
    assert levels["SP987678"]["threshold"] == 100.0
    assert levels["SP987678"]["event"] == "SparePartWasOutOfStock"


async def test_retention_prunes_raw_events_but_keeps_the_history(store: Store) -> None:
    await store.ledger.record(task_event("t1", "scheduled", None))
    await store.ledger.record(consumption("t1", "LUBE-5L", 1))
    assert await store.ledger.prune_events(older_than=2000.5) == 2  # one deleted, one emptied
    assert [e["body"] for e in await store.ledger.events()] == [b""]
    assert [m.article for m in await store.ledger.movements()] == ["LUBE-5L"]
    assert (await store.ledger.task("t1")) is not None
