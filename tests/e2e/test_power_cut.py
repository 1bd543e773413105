"""Power cuts: the real `mw-gateway run` killed with SIGKILL at random moments, more than 20 times, while a
Modbus counter makes it fire continuously and the Mobility Work simulator fails some calls; restarted each
time. Afterwards, from the SQLite file and the simulator's record:

- nothing lost: the firing keys are exactly one per counter step, from the first step to the last value;
- nothing queued twice: one firing and one outbox row per key;
- every firing delivered, and a firing that became two tasks always has its row flagged `maybe_committed`
  (a request in flight at the kill, or a response the simulator dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from gateway.sim.mobility_work import Fault, MobilityWorkSim, run_mobility_work_sim
from gateway.sim.plc import ModbusPlc, run_modbus_press
from gateway.sources import codec
from tests.e2e.helpers import GatewayProcess, wait_draining, wait_for, write_config

API_KEY = "power-cut-key-0123456789"
KILLS = 22
RULES = """
- id: strokes
  when:
    counter: press1.strokes
    every: 1
  while_open: create
  task:
    equipment: EQ-0001
    description: "Stroke {{ value | int }}"
    assignees: [3]
"""


def storm_gateway(tmp: Path, sim: MobilityWorkSim, plc: ModbusPlc, http_port: int) -> GatewayProcess:
    """The storm set-up shared with torture/power_cut.py: 10% 5xx and 5% commit_lost on the task endpoint,
    a dispatcher allowed to go fast, a plan without a quota in the way; the gateway not yet started."""
    sim.set_faults(
        Fault("http_5xx", probability=0.1, seed=1, path="/partners/v1/tasks"),
        Fault("commit_lost", probability=0.05, seed=2, path="/partners/v1/tasks"),
    )
    config = write_config(
        tmp, mw_url=sim.url, api_key=API_KEY, http_port=http_port, plc_port=plc.port, rules=RULES
    )
    text = config.read_text().replace("dispatcher:\n", "dispatcher:\n  rate_limit: 500\n  concurrency: 8\n")
    config.write_text(text.replace("plan: premium", "plan: ultimate"))
    return GatewayProcess(config, env={"MW_API_KEY": API_KEY}, http_port=http_port)


def db_rows(state_dir: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(state_dir / "gateway.sqlite3", timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_sigkill_at_random_moments_loses_nothing_and_queues_nothing_twice(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    rng = random.Random(20260101)
    http_port = free_port()
    async with (
        run_mobility_work_sim(api_key=API_KEY) as sim,
        run_modbus_press(simulate=False, units=(1,)) as plc,
    ):
        gw = storm_gateway(tmp_path, sim, plc, http_port)
        state_dir = tmp_path / "state"

        strokes = 0
        stroking = asyncio.Event()

        async def press() -> None:
            nonlocal strokes
            while True:
                await stroking.wait()
                strokes += rng.choice((1, 1, 1, 2, 3))
                await plc.set_holding(0, codec.encode(strokes, "uint32"))
                await asyncio.sleep(0.02)

        presser = asyncio.create_task(press())
        try:
            # First run: let the gateway see the counter at 0 and fire once, so its baseline is on the disk.
            gw.start()
            await gw.wait_healthy_http()
            stroking.set()
            await wait_for(lambda: state_dir.exists() and firing_count(state_dir) > 0, what="a first firing")
            kills = 0
            started = time.monotonic()
            while kills < KILLS:
                if kills % 4 == 3:
                    await asyncio.sleep(rng.uniform(0.05, 0.8))  # during start-up
                else:
                    await gw.wait_healthy_http()
                    await asyncio.sleep(rng.uniform(0.0, 0.9))  # while firing and delivering
                gw.kill()
                kills += 1
                await asyncio.sleep(rng.uniform(0.0, 0.3))  # the press keeps running while we are dead
                gw.start()
            stroking.clear()
            campaign_s = time.monotonic() - started
            await gw.wait_healthy_http()
            final = strokes
            await wait_for(
                lambda: last_key(state_dir) == final, timeout_s=30, what=f"the firing of stroke {final}"
            )
            await wait_draining(lambda: undelivered(state_dir), what="rows not delivered")
        finally:
            presser.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await presser
            if gw.proc is not None:
                gw.stop()

        output = gw.output
        assert kills >= 20 and campaign_s < 90
        # Nothing lost: exactly one firing per counter step, 1..final.
        keys = [str(r[0]) for r in db_rows(state_dir, "SELECT key FROM firings")]
        steps = sorted(int(float(k.split(":", 1)[1])) for k in keys)
        assert steps == list(range(1, final + 1)), f"missing: {sorted(set(range(1, final + 1)) - set(steps))}"
        # Nothing queued twice: one outbox row per firing (keys are unique by construction; say it anyway).
        assert len(set(keys)) == len(keys)
        (outbox_rows,) = db_rows(state_dir, "SELECT COUNT(*), COUNT(DISTINCT firing_id) FROM outbox")
        assert outbox_rows == (len(keys), len(keys))
        # Every firing delivered; a second task only where the row says the CMMS may have one already.
        rows = db_rows(
            state_dir,
            "SELECT f.uuid, o.status, o.maybe_committed FROM firings f JOIN outbox o ON o.firing_id = f.id",
        )
        assert {status for _, status, _ in rows} == {"delivered"}
        flagged = {str(uid) for uid, _, maybe in rows if maybe}
        tasks = Counter(t.metadata.get("firing") for t in sim.state.tasks)
        assert set(tasks) == {str(uid) for uid, _, _ in rows}
        duplicated = {uid for uid, n in tasks.items() if n > 1}
        assert duplicated <= flagged
        lost = {r.body["metadata"]["firing"] for r in sim.state.requests if r.fault == "commit_lost"}
        assert lost and lost <= flagged
        assert "Traceback" not in output


def firing_count(state_dir: Path) -> int:
    try:
        return int(db_rows(state_dir, "SELECT COUNT(*) FROM firings")[0][0])  # type: ignore[call-overload]
    except sqlite3.Error:
        return 0


def last_key(state_dir: Path) -> int:
    rows = db_rows(state_dir, "SELECT key FROM firings")
    return max((int(float(str(r[0]).split(":", 1)[1])) for r in rows), default=0)


def undelivered(state_dir: Path) -> int:
    return int(db_rows(state_dir, "SELECT COUNT(*) FROM outbox WHERE status != 'delivered'")[0][0])  # type: ignore[call-overload]
