"""Three gateways' dispatchers, the real Mobility Work backend and simulator, one fleet quota of 30 in the
3-node cluster: exactly 30 tasks are created fleet-wide, the last 10 % by high priority ones, the rest held
in the outboxes (never dropped); a dead letter gives its reservation back."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from gateway.cmms.mobility_work import MobilityWorkBackend
from gateway.cmms.schema import MobilityWorkConfig
from gateway.config import DispatcherSection
from gateway.core.clock import ManualClock
from gateway.core.firings import Priority, TaskSpec
from gateway.fleet import names
from gateway.fleet.bus import connect, ensure_bucket
from gateway.fleet.config import BusSection
from gateway.fleet.quota import FleetQuota
from gateway.runtime.dispatcher import Dispatcher
from gateway.sim.mobility_work import MobilityWorkSim, run_mobility_work_sim
from gateway.sim.nats_cluster import NatsCluster
from gateway.store import Store
from tests.e2e.test_quota import firing
from tests.fleet.harness import new_bus

API_KEY = "fleet-quota-key-0123456789"
BAD_TASK = TaskSpec(equipment="NO-SUCH-EQUIPMENT", description="refused", assignees=(3,))


@contextlib.asynccontextmanager
async def gateway(
    tmp: Path, name: str, sim: MobilityWorkSim, bus: BusSection, clock: ManualClock
) -> AsyncIterator[tuple[Dispatcher, Store]]:
    config = MobilityWorkConfig(
        kind="mobility_work",
        url=sim.url,
        api_key=API_KEY,
        plan="starter",
        monthly_quota=30,  # type: ignore[arg-type]
    )
    backend = MobilityWorkBackend(config, gateway_id=name, clock=clock)
    store = await Store.open(tmp / name, gateway_id=name, clock=clock)
    nc = await connect(bus, name=name)
    kv = await ensure_bucket(nc.jetstream(timeout=2), bus, names.quota_bucket(bus.name))

    async def get_kv():  # type: ignore[no-untyped-def]
        return kv

    try:
        network = await backend.start()
        dispatcher = Dispatcher(
            store,
            backend,
            settings=DispatcherSection(concurrency=4, rate_limit=5000, retry_initial=0.01),
            quota=config.quota,
            timezone=network.timezone or "UTC",
            clock=clock,
            rng=random.Random(1),
        )
        dispatcher.fleet_quota = FleetQuota(
            get_kv,
            network=network.network_id or "net",
            limit=30,
            timezone=network.timezone or "UTC",
            connected=lambda: nc.is_connected,
            local_used=store.outbox.quota_used,
            clock=clock.now,
        )
        yield dispatcher, store
    finally:
        await nc.close()
        await backend.aclose()
        await store.close()


async def drain(dispatchers: list[Dispatcher], clock: ManualClock) -> None:
    async def one(d: Dispatcher) -> None:
        while await d.drain_once():
            pass

    for _ in range(3):
        await asyncio.gather(*(one(d) for d in dispatchers))  # the gateways send at the same time
        clock.advance(2)  # past the dispatchers' "look again" pause after a refusal


async def test_fleet_quota_thirty_three_gateways_twenty_each(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    bus = new_bus(nats_cluster.urls)
    clock = ManualClock(1_796_000_000.0)
    async with (
        run_mobility_work_sim(api_key=API_KEY) as sim,
        gateway(tmp_path, "line1", sim, bus, clock) as (d1, s1),
        gateway(tmp_path, "line2", sim, bus, clock) as (d2, s2),
        gateway(tmp_path, "line3", sim, bus, clock) as (d3, s3),
    ):
        dispatchers, stores = [d1, d2, d3], [s1, s2, s3]
        now = clock.now()
        for i, store in enumerate(stores):  # 15 normal firings each...
            await store.outbox.record_firings(
                [firing(f"n{i}:{k}", Priority.NORMAL, now + k) for k in range(15)]
            )
        await drain(dispatchers, clock)
        assert len(sim.state.tasks) == 27  # normal tasks stop at 90 % of the fleet's quota
        for d, store in zip(dispatchers, stores, strict=True):  # whoever still has tasks holds them
            assert d.status.fleet_held == ((await store.outbox.counts())["queued"] > 0)
        for i, store in enumerate(stores):  # ...then 5 high priority ones each
            await store.outbox.record_firings(
                [firing(f"h{i}:{k}", Priority.HIGH, clock.now()) for k in range(5)]
            )
        await drain(dispatchers, clock)
        assert len(sim.state.tasks) == 30  # exactly the fleet's quota
        rules = [t.metadata.get("rule") for t in sim.state.tasks]
        assert sum(1 for r in rules if str(r).startswith("h")) == 3
        counts = [await s.outbox.counts() for s in stores]
        assert sum(c["queued"] + c["retrying"] for c in counts) == 30  # the rest is held, not dropped
        assert sum(c["dead"] + c["dropped"] for c in counts) == 0


async def test_a_dead_letter_gives_its_reservation_back(tmp_path: Path, nats_cluster: NatsCluster) -> None:
    bus = new_bus(nats_cluster.urls)
    clock = ManualClock(1_796_000_000.0)
    async with (
        run_mobility_work_sim(api_key=API_KEY, strict=True) as sim,
        gateway(tmp_path, "line1", sim, bus, clock) as (d1, s1),
        gateway(tmp_path, "line2", sim, bus, clock) as (d2, s2),
    ):
        unknown = [replace(firing(f"x:{k}", Priority.HIGH, clock.now()), task=BAD_TASK) for k in range(2)]
        await s1.outbox.record_firings(  # two the CMMS refuses for good (unknown equipment), then 30 good
            unknown + [firing(f"a:{k}", Priority.HIGH, clock.now() + 1) for k in range(30)]
        )
        await drain([d1], clock)
        assert (await s1.outbox.counts())["dead"] == 2
        assert len(sim.state.tasks) == 30  # the two dead letters did not use any of the 30
        await s2.outbox.record_firings([firing("b:0", Priority.HIGH, clock.now())])
        await drain([d2], clock)
        assert len(sim.state.tasks) == 30
        assert (await s2.outbox.counts())["queued"] == 1
