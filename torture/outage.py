"""A 24-hour CMMS outage, in simulated time: the real store, dispatcher and Mobility Work backend against the
simulator, in process, on an injected ManualClock. 100,000 firings (5% priority high) arrive in bursts every
15 simulated minutes while the simulator is down; then it comes back.

Verified: nothing delivered, dead or dropped during the outage (all queued); once back, high priority first;
the monthly quota respected to the task (held at the limit, never dropped); the rest leaves when the month
turns in the network's timezone; every firing exactly one task.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from gateway.cmms.mobility_work import MobilityWorkBackend
from gateway.cmms.schema import HttpClientOptions, MobilityWorkConfig
from gateway.config import DispatcherSection
from gateway.core.clock import ManualClock
from gateway.core.firings import Firing, Priority, TaskSpec
from gateway.runtime.dispatcher import Dispatcher, DispatcherState
from gateway.sim.mobility_work import run_mobility_work_sim
from gateway.store import Store
from torture import Report

API_KEY = "outage-key-0123456789"
N = int(os.environ.get("TORTURE_OUTAGE_FIRINGS", "100000"))
QUOTA = N - N // 20  # binding: the last 5% wait for the next month
STEP_S = 900.0
STEPS = 96  # 24 h


def firing(i: int, at: float, rng: random.Random) -> Firing:
    high = rng.random() < 0.05
    return Firing(
        key=f"{'high' if high else 'normal'}:{i}",
        rule_id="high" if high else "normal",
        fired_at=at,
        task=TaskSpec(equipment="EQ-0001", description=f"Outage task {i}", assignees=(3,)),
        priority=Priority.HIGH if high else Priority.NORMAL,
        while_open="create",
    )


async def drain(d: Dispatcher) -> int:
    total = 0
    while n := await d.drain_once():
        total += n
    return total


async def run(report: Report) -> None:
    rng = random.Random(7)
    # 30 January 00:00 in Paris (the simulator's network timezone): the outage ends on the 31st, the month
    # turns a day later.
    clock = ManualClock(datetime(2026, 1, 29, 23, 0, tzinfo=UTC).timestamp())
    with tempfile.TemporaryDirectory(prefix="torture-outage-") as tmp:
        async with run_mobility_work_sim(api_key=API_KEY) as sim:
            config = MobilityWorkConfig(
                kind="mobility_work",
                url=sim.url,
                api_key=API_KEY,  # type: ignore[arg-type]
                plan="ultimate",
                monthly_quota=QUOTA,
                http=HttpClientOptions(connect_timeout=1.0, read_timeout=2.0),
            )
            backend = MobilityWorkBackend(config, gateway_id="outage-gw", clock=clock)
            store = await Store.open(Path(tmp), gateway_id="outage-gw", clock=clock)
            try:
                network = await backend.start()
                dispatcher = Dispatcher(
                    store,
                    backend,
                    settings=DispatcherSection(concurrency=16, rate_limit=100000),
                    quota=config.quota,
                    timezone=network.timezone or "UTC",
                    clock=clock,
                    rng=random.Random(3),
                )
                await sim.down()
                t0 = time.monotonic()
                made = 0
                highs = 0
                attempts_down = 0
                for step in range(STEPS):
                    n = N * (step + 1) // STEPS - made
                    burst = [firing(made + k, clock.now(), rng) for k in range(n)]
                    highs += sum(1 for f in burst if f.priority is Priority.HIGH)
                    await store.outbox.record_firings(burst)
                    made += n
                    attempts_down += await drain(dispatcher)
                    clock.advance(STEP_S)
                counts = await store.outbox.counts()
                report.fact(
                    f"{made} firings ({highs} high) queued over 24 simulated hours"
                    f" in {time.monotonic() - t0:.0f}s;"
                    f" {attempts_down} attempts while down"
                )
                waiting = counts.get("queued", 0) + counts.get("retrying", 0)
                report.check(waiting == N, f"all {N} waiting after 24 h down ({counts})")
                report.check(not counts.get("dead") and not counts.get("dropped"), "nothing dead or dropped")
                report.check(len(sim.state.tasks) == 0, "no task reached the CMMS while it was down")

                await sim.up()
                t1 = time.monotonic()
                await drain(dispatcher)
                clock.advance(60)
                await drain(dispatcher)
                took = time.monotonic() - t1
                tasks = sim.state.tasks
                report.fact(
                    f"{len(tasks)} tasks delivered after the outage in {took:.0f}s"
                    f" ({len(tasks) / took:.0f}/s)"
                )
                # The last 10% of the quota is kept for priority high: every high one left, normal ones
                # stopped at 90% of the quota.
                reserve_at = QUOTA - QUOTA // 10
                jan = len(tasks)
                report.check(
                    jan == max(reserve_at, highs) and jan <= QUOTA,
                    f"the quota respected: {jan} tasks, normal ones held from {reserve_at} (quota {QUOTA})",
                )
                report.check(
                    dispatcher.status.high_only or dispatcher.status.state is DispatcherState.QUOTA_HELD,
                    f"the dispatcher says it is holding ({dispatcher.status.state}, high only)",
                )
                counts = await store.outbox.counts()
                waiting = counts.get("queued", 0) + counts.get("retrying", 0)
                report.check(waiting == N - jan, f"{N - jan} still queued, none lost ({counts})")
                rules = [t.metadata.get("rule") for t in tasks]
                last_high = max(i for i, r in enumerate(rules) if r == "high")
                first_normal = rules.index("normal")
                report.check(
                    last_high < highs + 16 and first_normal >= highs - 16,
                    f"high priority first (last high at {last_high}, first normal at {first_normal},"
                    f" {highs} high)",
                )

                clock.set(datetime(2026, 2, 1, 0, 1, tzinfo=UTC).timestamp())  # 01:01 in Paris: February
                await drain(dispatcher)
                counts = await store.outbox.counts()
                report.check(
                    counts.get("delivered", 0) == N, f"everything delivered after the month turned ({counts})"
                )
                per_firing = Counter(t.metadata.get("firing") for t in sim.state.tasks)
                report.check(
                    len(per_firing) == N and max(per_firing.values()) == 1, "every firing exactly one task"
                )
                report.check(await store.outbox.quota_used("2026-01") == jan, "January's quota count matches")
                report.check(
                    await store.outbox.quota_used("2026-02") == N - jan, "the rest counted in February"
                )
            finally:
                await backend.aclose()
                await store.close()
