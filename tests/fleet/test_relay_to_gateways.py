"""Relay -> JetStream (3 nodes, R3) -> each gateway's durable consumer -> the gateway's own webhook receiver.

The Mobility Work simulator sends its webhooks to the relay; every webhook must reach the gateway named in the
task's metadata.gateway (stock events: every gateway) and be reconciled in that gateway's ledger.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from gateway.core.clock import ManualClock
from gateway.fleet import names
from gateway.fleet.relay import MW_PATH
from gateway.sim.mobility_work import run_mobility_work_sim
from gateway.sim.nats_cluster import NatsCluster
from gateway.web.signature import sign
from tests.e2e.helpers import wait_for
from tests.fleet.harness import (
    SECRET,
    create_task,
    fleet_gateway,
    new_bus,
    running_relay,
)

GATEWAYS = ("line1", "line2", "line3")


async def test_every_webhook_reaches_its_gateway_and_reconciles(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    bus = new_bus(nats_cluster.urls)
    async with (
        running_relay(bus, gateways=GATEWAYS) as relay,
        fleet_gateway(tmp_path, "line1", bus) as g1,
        fleet_gateway(tmp_path, "line2", bus) as g2,
        fleet_gateway(tmp_path, "line3", bus) as g3,
        run_mobility_work_sim(api_key="k", webhook_url=relay.url + MW_PATH, webhook_secret=SECRET) as sim,
        httpx.AsyncClient(base_url=sim.url, headers={"Api-Key": "k"}, timeout=10) as client,
    ):
        gws = {"line1": g1, "line2": g2, "line3": g3}
        owned: dict[str, list[str]] = {name: [] for name in GATEWAYS}
        for n in range(4):
            for name in GATEWAYS:
                owned[name].append(await create_task(client, name, n))
        await sim.wait_idle()  # TaskWasScheduled of each, sent by the simulator
        for name in GATEWAYS:
            for task_id in owned[name]:
                await sim.send_webhook("TaskWasStarted", task_id=task_id)
                await sim.send_webhook("TaskWasCompleted", task_id=task_id)
        stock = await sim.send_webhook("SparePartWasRestocked", article="SP-1", quantity=5)
        assert stock.status == 200
        assert all(d.status == 200 for d in sim.state.deliveries), [d.error for d in sim.state.deliveries]

        async def all_in() -> bool:
            for name, gw in gws.items():
                tasks = await gw.tasks()
                if set(tasks) != set(owned[name]) or any(t.state != "completed" for t in tasks.values()):
                    return False
                if await gw.store.ledger.event_count() != 3 * len(owned[name]) + 1:
                    return False
            return True

        await wait_for(all_in, what="every webhook in its gateway's ledger")
        for name, gw in gws.items():
            tasks = await gw.tasks()
            assert set(tasks) == set(owned[name])  # nobody else's tasks
            assert all(t.firing_uuid for t in tasks.values())  # reconciled with the firing
            assert "SP-1" in await gw.store.ledger.stock_levels()  # the stock event reached everyone
        # A redelivery by the CMMS (same _idempotencyKey, fresh signature) is stored once in the stream.
        before = (await relay.relay.js.stream_info(names.stream(bus.name))).state.messages
        again = await sim.resend_webhook(sim.state.deliveries[-2].id)
        assert again.status == 200
        assert (await relay.relay.js.stream_info(names.stream(bus.name))).state.messages == before


async def test_bad_signature_never_enters_the_bus(tmp_path: Path, nats_cluster: NatsCluster) -> None:
    bus = new_bus(nats_cluster.urls)
    body = json.dumps(
        {
            "_event": "TaskWasStarted",
            "_idempotencyKey": "k1",
            "taskId": "abc",
            "metadata": {"gateway": "line1"},
        }
    ).encode()
    async with running_relay(bus, max_body_bytes=2048, rate_limit=1000) as relay, httpx.AsyncClient() as http:
        url = relay.url + MW_PATH
        wrong = await http.post(url, content=body, headers={"X-MW-Signature": sign("not-the-secret", body)})
        old = await http.post(
            url, content=body, headers={"X-MW-Signature": sign(SECRET, body, t=int(time.time()) - 3600)}
        )
        missing = await http.post(url, content=body)
        big = b'{"_event":"x","pad":"' + b"a" * 4096 + b'"}'
        too_big = await http.post(url, content=big, headers={"X-MW-Signature": sign(SECRET, big)})
        not_json = await http.post(url, content=b"[1]", headers={"X-MW-Signature": sign(SECRET, b"[1]")})
        assert [r.status_code for r in (wrong, old, missing, too_big, not_json)] == [401, 401, 401, 413, 400]
        info = await relay.relay.js.stream_info(names.stream(bus.name))
        assert info.state.messages == 0
        ok = await http.post(url, content=body, headers={"X-MW-Signature": sign(SECRET, body)})
        assert ok.status_code == 200 and ok.json()["gateways"] == ["line1"]
        assert (await relay.relay.js.stream_info(names.stream(bus.name))).state.messages == 1
        health = await http.get(relay.url + "/healthz")
        metrics = await http.get(relay.url + "/metrics")
        assert health.status_code == 200
        assert 'mw_relay_webhooks_total{outcome="rejected"} 3' in metrics.text
        assert 'mw_relay_webhooks_total{outcome="published"} 1' in metrics.text


async def test_relay_rate_limit_answers_429(nats_cluster: NatsCluster) -> None:
    bus = new_bus(nats_cluster.urls)
    body = b'{"_event":"TaskWasStarted","_idempotencyKey":"r","taskId":"t1"}'
    async with running_relay(bus, rate_limit=0.01, rate_burst=2) as relay, httpx.AsyncClient() as http:
        codes = [
            (
                await http.post(
                    relay.url + MW_PATH, content=body, headers={"X-MW-Signature": sign(SECRET, body)}
                )
            )
            for _ in range(3)
        ]
        assert [r.status_code for r in codes] == [200, 200, 429]
        assert int(codes[2].headers["Retry-After"]) >= 1


async def test_offline_gateway_gets_its_backlog_a_day_later(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    """line2 is offline while its webhooks arrive; it comes back a day later (its clock says so: the
    signatures are 24 h old) and still gets and accepts every one, checked against the relay's time."""
    bus = new_bus(nats_cluster.urls)
    clock = ManualClock(time.time())
    async with (
        running_relay(bus, gateways=("line1", "line2")) as relay,
        fleet_gateway(tmp_path, "line1", bus) as g1,
        fleet_gateway(tmp_path, "line2", bus, clock=clock, start=False) as g2,
        run_mobility_work_sim(api_key="k", webhook_url=relay.url + MW_PATH, webhook_secret=SECRET) as sim,
        httpx.AsyncClient(base_url=sim.url, headers={"Api-Key": "k"}, timeout=10) as client,
    ):
        await g2.start()  # its durable consumer exists; then it goes offline
        await g2.stop()
        mine = [await create_task(client, "line2", n) for n in range(5)]
        other = [await create_task(client, "line1", n) for n in range(2)]
        await sim.wait_idle()
        for task_id in mine:
            await sim.send_webhook("TaskWasCompleted", task_id=task_id)
        assert all(d.status == 200 for d in sim.state.deliveries)
        await wait_for(lambda: _has(g1, other), what="line1 keeps receiving")
        assert await g2.store.ledger.event_count() == 0
        clock.advance(86400)
        await g2.start()
        await wait_for(lambda: _has(g2, mine, state="completed"), what="line2's backlog")
        assert await g2.store.ledger.event_count() == 10
        assert g2.consumer is not None and g2.consumer.stats.counts.get("refused", 0) == 0


async def _has(gw: object, task_ids: list[str], state: str | None = None) -> bool:
    tasks = await gw.tasks()  # type: ignore[attr-defined]
    return set(task_ids) <= set(tasks) and (state is None or all(tasks[t].state == state for t in task_ids))


async def test_servicemobility_goes_to_every_gateway_after_the_jwt_check(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    import jwt

    from gateway.fleet.relay import SM_PATH

    bus = new_bus(nats_cluster.urls)
    key = "sm-jwt-key-for-the-fleet-tests-0123456789"
    envelope = {
        "id": "evt-1",
        "type": "InventoryUsage",
        "specversion": "1.0",
        "data": {
            "rows": [
                {
                    "InventoryUsage": {
                        "RefModule": 1002,
                        "RefObjID": "WO-7",
                        "StorageLocations": [
                            {"StorageLocationID": "S1", "Items": [{"ProdNum": "P-1", "OutQty": 2}]}
                        ],
                    }
                }
            ]
        },
    }
    body = json.dumps(envelope).encode()
    async with (
        running_relay(bus, gateways=("line1", "line2"), servicemobility_jwt_key=key) as relay,
        fleet_gateway(tmp_path, "line1", bus) as g1,
        fleet_gateway(tmp_path, "line2", bus) as g2,
        httpx.AsyncClient() as http,
    ):
        bad = await http.post(relay.url + SM_PATH, content=body, headers={"x-access-token": "nope"})
        assert bad.status_code == 401
        assert (await relay.relay.js.stream_info(names.stream(bus.name))).state.messages == 0
        token = jwt.encode({"sub": "servicemobility", "exp": int(time.time()) + 600}, key, algorithm="HS256")
        ok = await http.post(relay.url + SM_PATH + "/", content=body, headers={"x-access-token": token})
        assert ok.status_code == 200 and ok.json()["gateways"] == ["line1", "line2"]

        async def both() -> bool:
            return all([await g.store.ledger.event_count(source="servicemobility") == 1 for g in (g1, g2)])

        await wait_for(both, what="the inventory usage in both gateways")
        for g in (g1, g2):
            moves = await g.store.ledger.movements(task_ids=["WO-7"])
            assert [(m.kind, m.quantity) for m in moves] == [("consumed", 2.0)]
