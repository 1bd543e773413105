"""Links: the real `mw-gateway run` reads a Modbus PLC, an OPC UA PLC (each a separate process) and an MQTT
broker (mosquitto); each of them is killed (SIGKILL), frozen (SIGSTOP for longer than the timeouts) and
restarted, in turn, repeatedly. One rule per source is over its threshold the whole time.

Verified: after every fault every source is back `up` by itself (no restart of the gateway); the CMMS got
exactly one task per rule (a link drop is not a re-arm: no fault storm reaches the CMMS); the gateway's log
holds no traceback and at most one ERROR per link drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
import httpx

from gateway.sim.mobility_work import run_mobility_work_sim
from tests.conftest import _free_port
from tests.e2e.helpers import GatewayProcess, wait_for, write_config
from torture import Report, keep_log

API_KEY = "links-key-0123456789"
ROUNDS = int(os.environ.get("TORTURE_LINK_ROUNDS", "5"))  # x 3 targets x 3 faults
FREEZE_S = 5.0
RULES = """
- id: press-hot
  when: {signal: press1.temp, above: 90}
  task: {equipment: EQ-0001, assignees: [3], description: "Press too hot: {{ value }}"}
- id: opcua-hot
  when: {signal: press2.temp, above: 60}
  task: {equipment: EQ-0001, assignees: [3], description: "OPC UA press too hot: {{ value }}"}
- id: oven-hot
  when: {signal: oven.temp, above: 90}
  task: {equipment: EQ-0001, assignees: [3], description: "Oven too hot: {{ value }}"}
"""


class Proc:
    """One fault target: a child process we can kill, freeze and start again on the same port."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def listening(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listening on {port}")


async def publish_oven(port: int, *, retain: bool = True) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.publish("plant/oven/temp", b"95.5", qos=1, retain=retain)


async def sources(http_port: int) -> dict[str, str]:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{http_port}/api/status", timeout=5)
        body: dict[str, Any] = r.json()
        return {s["name"]: s["link"] for s in body["sources"]}


async def run(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="torture-links-") as tmp:
        await _campaign(report, Path(tmp), random.Random(11))


async def _campaign(report: Report, tmp: Path, rng: random.Random) -> None:
    http_port, modbus_port, opcua_port, mqtt_port = (_free_port() for _ in range(4))
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    targets = {
        "press1": Proc(
            "modbus PLC",
            [sys.executable, "-m", "torture.plc_proc", "modbus", str(modbus_port)],
            tmp / "modbus.log",
        ),
        "press2": Proc(
            "OPC UA PLC",
            [sys.executable, "-m", "torture.plc_proc", "opcua", str(opcua_port)],
            tmp / "opcua.log",
        ),
        "oven": Proc("mosquitto", ["mosquitto", "-c", str(conf)], tmp / "mosquitto.log"),
    }
    ports = {"press1": modbus_port, "press2": opcua_port, "oven": mqtt_port}
    fast = "    reconnect_delay: 200ms\n    reconnect_max_delay: 2s\n    timeout: 2s\n"
    extra = f"""  press2:
    protocol: opcua
    url: opc.tcp://127.0.0.1:{opcua_port}
    publishing_interval: 200ms
{fast}    signals:
      temp: ns=2;s=Press1.Temperature
  oven:
    protocol: mqtt
    url: mqtt://127.0.0.1:{mqtt_port}
    keepalive: 2s
{fast}    signals:
      temp: plant/oven/temp
"""
    async with run_mobility_work_sim(api_key=API_KEY) as sim:
        config = write_config(
            tmp,
            mw_url=sim.url,
            api_key=API_KEY,
            http_port=http_port,
            plc_port=modbus_port,
            rules=RULES,
            extra=extra,
        )
        text = config.read_text().replace("    poll: 100ms\n", f"    poll: 100ms\n{fast}")
        config.write_text(text)
        gw = GatewayProcess(config, env={"MW_API_KEY": API_KEY}, http_port=http_port)
        faults: dict[str, int] = dict.fromkeys(targets, 0)
        recovery: dict[str, list[float]] = {"kill": [], "freeze": [], "restart": []}
        try:
            for name, target in targets.items():
                target.start()
                await listening(ports[name])
            await publish_oven(mqtt_port)
            gw.start()
            await gw.wait_healthy_http()

            async def all_up() -> bool:
                return set((await sources(http_port)).values()) == {"up"}

            await wait_for(all_up, timeout_s=30, what="every source up at start")
            # a retained value is the last known one, not an observation (docs/sources.md): the oven speaks
            await publish_oven(mqtt_port, retain=False)
            try:
                await wait_for(lambda: len(sim.state.tasks) == 3, timeout_s=30, what="one task per rule")
            except AssertionError:
                tail = "\n".join(gw.output.splitlines()[-30:])
                report.check(False, f"one task per rule at start: {len(sim.state.tasks)} tasks; log:\n{tail}")
                return
            report.fact("3 sources up, 3 rules fired once")
            for rnd in range(ROUNDS):
                for name, target in targets.items():
                    for fault in rng.sample(["kill", "freeze", "restart"], 3):
                        started = time.monotonic()
                        if fault == "kill":
                            target.stop(signal.SIGKILL)
                            await asyncio.sleep(rng.uniform(0.5, 3.0))
                            target.start()
                        elif fault == "restart":
                            target.stop(signal.SIGTERM)
                            target.start()
                        else:
                            target.send(signal.SIGSTOP)
                            await asyncio.sleep(FREEZE_S)
                            target.send(signal.SIGCONT)
                        faults[name] += 1
                        if fault != "freeze":
                            await listening(ports[name])
                            if name == "oven":
                                await publish_oven(
                                    mqtt_port
                                )  # the device publishes again after a broker restart
                        try:
                            await wait_for(all_up, timeout_s=60, what="every source up")
                            ok = True
                        except AssertionError:
                            ok = False
                        detail = "" if ok else f", {await sources(http_port)}"
                        recovery[fault].append(time.monotonic() - started)
                        report.check(
                            ok,
                            f"round {rnd + 1}: {name} {fault}: every source up again by itself"
                            f" ({time.monotonic() - started:.1f}s{detail})",
                        )
                        report.check(
                            gw.proc is not None and gw.proc.poll() is None,
                            f"gateway alive after {name} {fault}",
                        )
            await asyncio.sleep(2.0)  # let any late firing reach the simulator
        finally:
            if gw.proc is not None:
                gw.stop()
            for target in targets.values():
                target.stop()

        for fault, took in recovery.items():
            if took:
                report.fact(
                    f"{fault}: every source up again {statistics.median(took):.1f}s median,"
                    f" {max(took):.1f}s max after the fault began (n={len(took)})"
                )
        rules = sorted(str(t.metadata.get("rule")) for t in sim.state.tasks)
        report.fact(f"{sum(faults.values())} faults ({faults}); tasks in the CMMS: {rules}")
        report.check(
            rules == ["opcua-hot", "oven-hot", "press-hot"],
            "exactly one task per rule: no fault storm reached the CMMS",
        )
        output = gw.output
        kept = keep_log("links-gateway.log", output)
        lines = output.splitlines()
        for name in targets:
            downs = sum(1 for x in lines if " ERROR " in x and f"source {name} " in x and "link down" in x)
            ups = sum(1 for x in lines if " INFO " in x and f"source {name} " in x and "link recovered" in x)
            report.fact(f"{name}: {faults[name]} faults, {downs} link-down ERRORs, {ups} recoveries logged")
            report.check(downs <= faults[name], f"{name}: at most one link-down ERROR per fault ({downs})")
        foreign = [
            x
            for x in lines
            if " ERROR " in x and not x.split(" ERROR ", 1)[1].lstrip().startswith("gateway.")
        ]
        loggers = sorted({x.split(" ERROR ", 1)[1].split(":", 1)[0].strip() for x in foreign})
        report.check(not foreign, f"no ERROR from protocol libraries ({len(foreign)} from {loggers})")
        report.check(
            "Traceback" not in output,
            f"no traceback in the gateway's log (kept in {kept})",
        )
