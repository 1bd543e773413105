"""A real Gateway in the test's event loop, for the operations tests: a pymodbus press on loopback, the
Mobility Work simulator, and the gateway's own HTTP server on a free port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.runtime.lifecycle import Gateway
from gateway.runtime.reload import load_all
from gateway.sim.mobility_work import MobilityWorkSim, run_mobility_work_sim
from gateway.sim.plc import ModbusPlc, run_modbus_press
from gateway.sources import codec
from tests.e2e.helpers import wait_for

API_KEY = "ops-test-key-5f2a9c71e0"

RULES = """
- id: press1-lubrication
  name: Lubricate press 1 every 1,000 strokes
  when: {counter: press1.strokes, every: 1000, unit: strokes}
  task:
    equipment: EQ-PRESS-01
    description: "Lubricate press 1 at {{ value | int }} strokes"
    assignees: [maintenance@factory.example]
- id: press1-overheat
  when: {signal: press1.temp, above: 85, for: 1h}
  task: {equipment: EQ-PRESS-01, description: "Press 1 overheating ({{ value }} °C)", assignees: [3]}
"""


@dataclass
class Running:
    gw: Gateway
    plc: ModbusPlc
    sim: MobilityWorkSim
    url: str  # http://127.0.0.1:PORT

    async def set_strokes(self, value: int) -> None:
        await self.plc.set_holding(0, codec.encode(value, "uint32"))

    async def wait_for_sample(self, signal: str, value: Any) -> None:
        def seen() -> bool:
            s = self.gw.engine.last_values.get(signal)
            return s is not None and s.value == value

        await wait_for(seen, what=f"{signal} == {value}")


def write_config(
    tmp: Path, *, mw_url: str, http_port: int, plc_port: int, http_extra: str = "", rules: str = RULES
) -> Path:
    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "rules" / "press1.yaml").write_text(rules)
    path = tmp / "gateway.yaml"
    path.write_text(f"""gateway:
  id: ops-test
  state_dir: ./state
  rules: rules/
  timezone: Europe/Paris
cmms:
  kind: mobility_work
  url: {mw_url}
  api_key: ${{MW_API_KEY}}
  plan: premium
  network_name: Ops Test
http:
  listen: 127.0.0.1:{http_port}
{http_extra}
dispatcher:
  retry_initial: 200ms
  retry_max: 1s
  idle_poll: 100ms
  pause_probe_interval: 200ms
sources:
  press1:
    protocol: modbus
    host: 127.0.0.1
    port: {plc_port}
    unit: 1
    poll: 100ms
    signals:
      strokes: {{holding: 0, type: uint32}}
      temp:    {{holding: 2, type: float32}}
""")
    return path


@contextlib.asynccontextmanager
async def running_gateway(
    tmp: Path, port: int, monkeypatch: pytest.MonkeyPatch, *, http_extra: str = "", rules: str = RULES
) -> AsyncIterator[Running]:
    monkeypatch.setenv("MW_API_KEY", API_KEY)
    async with (
        run_modbus_press(simulate=False, units=(1,)) as plc,
        run_mobility_work_sim(api_key=API_KEY) as sim,
    ):
        config_path = write_config(
            tmp, mw_url=sim.url, http_port=port, plc_port=plc.port, http_extra=http_extra, rules=rules
        )
        config, rules = load_all(config_path)
        gw = Gateway(config, rules)
        await gw.start()
        try:
            yield Running(gw, plc, sim, f"http://127.0.0.1:{port}")
        finally:
            await gw.stop()
