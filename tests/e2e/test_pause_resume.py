"""401 pauses all sending and resumes when the key is fixed and the gateway reloaded (SIGHUP), against the
real `mw-gateway run`: the bad key is reported at start-up and on /healthz, the firings stay queued, the
simulator sees no flood of refused requests, and after the reload everything is delivered.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx

from gateway.sim.mobility_work import run_mobility_work_sim
from gateway.sim.plc import run_modbus_press
from gateway.sources import codec
from tests.e2e.helpers import GatewayProcess, wait_for, write_config

GOOD_KEY = "good-key-0123456789abcdef"
BAD_KEY = "revoked-key-0123456789abc"
RULES = """
- id: press1-check
  when:
    counter: press1.strokes
    every: 1
  while_open: create
  task:
    equipment: EQ-0001
    description: "Check press 1 at {{ value | int }} strokes"
    assignees: [3]
"""


def outbox_statuses(config: Path) -> list[str]:
    conn = sqlite3.connect(config.parent / "state" / "gateway.sqlite3", timeout=10)
    try:
        return [str(r[0]) for r in conn.execute("SELECT status FROM outbox ORDER BY id")]
    except sqlite3.Error:
        return []
    finally:
        conn.close()


async def test_401_pauses_and_resumes_after_the_key_is_fixed_and_the_gateway_reloaded(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    http_port = free_port()
    async with (
        run_mobility_work_sim(api_key=GOOD_KEY) as sim,
        run_modbus_press(simulate=False, units=(1,)) as plc,
    ):
        config = write_config(
            tmp_path, mw_url=sim.url, api_key=BAD_KEY, http_port=http_port, plc_port=plc.port, rules=RULES
        )
        gw = GatewayProcess(config, env={"MW_API_KEY": BAD_KEY}, http_port=http_port)
        gw.start()
        try:
            await gw.wait_healthy_http()
            await wait_for(lambda: "API key was refused" in gw.output, what="the start-up report")
            await wait_for(lambda: outbox_statuses(config) == [] and len(sim.state.requests) >= 1)
            await plc.set_holding(0, codec.encode(3, "uint32"))  # 0 -> 3: three firings
            await wait_for(lambda: len(outbox_statuses(config)) == 3, what="three queued firings")
            await wait_for(lambda: "sending paused" in gw.output, what="the pause")

            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
                health = await client.get("/healthz")
                assert health.status_code == 503
                assert any("CMMS paused" in r and "401" in r for r in health.json()["reasons"])
                await asyncio.sleep(0.5)  # requests that were already in flight, if any, land
                refused = [r for r in sim.state.requests if r.path == "/partners/v1/tasks"]
                assert refused and {r.status for r in refused} == {401}
                assert len(refused) == 1  # the others waited for their rate-limit slot and stayed home
                await asyncio.sleep(1.0)  # paused: no request goes out before the (5 min) probe
                assert len([r for r in sim.state.requests if r.path == "/partners/v1/tasks"]) == 1
                assert outbox_statuses(config) == ["queued"] * 3  # nothing dropped, nothing dead

                # The operator fixes the key in gateway.yaml and reloads.
                config.write_text(config.read_text().replace("${MW_API_KEY}", GOOD_KEY))
                assert gw.proc is not None
                gw.proc.send_signal(signal.SIGHUP)
                await wait_for(
                    lambda: outbox_statuses(config) == ["delivered"] * 3, what="delivery after reload"
                )
                health = await client.get("/healthz")
                assert health.status_code == 200, health.json()
            assert len(sim.state.tasks) == 3
            assert len({t.metadata["firing"] for t in sim.state.tasks}) == 3  # one task per firing
            output = gw.output
            assert output.count("sending paused") == 1  # one ERROR, not one per refused request
            assert "resumed" in output
            assert GOOD_KEY not in output and BAD_KEY not in output  # never a secret in the log
        finally:
            gw.stop()
