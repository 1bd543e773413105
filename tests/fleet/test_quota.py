"""The fleet quota against the real 3-node cluster: compare-and-set reservations, the high-priority reserve
fleet-wide, releases, and the local share when NATS cannot be reached."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.core.firings import Priority
from gateway.fleet import names
from gateway.fleet.bus import connect, ensure_bucket
from gateway.fleet.config import BusSection
from gateway.fleet.quota import FleetQuota
from gateway.sim.nats_cluster import NatsCluster
from tests.fleet.harness import new_bus

HIGH, NORMAL = Priority.HIGH, Priority.NORMAL


@contextlib.asynccontextmanager
async def quota_of(
    bus: BusSection, name: str, *, limit: int, share: float = 0.2
) -> AsyncIterator[FleetQuota]:
    nc = await connect(bus, name=name)
    js = nc.jetstream(timeout=bus.request_timeout)
    kv = await ensure_bucket(js, bus, names.quota_bucket(bus.name))

    async def get_kv():  # type: ignore[no-untyped-def]
        return kv

    try:
        yield FleetQuota(
            get_kv, network="net-1", limit=limit, share=share, connected=lambda: nc.is_connected, timeout=1.0
        )
    finally:
        await nc.close()


async def test_three_gateways_twenty_each_get_exactly_thirty_high_first(nats_cluster: NatsCluster) -> None:
    bus = new_bus(nats_cluster.urls)
    async with (
        quota_of(bus, "a", limit=30) as a,
        quota_of(bus, "b", limit=30) as b,
        quota_of(bus, "c", limit=30) as c,
    ):

        async def fire(q: FleetQuota, priorities: list[Priority]) -> list[tuple[Priority, bool]]:
            return [(p, await q.reserve(p)) for p in priorities]

        # Each gateway fires 15 normal tasks, then 5 high priority ones (20 each, 60 in all).
        normal = await asyncio.gather(*(fire(q, [NORMAL] * 15) for q in (a, b, c)))
        high = await asyncio.gather(*(fire(q, [HIGH] * 5) for q in (a, b, c)))
        granted = [p for r in (*normal, *high) for p, ok in r if ok]
        assert len(granted) == 30  # exactly the quota, fleet-wide; the other 30 are held by their dispatcher
        assert granted.count(NORMAL) == 27  # normal tasks stop at 90 %...
        assert granted.count(HIGH) == 3  # ...the last 10 % is left to high priority ones
        assert a.fleet_used == b.fleet_used == c.fleet_used == 30
        # A dead letter gives its reservation back: a normal one still may not use the reserve...
        await b.release()
        assert not await c.reserve(NORMAL)
        # ...but a high one takes it.
        assert await c.reserve(HIGH)
        assert c.fleet_used == 30
        assert not await a.reserve(HIGH)


async def test_normal_tasks_leave_the_last_ten_percent_to_high_priority(nats_cluster: NatsCluster) -> None:
    bus = new_bus(nats_cluster.urls)
    async with quota_of(bus, "a", limit=10) as a, quota_of(bus, "b", limit=10) as b:
        assert [await a.reserve(NORMAL) for _ in range(10)].count(True) == 9
        assert await b.reserve(HIGH)
        assert not await b.reserve(HIGH)


async def test_nats_unreachable_falls_back_to_the_local_share_then_syncs(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "nats", nodes_count=1).start()
    try:
        await cluster.wait_ready()
        bus = new_bus(cluster.urls, replicas=1)
        async with quota_of(bus, "a", limit=30, share=0.2) as a:
            assert await a.reserve(NORMAL)  # through the fleet: 1 of 30
            cluster.kill(0)
            # share 0.2 of 30 = 6, this gateway's own count included; normal ones: int(6 × 0.9) = 5.
            offline = [await a.reserve(NORMAL) for _ in range(10)]
            assert offline.count(True) == 4 and a.offline
            assert await a.reserve(HIGH)
            assert not await a.reserve(HIGH)  # 6 of its share: never the whole plan
            cluster.restart(0)
            await cluster.wait_ready()
            async with quota_of(bus, "b", limit=30) as b:
                for _ in range(100):  # a's client reconnects by itself
                    if a.connected():
                        break
                    await asyncio.sleep(0.1)
                await a.release()  # the first contact pushes the offline reservations (5) and this release
                assert not a.offline
                assert await b.reserve(NORMAL)
                assert b.fleet_used == 1 + 5 - 1 + 1
    finally:
        cluster.stop()
