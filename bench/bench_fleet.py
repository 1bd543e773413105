"""The fleet on a real 3-node NATS cluster on loopback (JetStream, R3 stream and buckets):

- fleet quota reservation latency (compare-and-set on the quota key): one gateway alone, and three at once;
- relay webhooks/s: signature check + routing + JetStream publish acknowledged by a quorum of 3 replicas,
  next to direct webhook intake (signature check + SQLite ledger commit, fsynced) in the same run. Both are
  the HTTP-free cores (`Relay.relay`, `WebhookReceiver.receive_mobility_work`), 1 at a time and 16 in flight.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from gateway.config import HttpSection
from gateway.core.clock import SystemClock
from gateway.core.firings import Priority
from gateway.fleet import names
from gateway.fleet.bus import connect, ensure_bucket, ensure_stream
from gateway.fleet.config import BusSection, RelayConfig
from gateway.fleet.quota import FleetQuota
from gateway.fleet.relay import MW_PATH, Relay
from gateway.sim.nats_cluster import NatsCluster
from gateway.store import Store
from gateway.web.receiver import WebhookReceiver
from gateway.web.signature import sign

SECRET = "bench-secret"
RESERVATIONS = 400
WEBHOOKS = 600


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def quota_latencies(bus: BusSection, n: int, clients: int) -> list[float]:
    ncs = [await connect(bus, name=f"bench{i}") for i in range(clients)]
    try:
        kv = await ensure_bucket(ncs[0].jetstream(timeout=5), bus, names.quota_bucket(bus.name))
        quotas = []
        for nc in ncs:
            kv_i = await nc.jetstream(timeout=5).key_value(names.quota_bucket(bus.name))

            async def get(kv_i=kv_i):  # type: ignore[no-untyped-def]
                return kv_i

            quotas.append(FleetQuota(get, network=f"bench-{uuid.uuid4().hex[:6]}", limit=10**9, timeout=5))
        del kv

        async def one(q: FleetQuota) -> None:
            for _ in range(n // clients):
                assert await q.reserve(Priority.NORMAL)

        await asyncio.gather(*(one(q) for q in quotas))
        return [x for q in quotas for x in q.latencies]
    finally:
        for nc in ncs:
            await nc.close()


def webhook(i: int, gateway: str) -> tuple[dict[str, str], bytes]:
    body = json.dumps(
        {
            "_event": "TaskWasStarted",
            "_idempotencyKey": f"bench-{uuid.uuid4().hex}-{i}",
            "taskId": f"t{i}",
            "metadata": {"gateway": gateway, "firing": str(uuid.uuid4())},
            "started": {"on": "2026-12-01T10:00:00+00:00", "by": {"firstName": "A", "lastName": "B"}},
        }
    ).encode()
    return {"X-MW-Signature": sign(SECRET, body), "Content-Type": "application/json"}, body


async def rate(handler, n: int, in_flight: int) -> float:  # type: ignore[no-untyped-def]
    items = [webhook(i, "line1") for i in range(n)]
    queue = list(items)
    started = time.perf_counter()

    async def worker() -> None:
        while queue:
            headers, body = queue.pop()
            status = await handler(headers, body)
            assert status == 200, status

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return n / (time.perf_counter() - started)


async def _run() -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        cluster = NatsCluster(Path(tmp) / "nats", nodes_count=3).start()
        try:
            await cluster.wait_ready()
            bus = BusSection(nats=tuple(cluster.urls), name=f"b{uuid.uuid4().hex[:6]}", request_timeout=5)
            alone = await quota_latencies(bus, RESERVATIONS, 1)
            three = await quota_latencies(bus, RESERVATIONS, 3)

            nc = await connect(bus, name="relay")
            js = nc.jetstream(timeout=5)
            await ensure_stream(js, bus)
            relay = Relay(RelayConfig(webhook_secret=SECRET, fleet=bus), nc, js)

            async def via_relay(headers: dict[str, str], body: bytes) -> int:
                return (await relay.relay(MW_PATH, headers, body)).status_code

            store = await Store.open(Path(tmp) / "state", gateway_id="line1", clock=SystemClock())
            receiver = WebhookReceiver(store.ledger, HttpSection(webhook_secret=SECRET), clock=store.clock)

            async def direct(headers: dict[str, str], body: bytes) -> int:
                return (await receiver.receive_mobility_work(headers, body)).status

            relay_1 = await rate(via_relay, WEBHOOKS, 1)
            direct_1 = await rate(direct, WEBHOOKS, 1)
            relay_16 = await rate(via_relay, WEBHOOKS, 16)
            direct_16 = await rate(direct, WEBHOOKS, 16)
            await store.close()
            await nc.close()
        finally:
            cluster.stop()
    ms = 1000.0
    return [
        (
            "fleet quota reserve p50 / p99, 1 gateway",
            f"{statistics.median(alone) * ms:.2f} / {pct(alone, 0.99) * ms:.2f} ms",
            f"{len(alone)} reservations, CAS on an R3 key, 3-node loopback cluster",
        ),
        (
            "fleet quota reserve p50 / p99, 3 gateways at once",
            f"{statistics.median(three) * ms:.2f} / {pct(three, 0.99) * ms:.2f} ms",
            "same key, contention: a lost compare-and-set reads again",
        ),
        ("relay webhooks/s, one at a time", f"{relay_1:,.0f}", "verify + publish acked by 2 of 3 replicas"),
        ("direct webhook intake/s, one at a time", f"{direct_1:,.0f}", "verify + fsynced ledger commit"),
        ("relay webhooks/s, 16 in flight", f"{relay_16:,.0f}", f"{relay_16 / direct_16:.2f}x direct intake"),
        ("direct webhook intake/s, 16 in flight", f"{direct_16:,.0f}", "same run, same machine"),
    ]


def run() -> list[tuple[str, str, str]]:
    return asyncio.run(_run())
