"""The monthly quota guard with the real Mobility Work backend and simulator, on an injected clock: tasks are
held (never dropped) at the plan's limit, the last 10% is kept for priority high, and everything held leaves
when the month turns in the network's timezone (read from the network settings).
"""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.cmms.mobility_work import MobilityWorkBackend
from gateway.cmms.schema import MobilityWorkConfig
from gateway.config import DispatcherSection
from gateway.core.clock import ManualClock
from gateway.core.firings import Firing, Priority, TaskSpec
from gateway.runtime.dispatcher import Dispatcher, DispatcherState
from gateway.sim.mobility_work import run_mobility_work_sim
from gateway.store import Store

API_KEY = "quota-key-0123456789"


def firing(key: str, priority: Priority, at: float) -> Firing:
    return Firing(
        key=key,
        rule_id=key.split(":")[0],
        fired_at=at,
        task=TaskSpec(equipment="EQ-0001", description=f"Task {key}", assignees=(3,)),
        priority=priority,
        while_open="create",
    )


async def drain(d: Dispatcher) -> None:
    while await d.drain_once():
        pass


async def test_quota_holds_at_the_limit_and_releases_when_the_month_turns(tmp_path: Path) -> None:
    # 31 January, 22:00 in Tokyo, the network's timezone: 2 hours before the month turns there.
    clock = ManualClock(datetime(2026, 1, 31, 22, 0, tzinfo=ZoneInfo("Asia/Tokyo")).timestamp())
    async with run_mobility_work_sim(api_key=API_KEY, network_timezone="Asia/Tokyo") as sim:
        config = MobilityWorkConfig(
            kind="mobility_work",
            url=sim.url,
            api_key=API_KEY,  # type: ignore[arg-type]
            plan="starter",
            monthly_quota=20,  # overrides the plan's 100
        )
        backend = MobilityWorkBackend(config, gateway_id="gw", clock=clock)
        store = await Store.open(tmp_path, gateway_id="gw", clock=clock)
        try:
            network = await backend.start()
            assert network.timezone == "Asia/Tokyo"
            dispatcher = Dispatcher(
                store,
                backend,
                settings=DispatcherSection(concurrency=4, rate_limit=5000),
                quota=config.quota,
                timezone=network.timezone,
                clock=clock,
                rng=random.Random(3),
            )
            now = clock.now()
            await store.outbox.record_firings(
                [firing(f"normal:{i}", Priority.NORMAL, now) for i in range(25)]
                + [firing(f"high:{i}", Priority.HIGH, now + 1) for i in range(4)]
            )
            await drain(dispatcher)
            # 4 high + 14 normal = 18 = 90%: the last 2 of the 20 are kept for high priority.
            assert dispatcher.status.quota_used == 18 and dispatcher.status.high_only
            assert len(sim.state.tasks) == 18
            await store.outbox.record_firings(
                [firing(f"high:{i}", Priority.HIGH, now + 2) for i in range(4, 7)]
            )
            await drain(dispatcher)
            assert len(sim.state.tasks) == 20  # two of the three new high ones used the reserve
            assert dispatcher.status.state is DispatcherState.QUOTA_HELD
            counts = await store.outbox.counts()
            assert counts["queued"] == 12 and counts["dead"] == 0 and counts["dropped"] == 0  # held, kept
            clock.advance(3600)  # 23:00 in Tokyo: still January there
            await drain(dispatcher)
            assert len(sim.state.tasks) == 20 and dispatcher.status.state is DispatcherState.QUOTA_HELD
            clock.advance(3600)  # midnight in Tokyo (15:00 UTC): February
            await drain(dispatcher)
            assert dispatcher.status.state is DispatcherState.RUNNING
            assert dispatcher.status.quota_month == "2026-02"
            assert len(sim.state.tasks) == 32
            assert (await store.outbox.counts())["delivered"] == 32
            # The held high-priority row left first when the month turned.
            assert sim.state.tasks[20].metadata["rule"] == "high"
            assert await store.outbox.quota_used("2026-01") == 20
            assert await store.outbox.quota_used("2026-02") == 12
        finally:
            await backend.aclose()
            await store.close()
