"""The durable outbox: how fast firings become durable, how fast the dispatcher drains them to the local
Mobility Work simulator, how big the database grows, and how long a restart takes with a large backlog.

Every figure is a median of a few runs, with the bare SQLite commit rate (same pragmas, same disk) measured
in the same run as the reference: a durable single firing can never beat one fsynced commit.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.cmms.mobility_work import MobilityWorkBackend
from gateway.cmms.schema import MobilityWorkConfig
from gateway.config import DispatcherSection
from gateway.core.clock import ManualClock
from gateway.core.firings import Evidence, Firing, TaskSpec, firing_uuid
from gateway.runtime.dispatcher import Dispatcher
from gateway.sim.mobility_work import run_mobility_work_sim
from gateway.store import DB_FILENAME, Store
from gateway.store.db import PRAGMAS

RUNS = 3
SINGLE_N = 300
BURST_N, BURST_SIZE = 5000, 500
DRAIN_N = 600
BACKLOG_N = 100_000
API_KEY = "bench-key-0123456789"


def make_firing(i: int, at: float = 1_767_225_600.0) -> Firing:
    """A realistic firing: a rendered description, two assignees, a tag, evidence and metadata."""
    return Firing(
        key=f"press1-lubrication:{(i + 1) * 50000}",
        rule_id="press1-lubrication",
        fired_at=at + i,
        task=TaskSpec(
            equipment="EQ-PRESS-01",
            description=f"Lubricate press 1 at {(i + 1) * 50000} strokes",
            assignees=("maintenance@factory.example", 3),
            tags=("preventive",),
            duration_s=7200.0,
        ),
        evidence=(Evidence("press1.strokes", (i + 1) * 50000, at + i, "good"),),
        metadata={"line": "press-line-1"},
        while_open="create",
    )


def median_of(values: list[float]) -> float:
    return statistics.median(values)


def bare_commits_per_s(directory: Path, n: int = SINGLE_N) -> float:
    path = directory / "bare.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma, value in PRAGMAS:
        conn.execute(f"PRAGMA {pragma}={value}")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    body = json.dumps(make_firing(0).to_json())
    started = time.perf_counter()
    for _ in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t(body) VALUES (?)", (body,))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return n / elapsed


async def with_store(directory: Path, fn: Callable[[Store], Awaitable[float]]) -> float:
    store = await Store.open(directory, gateway_id="bench", clock=ManualClock())
    try:
        return await fn(store)
    finally:
        await store.close()


async def single_firings_per_s(store: Store) -> float:
    firings = [make_firing(i) for i in range(SINGLE_N)]
    started = time.perf_counter()
    for f in firings:
        await store.outbox.record_firings([f])
    return SINGLE_N / (time.perf_counter() - started)


async def burst_firings_per_s(store: Store) -> float:
    firings = [make_firing(i) for i in range(BURST_N)]
    started = time.perf_counter()
    for start in range(0, BURST_N, BURST_SIZE):
        await store.outbox.record_firings(firings[start : start + BURST_SIZE])
    return BURST_N / (time.perf_counter() - started)


async def drain_tasks_per_s(directory: Path) -> float:
    async with run_mobility_work_sim(api_key=API_KEY) as sim:
        config = MobilityWorkConfig(kind="mobility_work", url=sim.url, api_key=API_KEY, plan="ultimate")  # type: ignore[arg-type]
        backend = MobilityWorkBackend(config, gateway_id="bench")
        store = await Store.open(directory, gateway_id="bench")
        try:
            await backend.start()
            await store.outbox.record_firings([make_firing(i) for i in range(DRAIN_N)])
            settings = DispatcherSection(concurrency=8, rate_limit=100_000, idle_poll=0.05)
            dispatcher = Dispatcher(store, backend, settings=settings, rng=random.Random(1))
            started = time.perf_counter()
            runner = asyncio.create_task(dispatcher.run())
            try:
                for _ in range(60_000):
                    if (await store.outbox.counts())["delivered"] >= DRAIN_N:
                        break
                    await asyncio.sleep(0.01)
            finally:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
            elapsed = time.perf_counter() - started
            assert len(sim.state.tasks) == DRAIN_N
            return DRAIN_N / elapsed
        finally:
            await backend.aclose()
            await store.close()


async def build_backlog(directory: Path) -> int:
    """100,000 queued firings, written row for row as record_firings writes them (schema, JSON bodies,
    index entries), in large transactions so that building it does not dominate the run. Returns bytes."""
    store = await Store.open(directory, gateway_id="bench", clock=ManualClock())
    await store.close()
    path = directory / DB_FILENAME
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma, value in PRAGMAS:
        conn.execute(f"PRAGMA {pragma}={value}")
    now = 1_767_225_600.0
    conn.execute("BEGIN IMMEDIATE")
    for i in range(BACKLOG_N):
        f = make_firing(i)
        cur = conn.execute(
            "INSERT INTO firings(key, uuid, rule_id, equipment, fired_at, priority, status, body)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (
                f.key,
                firing_uuid("bench", "bench", f.key),
                f.rule_id,
                json.dumps(f.task.equipment),
                f.fired_at,
                str(f.priority),
                "queued",
                json.dumps(f.to_json(), default=str),
            ),
        )
        conn.execute(
            "INSERT INTO outbox(firing_id, priority, status, next_attempt_at, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?)",
            (cur.lastrowid, 1, "queued", now, now, now),
        )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return db_bytes(directory)


def db_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob(DB_FILENAME + "*"))


async def restart_s(directory: Path) -> float:
    """Open the store (migrations checked), recover interrupted attempts, first due query."""
    started = time.perf_counter()
    store = await Store.open(directory, gateway_id="bench")
    try:

        class _Idle:
            kind = "bench"
            counts_against_quota = True

        dispatcher = Dispatcher(store, _Idle(), quota=50_000)  # type: ignore[arg-type]
        await dispatcher.recover()
        items = await store.outbox.due(now=time.time(), limit=4)
        await store.outbox.next_due_at()
        assert len(items) == 4
        return time.perf_counter() - started
    finally:
        await store.close()


def run() -> list[tuple[str, str, str]]:
    return asyncio.run(_run())


async def _run() -> list[tuple[str, str, str]]:
    bare, single, burst, drain, restart = [], [], [], [], []
    size = 0
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp:
        root = Path(tmp)
        for r in range(RUNS):
            d = root / f"run{r}"
            d.mkdir()
            bare.append(bare_commits_per_s(d))
            single.append(await with_store(d / "single", single_firings_per_s))
            burst.append(await with_store(d / "burst", burst_firings_per_s))
            drain.append(await drain_tasks_per_s(d / "drain"))
        backlog = root / "backlog"
        backlog.mkdir()
        size = await build_backlog(backlog)
        for _ in range(RUNS):
            restart.append(await restart_s(backlog))
    b, s, bu = median_of(bare), median_of(single), median_of(burst)
    return [
        ("bare SQLite commits/s", f"{b:,.0f}", "one-row fsynced transactions, WAL + synchronous=FULL"),
        (
            "durable firings/s, single",
            f"{s:,.0f}",
            f"one record_firings() per firing: {s / b:.2f}x bare commit",
        ),
        (
            "durable firings/s, burst",
            f"{bu:,.0f}",
            f"{BURST_SIZE} firings per transaction (group commit): {bu / b:.1f}x bare commit",
        ),
        (
            "tasks/s drained to the simulator",
            f"{median_of(drain):,.0f}",
            f"{DRAIN_N} tasks, HTTP keep-alive, concurrency 8, no rate limit, claim + result fsynced each",
        ),
        (
            "DB size per 100,000 queued firings",
            f"{size / 1e6:,.1f} MB",
            f"{size / BACKLOG_N:,.0f} bytes per firing + outbox row (JSON body, indexes)",
        ),
        (
            "restart with 100,000 queued",
            f"{median_of(restart) * 1000:,.0f} ms",
            "open + migrations check + recover + first due query",
        ),
    ]


if __name__ == "__main__":
    for row in run():
        print(*row, sep="  |  ")
    print(os.cpu_count(), "cores")
