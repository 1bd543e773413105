"""The fleet under failures, on a real 3-node NATS cluster on loopback (docs/fleet.md, "Failures").

Per round (ROUNDS, seeded):
- webhooks: relay + 3 gateways + the Mobility Work simulator; ~120 webhooks while one random NATS node is
  killed and restarted and one random gateway goes offline and comes back. Checked: every webhook ends up
  acknowledged by the relay (a 503 is delivered again, as Mobility Work does), each gateway's ledger holds
  exactly its own events (and every stock event), nothing was refused by a receiver;
- quota: 3 gateways reserve 20 each (random priorities) on a quota of 30 while a node is killed. Checked: the
  fleet key never counts fewer than were granted (a lost answer keeps its reservation), and more than 30 only
  by what was granted from local shares while the key could not be reached.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path

import httpx

from gateway.core.firings import Priority
from gateway.fleet import names
from gateway.fleet.bus import connect, ensure_bucket
from gateway.fleet.quota import FleetQuota
from gateway.fleet.relay import MW_PATH
from gateway.sim.mobility_work import run_mobility_work_sim
from gateway.sim.nats_cluster import NatsCluster
from tests.e2e.helpers import wait_for
from tests.fleet.harness import SECRET, create_task, fleet_gateway, new_bus, running_relay
from torture import Report

ROUNDS = 4
GATEWAYS = ("line1", "line2", "line3")


async def webhooks_round(report: Report, root: Path, rng: random.Random, r: int) -> None:
    cluster = NatsCluster(root / f"nats{r}", nodes_count=3).start()
    try:
        await cluster.wait_ready()
        bus = new_bus(cluster.urls)
        async with (
            running_relay(bus, gateways=GATEWAYS, rate_limit=10_000, rate_burst=10_000) as relay,
            fleet_gateway(root / f"gw{r}", "line1", bus) as g1,
            fleet_gateway(root / f"gw{r}", "line2", bus) as g2,
            fleet_gateway(root / f"gw{r}", "line3", bus) as g3,
            run_mobility_work_sim(
                api_key="k", webhook_url=relay.url + MW_PATH, webhook_secret=SECRET, auto_webhooks=False
            ) as sim,
            httpx.AsyncClient(base_url=sim.url, headers={"Api-Key": "k"}, timeout=10) as client,
        ):
            gws = {"line1": g1, "line2": g2, "line3": g3}
            owned: dict[str, list[str]] = {g: [] for g in GATEWAYS}
            for n in range(12):
                for g in GATEWAYS:
                    owned[g].append(await create_task(client, g, n))
            events = [
                (e, g, t)
                for g in GATEWAYS
                for t in owned[g]
                for e in ("TaskWasScheduled", "TaskWasCompleted")
            ]
            rng.shuffle(events)
            stock_every = 20
            kill_at, back_at = rng.randrange(10, 40), rng.randrange(50, 70)
            off_at, on_at = rng.randrange(0, 30), rng.randrange(60, 90)
            victim, offline = rng.randrange(3), rng.choice(GATEWAYS)
            if r % 2 == 0:  # every other round the victim is the webhook stream's leader
                info = await relay.relay.js.stream_info(names.stream(bus.name))
                if info.cluster and info.cluster.leader:
                    victim = int(info.cluster.leader.removeprefix("n")) - 1
            retried, stock = 0, 0
            started = time.monotonic()
            for i, (event, _g, task_id) in enumerate(events):
                if i == kill_at:
                    cluster.kill(victim)
                if i == back_at:
                    cluster.restart(victim)
                if i == off_at:
                    await gws[offline].stop()
                if i == on_at:
                    await gws[offline].start()
                delivery = await sim.send_webhook(event, task_id=task_id)
                if i % stock_every == 0:
                    stock += 1
                    extra = await sim.send_webhook("SparePartWasRestocked", article=f"SP-{i}", quantity=1)
                    while extra.status != 200:
                        retried += 1
                        await asyncio.sleep(0.1)
                        extra = await sim.resend_webhook(extra.id)
                while delivery.status != 200:
                    retried += 1
                    await asyncio.sleep(0.1)
                    delivery = await sim.resend_webhook(delivery.id)
            if gws[offline].task is None:
                await gws[offline].start()

            async def complete() -> bool:
                for g, gw in gws.items():
                    tasks = await gw.tasks()
                    if set(tasks) != set(owned[g]) or any(t.state != "completed" for t in tasks.values()):
                        return False
                    if len(await gw.store.ledger.stock_levels()) != stock:
                        return False
                    if await gw.store.ledger.event_count() < 2 * len(owned[g]) + stock:
                        return False
                return True

            try:
                await wait_for(complete, timeout_s=60, what="every webhook in its gateway")
                ok = True
            except AssertionError:
                ok = False
            report.check(
                ok,
                f"round {r}: every acknowledged webhook reached its gateway (node n{victim + 1} "
                f"killed, {offline} offline a while)",
            )
            for g, gw in gws.items():
                count = await gw.store.ledger.event_count()
                report.check(
                    count == 2 * len(owned[g]) + stock, f"round {r}: {g} stored each event once ({count})"
                )
                refused = gw.consumer.stats.counts.get("refused", 0) if gw.consumer else 0
                report.check(refused == 0, f"round {r}: {g}'s receiver refused nothing ({refused})")
            report.fact(
                f"round {r}: {len(events) + stock} webhooks, {retried} answered 503 and delivered again, "
                f"{time.monotonic() - started:.1f} s"
            )
    finally:
        cluster.stop()


async def quota_round(report: Report, root: Path, rng: random.Random, r: int) -> None:
    cluster = NatsCluster(root / f"q{r}", nodes_count=3).start()
    try:
        await cluster.wait_ready()
        bus = new_bus(cluster.urls, request_timeout=1.0)
        ncs = [await connect(bus, name=f"q{i}") for i in range(3)]
        kv0 = await ensure_bucket(ncs[0].jetstream(timeout=2), bus, names.quota_bucket(bus.name))
        quotas = []
        for nc in ncs:
            kv = await nc.jetstream(timeout=2).key_value(names.quota_bucket(bus.name))

            async def get(kv=kv):  # type: ignore[no-untyped-def]
                return kv

            quotas.append(
                FleetQuota(
                    get,
                    network="net",
                    limit=30,
                    share=0.2,
                    connected=lambda nc=nc: nc.is_connected,
                    timeout=1,
                )
            )
        plans = [[rng.choice([Priority.NORMAL] * 4 + [Priority.HIGH]) for _ in range(20)] for _ in quotas]
        granted = [0, 0, 0]
        offline_granted = [0, 0, 0]
        kill_after = rng.randrange(5, 30)

        async def fire(i: int) -> None:
            for p in plans[i]:
                if (
                    i == 0
                    and sum(granted) >= kill_after
                    and cluster.nodes[1].proc
                    and cluster.nodes[1].proc.poll() is None
                ):
                    cluster.kill(1)
                was_offline = quotas[i].offline
                if await quotas[i].reserve(p):
                    granted[i] += 1
                    if quotas[i].offline or was_offline:
                        offline_granted[i] += 1
                await asyncio.sleep(rng.random() * 0.02)

        await asyncio.gather(*(fire(i) for i in range(3)))
        cluster.restart(1)
        await cluster.wait_ready()
        for q in quotas:  # first contact: offline reservations are added to the key
            for _ in range(100):
                if q.connected():
                    break
                await asyncio.sleep(0.1)
            await q.reserve(Priority.HIGH)  # may be refused; syncs either way
            q.own.clear()
        entry = await kv0.get(names.quota_key("net", quotas[0].month()))
        key = int(entry.value or b"0")
        total = sum(granted)
        extra = sum(1 for q in quotas if q.fleet_used is not None)  # the sync reservations above
        report.check(
            key >= min(total, 30), f"quota round {r}: the key ({key}) never under-counts ({total} granted)"
        )
        report.check(
            total <= 30 + sum(offline_granted),
            f"quota round {r}: {total} granted <= 30 + {sum(offline_granted)} from local shares",
        )
        report.fact(
            f"quota round {r}: granted {granted}, offline {offline_granted}, key {key} (+{extra} probes)"
        )
        for nc in ncs:
            await nc.close()
    finally:
        cluster.stop()


async def run(report: Report) -> None:
    rng = random.Random(16)
    with tempfile.TemporaryDirectory(prefix="torture-fleet-") as tmp:
        root = Path(tmp)
        for r in range(ROUNDS):
            await webhooks_round(report, root, rng, r)
        for r in range(ROUNDS):
            await quota_round(report, root, rng, r)
