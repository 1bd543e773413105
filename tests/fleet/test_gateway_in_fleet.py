"""Two real gateways (gateway.runtime.lifecycle.Gateway) with a `fleet:` section, the relay, the Mobility
Work simulator and the 3-node cluster: a stock webhook reaches both gateways through the relay, both rules
fire, each task's TaskWasScheduled comes back to the gateway that created it, the fleet quota counts both,
and `mw-gateway fleet` shows both gateways with their heartbeat."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx

from gateway.fleet import names
from gateway.fleet.relay import MW_PATH
from gateway.runtime.lifecycle import Gateway, load_all
from gateway.sim.mobility_work import run_mobility_work_sim
from gateway.sim.nats_cluster import NatsCluster, free_port
from tests.e2e.helpers import REPO, wait_for
from tests.fleet.harness import SECRET, new_bus, running_relay

API_KEY = "fleet-e2e-key-0123456789"


async def cli(*args: str) -> str:
    """`mw-gateway ARGS` in a subprocess (in a thread: the gateways keep running in this loop)."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


RULES = """\
- id: lube-reorder
  when: {signal: cmms.stock.LUBE-5L, below: 5}
  task: {equipment: STORE-01, description: "Reorder LUBE-5L ({{ value }} left)", assignees: [3]}
"""


def write_config(tmp: Path, gateway_id: str, *, sim_url: str, urls: list[str], fleet: str) -> Path:
    folder = tmp / gateway_id
    (folder / "rules").mkdir(parents=True)
    (folder / "rules" / "stock.yaml").write_text(RULES)
    path = folder / "gateway.yaml"
    path.write_text(f"""gateway:
  id: {gateway_id}
  state_dir: ./state
  rules: rules/
cmms:
  kind: mobility_work
  url: {sim_url}
  api_key: {API_KEY}
  plan: starter
  monthly_quota: 30
http:
  listen: 127.0.0.1:{free_port()}
  webhook_secret: {SECRET}
dispatcher:
  idle_poll: 100ms
fleet:
  nats: [{", ".join(urls)}]
  name: {fleet}
  quota: shared
  quota_share: 0.2
  webhooks: relay
  heartbeat: 1s
""")
    return path


async def test_two_gateways_in_a_fleet(tmp_path: Path, nats_cluster: NatsCluster) -> None:
    bus = new_bus(nats_cluster.urls)
    async with (
        running_relay(bus, gateways=("line1", "line2")) as relay,
        run_mobility_work_sim(api_key=API_KEY, webhook_url=relay.url + MW_PATH, webhook_secret=SECRET) as sim,
    ):
        gws = []
        for name in ("line1", "line2"):
            config, rules = load_all(
                write_config(tmp_path, name, sim_url=sim.url, urls=nats_cluster.urls, fleet=bus.name)
            )
            gw = Gateway(config, rules)
            await gw.start()
            gws.append(gw)
        try:
            await wait_for(lambda: all(g.fleet.consumer is not None for g in gws), what="both consumers")
            out = await sim.send_webhook("SparePartWasOutOfStock", article="LUBE-5L")
            assert out.status == 200 and out.payload["_event"] == "SparePartWasOutOfStock"
            await wait_for(lambda: len(sim.state.tasks) == 2, what="one task from each gateway")
            assert sorted(t.metadata["gateway"] for t in sim.state.tasks) == ["line1", "line2"]

            async def reconciled() -> bool:
                for gw in gws:
                    tasks = await gw.store.ledger.tasks()
                    if len(tasks) != 1 or tasks[0].firing_uuid is None:
                        return False
                return True

            await wait_for(reconciled, what="each TaskWasScheduled back in the gateway that created the task")
            for gw in gws:
                (task,) = await gw.store.ledger.tasks()
                sim_task = next(t for t in sim.state.tasks if t.id == task.task_id)
                assert sim_task.metadata["gateway"] == gw.config.gateway.id
            from gateway.runtime.views import web_deps
            from gateway.web.status import collect_status

            fleet_status = (await collect_status(web_deps(gws[0])))["fleet"]
            assert fleet_status["connected"] and fleet_status["consumed"]["acked"] >= 2
            assert fleet_status["fleet_quota_used"] in (1, 2)  # the count at its last reservation
            quota_kv = await relay.relay.js.key_value(names.quota_bucket(bus.name))
            keys = await quota_kv.keys()
            assert len(keys) == 1 and (await quota_kv.get(keys[0])).value == b"2"
            await wait_for(
                lambda: all(g.fleet.heartbeat and g.fleet.heartbeat.sent for g in gws), what="heartbeats"
            )
            config = tmp_path / "line1" / "gateway.yaml"

            async def listed() -> list[dict[str, object]]:
                # A fresh connection may read the status bucket from a replica a beat behind the leader
                # (direct get): a first heartbeat can take a moment to show.
                rows = json.loads(await cli("fleet", "-c", str(config), "--format", "json"))["gateways"]
                return rows if [r["gateway"] for r in rows] == ["line1", "line2"] else []

            rows = await wait_for(listed, what="both gateways in `mw-gateway fleet`")
            assert all(r["age_s"] is not None and not r["stale"] for r in rows)
            table = await cli("fleet", "-c", str(config))
            assert table.splitlines()[0].split()[:2] == ["GATEWAY", "AGE"] and "line2" in table
            async with httpx.AsyncClient() as http:  # the relay's status page shows the same table
                page = (await http.get(relay.url + "/")).text
                api = (await http.get(relay.url + "/api/fleet")).json()
            assert "<td>line1</td>" in page and "<td>line2</td>" in page
            assert [r["gateway"] for r in api["gateways"]] == ["line1", "line2"]
        finally:
            for gw in gws:
                await gw.stop()
