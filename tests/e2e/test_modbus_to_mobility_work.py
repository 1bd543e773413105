"""The foundation's end-to-end path with real parts at every step: a pymodbus server, `mw-gateway run` in a
subprocess, and the Mobility Work simulator validating what it receives."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from pathlib import Path

from gateway.sim.mobility_work import run_mobility_work_sim
from gateway.sim.plc import run_modbus_press
from gateway.sources import codec
from tests.e2e.helpers import GatewayProcess, wait_for, write_config

API_KEY = "e2e-KEY-9f8e7d6c5b4a39281706f5e4d3c2b1a0"

OVERHEAT_RULE = """\
- id: press1-overheat
  name: Press 1 overheating
  when: {signal: press1.temp, above: 85, for: 1s, reset_below: 80}
  cooldown: 1h
  task:
    equipment: EQ-PRESS-01
    description: "Press 1 overheating ({{ value | round(1) }} °C)"
    assignees: [maintenance@factory.example, 3]
    duration: 2h
"""


def float32_regs(value: float) -> list[int]:
    return codec.encode(value, "float32")


async def test_register_over_threshold_makes_exactly_one_valid_task(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    http_port = free_port()
    async with (
        run_modbus_press(port=0, simulate=False) as plc,
        run_mobility_work_sim(api_key=API_KEY, auto_webhooks=False) as sim,
    ):
        await plc.set_holding(2, float32_regs(70.0))
        config = write_config(
            tmp_path,
            mw_url=sim.url,
            api_key=API_KEY,
            http_port=http_port,
            plc_port=plc.port,
            rules=OVERHEAT_RULE,
        )
        gw = GatewayProcess(config, env={"MW_API_KEY": API_KEY}, http_port=http_port)
        gw.start()
        try:
            await gw.wait_healthy_http()
            # Below the threshold: nothing. Then a short spike (shorter than `for`): still nothing.
            await asyncio.sleep(0.5)
            await plc.set_holding(2, float32_regs(90.0))
            await asyncio.sleep(0.3)
            await plc.set_holding(2, float32_regs(70.0))
            await asyncio.sleep(1.5)
            assert sim.state.tasks == []
            # Over the threshold for longer than `for`: one task, and only one while it stays high.
            await plc.set_holding(2, float32_regs(92.5))
            await wait_for(lambda: sim.state.tasks, what="the simulator to receive a task")
            await asyncio.sleep(2.0)
        finally:
            code = gw.stop()
        assert code == 0, gw.output
        assert len(sim.state.tasks) == 1, [t.body for t in sim.state.tasks]
        body = sim.state.tasks[0].body
        assert body["metadata"]["gateway"] == "e2e-line"
        assert body["metadata"]["rule"] == "press1-overheat"
        assert uuid.UUID(body["metadata"]["firing"]).version == 5
        assert body["equipment"] == {"type": "external", "value": "EQ-PRESS-01"}
        assert body["description"] == "Press 1 overheating (92.5 °C)"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", body["startDateTime"])
        assert [a for a in body["assignees"]] == [
            {"type": "email", "value": "maintenance@factory.example"},
            {"type": "native", "value": 3},
        ]
        posts = [r for r in sim.state.requests if r.path == "/partners/v1/tasks"]
        assert all(r.headers.get("api-key") == API_KEY for r in posts)
        assert "mw-gateway/" in posts[0].headers.get("user-agent", "")
        # The key never reaches the gateway's own output, even at start-up and shutdown.
        assert API_KEY not in gw.output
        assert "rule press1-overheat fired" in gw.output


async def test_api_key_never_logged_even_when_refused(tmp_path: Path, free_port: Callable[[], int]) -> None:
    """A wrong key: start-up check fails, deliveries are refused (401), DEBUG logging. No trace of the key."""
    http_port = free_port()
    wrong_key = "WRONG-key-0123456789abcdef0123456789abcdef"
    async with (
        run_modbus_press(port=0, simulate=False) as plc,
        run_mobility_work_sim(api_key=API_KEY, auto_webhooks=False) as sim,
    ):
        await plc.set_holding(2, float32_regs(99.0))
        config = write_config(
            tmp_path,
            mw_url=sim.url,
            api_key=wrong_key,
            http_port=http_port,
            plc_port=plc.port,
            rules=OVERHEAT_RULE,
            extra="logging: {level: DEBUG, format: json}\n",
        )
        gw = GatewayProcess(config, env={"MW_API_KEY": wrong_key}, http_port=http_port)
        gw.start()
        try:
            await gw.wait_healthy_http()
            await wait_for(
                lambda: any(r.path == "/partners/v1/tasks" for r in sim.state.requests),
                what="a refused delivery attempt",
            )
            await asyncio.sleep(0.3)
        finally:
            gw.stop()
        assert sim.state.tasks == []
        output = gw.output
        assert "401" in output or "refused" in output.lower()
        assert wrong_key not in output
        assert wrong_key[:12] not in output
