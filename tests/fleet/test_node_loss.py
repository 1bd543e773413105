"""One NATS node killed mid-run (the webhook stream's leader): nothing the relay acknowledged is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from gateway.fleet import names
from gateway.fleet.relay import MW_PATH
from gateway.sim.mobility_work import run_mobility_work_sim
from gateway.sim.nats_cluster import NatsCluster
from tests.e2e.helpers import wait_for
from tests.fleet.harness import SECRET, create_task, fleet_gateway, new_bus, running_relay


async def test_killing_the_stream_leader_loses_nothing(tmp_path: Path, own_cluster: NatsCluster) -> None:
    bus = new_bus(own_cluster.urls)
    async with (
        running_relay(bus, gateways=("line1", "line2"), rate_limit=1000, rate_burst=1000) as relay,
        fleet_gateway(tmp_path, "line1", bus) as g1,
        fleet_gateway(tmp_path, "line2", bus) as g2,
        run_mobility_work_sim(
            api_key="k", webhook_url=relay.url + MW_PATH, webhook_secret=SECRET, auto_webhooks=False
        ) as sim,
        httpx.AsyncClient(base_url=sim.url, headers={"Api-Key": "k"}, timeout=10) as client,
    ):
        owned = {"line1": [], "line2": []}  # type: dict[str, list[str]]
        for n in range(8):
            for name in owned:
                owned[name].append(await create_task(client, name, n))
        info = await relay.relay.js.stream_info(names.stream(bus.name))
        leader = info.cluster.leader if info.cluster else None
        assert info.config.num_replicas == 3 and leader
        events = [(e, t) for e in ("TaskWasScheduled", "TaskWasCompleted") for n in owned for t in owned[n]]
        killed_at = time.monotonic()
        for i, (event, task_id) in enumerate(events):
            if i == len(events) // 3:
                own_cluster.kill(int(leader.removeprefix("n")) - 1)
                killed_at = time.monotonic()
            delivery = await sim.send_webhook(event, task_id=task_id)
            while delivery.status != 200:  # the relay said 503: Mobility Work delivers again
                assert delivery.status == 503, delivery.status
                await asyncio.sleep(0.1)
                delivery = await sim.resend_webhook(delivery.id)

        async def all_completed() -> bool:
            for gw, mine in ((g1, owned["line1"]), (g2, owned["line2"])):
                tasks = await gw.tasks()
                if set(tasks) != set(mine) or any(t.state != "completed" for t in tasks.values()):
                    return False
                if await gw.store.ledger.event_count() < 2 * len(mine):
                    return False
            return True

        await wait_for(all_completed, timeout_s=30, what="every acknowledged webhook in its gateway")
        assert await g1.store.ledger.event_count() == 16
        assert await g2.store.ledger.event_count() == 16
        retried = sum(1 for d in sim.state.deliveries if d.status != 200)
        print(
            f"node killed: {len(events)} webhooks, {retried} answered 503 and delivered again; "
            f"{time.monotonic() - killed_at:.1f} s from the kill to the last acknowledgement"
        )
