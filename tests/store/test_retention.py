"""Retention (runtime/housekeeping.py): bounded batches, indexes, consumptions pruned with their events after
`history_retention`, the open task's row kept, pruning off the periodic tick (issues 18.11 and 18.12)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.core.clock import ManualClock
from gateway.core.delivery import Delivery, Outcome
from gateway.core.firings import Firing, TaskSpec
from gateway.core.webhooks import Incoming, LedgerOps, TaskUpdate
from gateway.runtime.housekeeping import Housekeeping, prune
from gateway.store import Store
from gateway.store.outbox import FiringStatus
from tests.store.bigdb import counts, fill

DAY = 86400.0
T0 = 1_767_225_600.0


def firing(key: str, at: float) -> Firing:
    return Firing(
        key=key,
        rule_id="lube",
        fired_at=at,
        while_open="suppress",
        task=TaskSpec(equipment="EQ-1", description="lubricate", assignees=(3,)),
    )


@pytest.fixture
async def clock_store(tmp_path: Path) -> Any:
    clock = ManualClock(T0)
    store = await Store.open(tmp_path, gateway_id="gw", clock=clock)
    yield clock, store
    await store.close()


async def test_the_row_of_a_still_open_task_outlives_retention(clock_store: Any) -> None:
    """Issue 18.12: after delivered_retention the outbox row of a still-open task was deleted and the next
    firing of the rule made a second open task for the same equipment."""
    clock, store = clock_store
    (first,) = await store.outbox.record_firings([firing("lube:1", T0)])
    (item,) = await store.outbox.due(now=T0, limit=1)
    (item,) = await store.outbox.claim([item])
    assert await store.outbox.mark_delivered(
        item, Delivery(Outcome.DONE, 201), backend="mw", quota_month=None
    )
    update = TaskUpdate("T-1", "scheduled", T0 + 60, "Ann", first.uuid)
    await store.ledger.record(
        Incoming("mobility_work", "TaskWasScheduled", "e1", b"{}", "T-1", ops=LedgerOps(tasks=(update,)))
    )
    clock.advance(40 * DAY)  # the task is still open, 40 days on (retention: 30 days)
    await prune(store, now=clock.now(), retention_s=30 * DAY)
    (second,) = await store.outbox.record_firings([firing("lube:2", clock.now())])
    assert second.status is FiringStatus.SUPPRESSED and second.suppressed_by == first.uuid


async def test_suppression_does_not_depend_on_the_outbox_row(clock_store: Any) -> None:
    """The open task is read from the firing itself: even a row gone by other means (an older gateway's
    pruning) leaves the suppression in place."""
    _, store = clock_store
    (first,) = await store.outbox.record_firings([firing("lube:1", T0)])
    update = TaskUpdate("T-1", "started", T0 + 60, "Ann", first.uuid)
    await store.ledger.record(
        Incoming("mobility_work", "TaskWasStarted", "e1", b"{}", "T-1", ops=LedgerOps(tasks=(update,)))
    )
    async with store.db.write() as conn:
        await conn.execute("DELETE FROM outbox")
    (second,) = await store.outbox.record_firings([firing("lube:2", T0 + 10)])
    assert second.status is FiringStatus.SUPPRESSED


async def test_the_deletes_use_indexes(clock_store: Any) -> None:
    """Issue 18.11: without an index on consumptions.event_id / task_activities.event_id, every deleted event
    scanned both tables (foreign keys on)."""
    _, store = clock_store
    for table in ("consumptions", "task_activities"):
        plan = await store.db.fetchall(f"EXPLAIN QUERY PLAN SELECT 1 FROM {table} WHERE event_id = 1")
        detail = " ".join(str(r[-1]) for r in plan)
        assert "USING COVERING INDEX" in detail or "USING INDEX" in detail, (table, detail)


async def test_pruning_runs_in_bounded_batches_and_takes_consumptions_after_history_retention(
    tmp_path: Path, clock_store: Any
) -> None:
    clock, store = clock_store
    fill(tmp_path, events=300, start=T0, outbox_rows=120)
    fill(tmp_path, events=30, start=T0 + 200 * DAY)
    transactions = 0
    write = store.db.write

    def counting_write() -> Any:
        nonlocal transactions
        transactions += 1
        return write()

    store.db.write = counting_write  # type: ignore[method-assign]
    clock.set(T0 + 230 * DAY)
    before = counts(tmp_path)
    # 30-day retention: the old events without consumption or activity go, the others lose their body;
    # history kept (no history retention).
    result = await prune(store, now=clock.now(), retention_s=30 * DAY, batch=50)
    after = counts(tmp_path)
    assert after["outbox"] == 0 and result.outbox_rows == 120
    assert after["consumptions"] == before["consumptions"]
    assert after["task_activities"] == before["task_activities"]
    referenced = 150 + 100 - 50  # every 2nd, every 3rd, both every 6th
    assert after["webhook_events"] == referenced + 30
    assert transactions >= 300 // 50 + 120 // 50  # bounded: never one transaction for everything
    # 100-day history retention: the old consumptions and activities go with their events.
    await prune(store, now=clock.now(), retention_s=30 * DAY, history_s=100 * DAY, batch=50)
    after = counts(tmp_path)
    assert after == {"webhook_events": 30, "consumptions": 15, "task_activities": 10, "outbox": 0}
    store.db.write = write  # type: ignore[method-assign]


async def test_the_periodic_tick_does_not_wait_for_pruning(clock_store: Any, tmp_path: Path) -> None:
    """Issue 18.11: the prune ran inside the tick that feeds the systemd watchdog."""
    clock, store = clock_store
    release = asyncio.Event()
    started = asyncio.Event()
    real = store.outbox.prune_delivered

    async def slow_prune(**kwargs: Any) -> int:
        started.set()
        await release.wait()
        return await real(**kwargs)

    store.outbox.prune_delivered = slow_prune  # type: ignore[method-assign]
    hk = Housekeeping(store, state_dir=lambda: tmp_path, retention_s=lambda: 30 * DAY, clock=clock)
    await asyncio.wait_for(hk.tick(0.0), 10)  # returns while the prune is held (before: hung here)
    await started.wait()
    assert hk.start_prune() is None  # one prune at a time
    release.set()
    assert hk._pruning is not None
    await hk._pruning
    await hk.aclose()
