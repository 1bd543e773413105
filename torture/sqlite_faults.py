"""SQLite faults under load: the real store and dispatcher while the state database fails statements.

Two parts.
1. Load: bursts of firings recorded while the dispatcher's `run()` loop delivers them concurrently (real
   clock, concurrency 4), with every SQLite statement failing ("database or disk is full") at a rate of 2-10%,
   a CMMS that answers done / 503 / lost answers, and a restart in the middle of every round. Then the disk
   heals and the outbox must drain. Verified per round: no request for a firing that was not committed (a
   separate read-only connection checks each one as it leaves); every firing whose burst returned is stored
   and delivered; the CMMS holds at most 1 + maybe_committed tasks per firing (every possible duplicate is
   flagged); `PRAGMA integrity_check` is ok.
2. The model-based test (tests/store/test_outbox_model.py) with a large budget and random seeds.

Usage: python -m torture sqlite_faults   (SQLITE_FAULTS_ROUNDS, MW_MODEL_EXAMPLES, MW_MODEL_STEPS tune it)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path

from gateway.config import DispatcherSection
from gateway.core.clock import SystemClock
from gateway.runtime.dispatcher import Dispatcher
from gateway.store import Store
from gateway.store.db import DB_FILENAME
from gateway.store.faults import FaultPlan, inject
from tests.store.test_outbox_model import FakeCMMS, OutboxModel, firing
from torture import Report

ROUNDS = int(os.environ.get("SQLITE_FAULTS_ROUNDS", "6"))
BURSTS = 40
BURST = 10
SETTINGS = DispatcherSection(
    concurrency=4,
    rate_limit=100_000,
    retry_initial=0.01,
    retry_max=0.05,
    pause_probe_interval=0.05,
    idle_poll=0.01,
)


class MixedCMMS(FakeCMMS):
    """Mostly done; some 503; some lost answers (the task is created, the answer never arrives)."""

    def __init__(self, db_path: Path, rng: random.Random) -> None:
        super().__init__(db_path, SystemClock())  # type: ignore[arg-type]
        self.rng = rng

    async def deliver(self, item):  # type: ignore[no-untyped-def]
        self.answer = self.rng.choices(["done", "retry", "lost"], weights=[80, 12, 8])[0]
        return await super().deliver(item)


async def one_round(report: Report, n: int, rate: float) -> None:
    rng = random.Random(n)
    with tempfile.TemporaryDirectory(prefix="sqlite-faults-") as tmp:
        state = Path(tmp)
        cmms = MixedCMMS(state / DB_FILENAME, rng)
        plan = FaultPlan(rate=rate, rng=random.Random(1000 + n))
        committed: set[str] = set()
        failed_bursts = 0

        async def start() -> tuple[Store, Dispatcher, asyncio.Task[None]]:
            store = await Store.open(state, gateway_id="gw")
            inject(store.db, plan)
            d = Dispatcher(store, cmms, settings=SETTINGS, rng=random.Random(n))  # type: ignore[arg-type]
            return store, d, asyncio.create_task(d.run())

        async def stop(store: Store, task: asyncio.Task[None]) -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await store.close()

        store, d, task = await start()
        for b in range(BURSTS):
            keys = [f"r{i % 5}:{n}-{b}-{i}" for i in range(BURST)]
            try:
                await store.outbox.record_firings([firing(k, i % 7 == 0) for i, k in enumerate(keys)])
                committed.update(keys)
            except sqlite3.Error:
                failed_bursts += 1
            d.wake()
            await asyncio.sleep(rng.random() * 0.01)
            if b == BURSTS // 2:  # a restart mid-load (requests in flight get their grace, then are cut)
                await stop(store, task)
                store, d, task = await start()
        plan.heal()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            counts = await store.outbox.counts()
            if counts["queued"] + counts["retrying"] == 0:
                break
            await asyncio.sleep(0.05)
        await stop(store, task)

        conn = sqlite3.connect(state / DB_FILENAME)
        try:
            rows = conn.execute(
                "SELECT f.key, f.uuid, o.status, o.maybe_committed FROM firings f"
                " LEFT JOIN outbox o ON o.firing_id = f.id"
            ).fetchall()
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
        tasks = Counter(uid for uid, _ in cmms.tasks)
        stored = {key for key, *_ in rows}
        unflagged = [
            uid for _, uid, status, maybe in rows if tasks.get(uid, 0) > (status == "delivered") + maybe
        ]
        label = f"round {n} (fault rate {rate:.0%}, {len(plan.failed)} statements failed)"
        report.fact(
            f"{label}: {len(committed)} firings committed, {failed_bursts} bursts rolled back, "
            f"{len(cmms.sent)} requests, {sum(1 for r in rows if r[3])} rows flagged maybe-duplicated"
        )
        report.check(cmms.uncommitted_sends == [], f"{label}: no request for an uncommitted firing")
        report.check(committed <= stored, f"{label}: every committed firing is stored")
        report.check(
            all(status == "delivered" for key, _, status, _ in rows if key in committed),
            f"{label}: every committed firing delivered after the disk healed",
        )
        report.check(not unflagged, f"{label}: every possible duplicate flagged ({unflagged[:3]})")
        report.check(integrity == "ok", f"{label}: integrity_check {integrity}")


def model(examples: int, steps: int, seed: int) -> str | None:
    """The state machine with a big budget; None when it passed, else the failure."""
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test

    try:
        run_state_machine_as_test(
            OutboxModel,
            settings=settings(
                max_examples=examples,
                stateful_step_count=steps,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            ),
        )
    except BaseException as exc:
        return f"{type(exc).__name__}: {str(exc)[:2000]}"
    return None


async def run(report: Report) -> None:
    logging.getLogger("gateway").setLevel(logging.CRITICAL)  # thousands of expected store errors
    for n in range(ROUNDS):
        await one_round(report, n, rate=[0.02, 0.05, 0.1][n % 3])
    examples = int(os.environ.get("MW_MODEL_EXAMPLES", "300"))
    steps = int(os.environ.get("MW_MODEL_STEPS", "40"))
    for seed in range(3):
        failure = await asyncio.to_thread(model, examples, steps, seed)
        if failure:
            print(failure, flush=True)
        report.check(failure is None, f"model run {seed + 1}: {examples} examples x {steps} steps")
    with contextlib.suppress(Exception):
        logging.getLogger("gateway").setLevel(logging.NOTSET)
