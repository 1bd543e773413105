"""Power cuts: the real `mw-gateway run` SIGKILLed at 50 random moments while a Modbus counter makes it fire
continuously, the Mobility Work simulator fails some calls (503s, committed-but-the-response-lost) and flaps
(down and up again every few seconds). Restarted after each kill.

After each restart: `PRAGMA integrity_check` is ok. At the end: one firing per counter step (nothing lost),
one outbox row per firing (nothing queued twice), every row delivered, every firing that became two tasks is
flagged `maybe_committed` on its row (what `mw-gateway outbox list` shows), and so is every request the
simulator committed but whose answer it dropped.

Reuses the outbox engineer's helpers from tests/e2e (the gateway subprocess, the config, the queries).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path

from gateway.sim.mobility_work import run_mobility_work_sim
from gateway.sim.plc import run_modbus_press
from gateway.sources import codec
from tests.conftest import _free_port
from tests.e2e.helpers import wait_for
from tests.e2e.test_power_cut import API_KEY, db_rows, firing_count, last_key, storm_gateway, undelivered
from torture import Report

KILLS = int(os.environ.get("TORTURE_KILLS", "50"))


def integrity(state_dir: Path) -> str:
    conn = sqlite3.connect(state_dir / "gateway.sqlite3", timeout=10)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


async def run(report: Report) -> None:
    rng = random.Random(20260309)
    with tempfile.TemporaryDirectory(prefix="torture-power-") as tmp:
        await _campaign(report, rng, Path(tmp))


async def _campaign(report: Report, rng: random.Random, tmp: Path) -> None:
    http_port = _free_port()
    async with (
        run_mobility_work_sim(api_key=API_KEY) as sim,
        run_modbus_press(simulate=False, units=(1,)) as plc,
    ):
        gw = storm_gateway(tmp, sim, plc, http_port)
        state_dir = tmp / "state"

        strokes = 0
        stroking = asyncio.Event()
        flaps = 0

        async def press() -> None:
            nonlocal strokes
            while True:
                await stroking.wait()
                strokes += rng.choice((1, 1, 1, 2, 3))
                await plc.set_holding(0, codec.encode(strokes, "uint32"))
                await asyncio.sleep(0.02)

        async def flap() -> None:
            nonlocal flaps
            while True:
                await asyncio.sleep(rng.uniform(1.0, 4.0))
                await sim.down()
                flaps += 1
                await asyncio.sleep(rng.uniform(0.2, 1.5))
                await sim.up()

        tasks = [asyncio.create_task(press()), asyncio.create_task(flap())]
        kills = 0
        try:
            gw.start()
            await gw.wait_healthy_http()
            stroking.set()
            await wait_for(lambda: state_dir.exists() and firing_count(state_dir) > 0, what="a first firing")
            while kills < KILLS:
                if kills % 4 == 3:
                    await asyncio.sleep(rng.uniform(0.05, 0.8))  # during start-up
                else:
                    await gw.wait_healthy_http()
                    await asyncio.sleep(rng.uniform(0.0, 0.9))  # while firing and delivering
                gw.kill()
                kills += 1
                await asyncio.sleep(rng.uniform(0.0, 0.3))  # the press keeps running while we are dead
                result = integrity(state_dir)
                report.check(result == "ok", f"integrity_check after kill {kills}: {result}")
                gw.start()
            stroking.clear()
            tasks[1].cancel()
            await asyncio.gather(tasks[1], return_exceptions=True)
            await sim.up()
            await gw.wait_healthy_http()
            final = strokes
            await wait_for(
                lambda: last_key(state_dir) == final, timeout_s=60, what=f"the firing of stroke {final}"
            )
            await wait_for(lambda: undelivered(state_dir) == 0, timeout_s=120, what="every row delivered")
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            if gw.proc is not None:
                gw.stop()

        report.fact(f"{kills} SIGKILLs, {flaps} simulator outages, {final} counter steps")
        report.check(kills == KILLS, f"{KILLS} kills made")
        report.check(integrity(state_dir) == "ok", "integrity_check after the last stop")
        keys = [str(r[0]) for r in db_rows(state_dir, "SELECT key FROM firings")]
        steps = sorted(int(float(k.split(":", 1)[1])) for k in keys)
        missing = sorted(set(range(1, final + 1)) - set(steps))
        report.check(
            not missing, f"nothing lost: one firing per counter step 1..{final} (missing {missing[:10]})"
        )
        report.check(len(set(keys)) == len(keys), "no firing key stored twice")
        (outbox,) = db_rows(state_dir, "SELECT COUNT(*), COUNT(DISTINCT firing_id) FROM outbox")
        report.check(
            outbox == (len(keys), len(keys)), f"one outbox row per firing (rows, distinct: {outbox})"
        )
        rows = db_rows(
            state_dir,
            "SELECT f.uuid, o.status, o.maybe_committed FROM firings f JOIN outbox o ON o.firing_id = f.id",
        )
        statuses = Counter(str(s) for _, s, _ in rows)
        report.check(set(statuses) == {"delivered"}, f"every row delivered ({dict(statuses)})")
        flagged = {str(uid) for uid, _, maybe in rows if maybe}
        per_firing = Counter(t.metadata.get("firing") for t in sim.state.tasks)
        report.check(
            set(per_firing) == {str(uid) for uid, _, _ in rows}, "every firing is a task in the CMMS"
        )
        duplicated = {uid for uid, n in per_firing.items() if n > 1}
        report.check(
            duplicated <= flagged, f"every duplicate task flagged on its row ({len(duplicated)} duplicates)"
        )
        lost = {r.body["metadata"]["firing"] for r in sim.state.requests if r.fault == "commit_lost"}
        report.check(bool(lost), f"commit_lost exercised ({len(lost)} firings)")
        report.check(lost <= flagged, "every committed-but-lost request flagged maybe_committed")
        report.fact(
            f"{len(per_firing)} firings delivered, {len(duplicated)} duplicate tasks, {len(flagged)} flagged"
        )
        report.check("Traceback" not in gw.output, "no traceback in the gateway's log")
