"""End-to-end latency: a register change on a real pymodbus server to the task arriving at the Mobility Work
simulator, through the real `mw-gateway run` (subprocess): poll, engine, durable commit, dispatch, HTTP.

Each event increments a counter register (rule `counter ... every: 1`: one task per step) at a random phase
of the poll cycle; the arrival is seen by polling the simulator's record every millisecond in the same
process as the PLC. Reported: p50/p99 of the raw latency, and the same minus the poll interval (what the
gateway adds beyond the worst-case wait for the next poll), and the gateway's own part, from the poll that
read the new value (the firing's time) to the task at the simulator. Product defaults otherwise: the
dispatcher's rate limit (5 requests/s) spaces tasks 200 ms apart, which is why the events are spaced more.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path

from gateway.sim.mobility_work import run_mobility_work_sim
from gateway.sim.plc import run_modbus_press
from gateway.sources import codec
from tests.conftest import _free_port
from tests.e2e.helpers import GatewayProcess, write_config
from tests.e2e.test_power_cut import db_rows

API_KEY = "bench-e2e-key-0123456789"
POLL_S = 0.1
EVENTS = 100
RULES = """
- id: strokes
  when: {counter: press1.strokes, every: 1}
  while_open: create
  task: {equipment: EQ-0001, description: "Stroke {{ value | int }}", assignees: [3]}
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure() -> tuple[list[float], list[float]]:
    rng = random.Random(5)
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        http_port = _free_port()
        async with (
            run_mobility_work_sim(api_key=API_KEY) as sim,
            run_modbus_press(simulate=False, units=(1,)) as plc,
        ):
            config = write_config(
                Path(tmp),
                mw_url=sim.url,
                api_key=API_KEY,
                http_port=http_port,
                plc_port=plc.port,
                rules=RULES,
            )
            config.write_text(config.read_text().replace("plan: premium", "plan: ultimate"))
            gw = GatewayProcess(config, env={"MW_API_KEY": API_KEY}, http_port=http_port)
            gw.start()
            latencies: list[float] = []
            arrivals: dict[str, float] = {}
            try:
                await gw.wait_healthy_http()
                await asyncio.sleep(1.0)  # the baseline (0) seen
                for step in range(1, EVENTS + 6):
                    before = len(sim.state.tasks)
                    await plc.set_holding(0, codec.encode(step, "uint32"))
                    t0 = time.perf_counter()
                    deadline = t0 + 10
                    while len(sim.state.tasks) == before and time.perf_counter() < deadline:  # noqa: ASYNC110
                        await asyncio.sleep(0.001)
                    if len(sim.state.tasks) == before:
                        raise RuntimeError(f"no task for step {step} within 10 s:\n{gw.output[-2000:]}")
                    if step > 5:  # warm-up: connections, first commits
                        latencies.append(time.perf_counter() - t0)
                        arrivals[f"strokes:{step}"] = time.time()
                    # A random phase of the poll cycle, and more than the dispatcher's default rate slot
                    # (5 requests/s toward the CMMS) since the last task, so that this measures latency,
                    # not the rate limit (closer events wait for their slot: up to 200 ms more each).
                    await asyncio.sleep(rng.uniform(0.2, 0.4))
            finally:
                gw.stop()
            rows = db_rows(Path(tmp) / "state", "SELECT key, fired_at FROM firings")
            fired = {str(key): float(at) for key, at in rows}  # type: ignore[arg-type]
    # From the poll that read the new value (the firing's time, the gateway's clock = this machine's) to
    # the task at the simulator: the gateway's own part, without the wait for the next poll.
    own = [at - fired[key] for key, at in arrivals.items() if key in fired]
    return latencies, own


def run() -> list[tuple[str, str, str]]:
    lat, own = asyncio.run(measure())
    p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
    note = (
        f"{len(lat)} events at random poll phases, Modbus poll {POLL_S * 1000:.0f} ms, real gateway process"
    )
    return [
        ("e2e: register change -> task at the simulator p50", f"{p50 * 1000:.0f} ms", note),
        ("e2e: register change -> task at the simulator p99", f"{p99 * 1000:.0f} ms", note),
        (
            "e2e: p50 / p99 minus the poll interval",
            f"{(p50 - POLL_S) * 1000:.0f} / {(p99 - POLL_S) * 1000:.0f} ms",
            "the poll wait is uniform in 0..poll: a negative p50 is normal",
        ),
        (
            "e2e: poll read -> task at the simulator p50 / p99",
            f"{pct(own, 0.5) * 1000:.1f} / {pct(own, 0.99) * 1000:.1f} ms",
            "the gateway's own part: engine, durable commit, dispatch, HTTP",
        ),
    ]


if __name__ == "__main__":
    for metric, value, note in run():
        print(f"{metric:<55} {value:>14}  {note}")
