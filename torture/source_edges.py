"""Source edges, end to end through the real `mw-gateway run`: retained values from a dead device, and a
broker refusing a subscription.

An oven published 95.5 once, retained, and died. The broker (mosquitto with its dynamic-security plugin,
refusing subscriptions outside plant/#) is killed and restarted several times, so every reconnection hands the
retained value over again. The gateway also subscribes to a topic the broker refuses.

Verified: the retained 95.5 never fires the `above: 90` rule; the `stale` rule fires exactly once although the
value keeps being re-delivered (a dead device does not look alive); the refused subscription is one ERROR
naming the topic, however many reconnections; the first live message fires the `above` rule once; no
traceback in the gateway's log.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
from pathlib import Path

import aiomqtt

from gateway.sim.mobility_work import run_mobility_work_sim
from gateway.sim.plc import run_modbus_press
from tests.conftest import _free_port
from tests.e2e.helpers import GatewayProcess, wait_for, write_config
from torture import Report, keep_log
from torture.links import listening

API_KEY = "edges-key-0123456789"
RESTARTS = int(os.environ.get("TORTURE_EDGES_RESTARTS", "4"))
STALE_S = 4
RULES = f"""
- id: oven-hot
  when: {{signal: oven.temp, above: 90}}
  task: {{equipment: EQ-0001, assignees: [3], description: "Oven too hot: {{{{ value }}}}"}}
- id: oven-silent
  when: {{stale: oven.temp, for: {STALE_S}s}}
  task: {{equipment: EQ-0001, assignees: [3], description: "The oven sensor is silent"}}
"""
DYNSEC = {
    "defaultACLAccess": {
        "publishClientSend": True,
        "publishClientReceive": True,
        "subscribe": False,
        "unsubscribe": True,
    },
    "clients": [],
    "groups": [{"groupname": "anonymous", "roles": [{"rolename": "plant"}]}],
    "roles": [
        {"rolename": "plant", "acls": [{"acltype": "subscribePattern", "topic": "plant/#", "allow": True}]}
    ],
    "anonymousGroup": "anonymous",
}


def _plugin() -> Path:
    found = sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"))
    if not found:
        raise RuntimeError("mosquitto's dynamic-security plugin is missing (Debian package mosquitto)")
    return found[0]


async def run(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="torture-edges-") as tmp:
        await _campaign(report, Path(tmp))


async def _campaign(report: Report, tmp: Path) -> None:
    mqtt_port, http_port = _free_port(), _free_port()
    (tmp / "dynsec.json").write_text(json.dumps(DYNSEC))
    stay = "user root\n" if os.geteuid() == 0 else ""
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n{stay}"
        f"plugin {_plugin()}\nplugin_opt_config_file {tmp / 'dynsec.json'}\n"
    )
    broker_log = (tmp / "mosquitto.log").open("ab")

    def start_broker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=broker_log, stderr=subprocess.STDOUT)

    extra = f"""  oven:
    protocol: mqtt
    url: mqtt://127.0.0.1:{mqtt_port}
    keepalive: 2s
    reconnect_delay: 200ms
    reconnect_max_delay: 1s
    signals:
      temp: plant/oven/temp
      payroll: office/payroll
"""
    broker = start_broker()
    gw: GatewayProcess | None = None
    try:
        await listening(mqtt_port)
        async with aiomqtt.Client("127.0.0.1", mqtt_port) as client:  # the device's last word, then silence
            await client.publish("plant/oven/temp", b"95.5", qos=1, retain=True)
        async with run_modbus_press(simulate=False) as plc, run_mobility_work_sim(api_key=API_KEY) as sim:
            config = write_config(
                tmp,
                mw_url=sim.url,
                api_key=API_KEY,
                http_port=http_port,
                plc_port=plc.port,
                rules=RULES,
                extra=extra,
            )
            gw = GatewayProcess(config, env={"MW_API_KEY": API_KEY}, http_port=http_port)
            gw.start()
            await gw.wait_healthy_http()
            for _ in range(RESTARTS):  # every reconnection re-delivers the retained 95.5
                await asyncio.sleep(STALE_S / 2)
                broker.kill()
                broker.wait()
                broker = start_broker()
                await listening(mqtt_port)
            await asyncio.sleep(STALE_S / 2)

            def rules() -> list[str]:
                return sorted(str(t.metadata.get("rule")) for t in sim.state.tasks)

            try:
                await wait_for(lambda: "oven-silent" in rules(), timeout_s=30, what="the stale rule")
            except AssertionError:
                pass
            report.fact(f"{RESTARTS} broker restarts; tasks after them: {rules()}")
            report.check("oven-hot" not in rules(), "the retained 95.5 fired no `above` rule")
            report.check(
                rules().count("oven-silent") == 1,
                "the stale rule fired once though the retained value came back",
            )
            async with aiomqtt.Client("127.0.0.1", mqtt_port) as client:  # the device speaks again
                await client.publish("plant/oven/temp", b"96.5", qos=1)
            try:
                await wait_for(lambda: "oven-hot" in rules(), timeout_s=30, what="the live value's firing")
            except AssertionError:
                pass
            report.check(rules().count("oven-hot") == 1, "the first live message fired the `above` rule once")
            gw.stop()
            log = gw.output
            refused = [
                line for line in log.splitlines() if "refused the subscription to 'office/payroll'" in line
            ]
            report.fact(f"log lines naming the refused subscription: {len(refused)}")
            report.check(
                len([line for line in refused if "ERROR" in line]) == 1,
                "the refused subscription is one ERROR across every reconnection",
            )
            report.check("Traceback" not in log, "no traceback in the gateway's log")
            if report.failed:
                report.fact(f"gateway log kept at {keep_log('source_edges-gateway.log', log)}")
    finally:
        if gw is not None and gw.proc is not None and gw.proc.poll() is None:
            gw.kill()
        broker.kill()
        broker.wait()
        broker_log.close()
