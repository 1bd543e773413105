"""A full disk: the real `mw-gateway run` with its state directory on a size-limited tmpfs (`mount -t tmpfs
-o size=4m`, root only; else a loop-mounted ext4 image would do the same). A Modbus counter makes it fire
while a filler file takes every free byte; then the filler goes and space returns.

Verified: /healthz reports the disk (503 with a reason) while it is full; nothing that was committed before
(acknowledged) is lost; no firing is lost at all, because the engine holds what it cannot commit and retries;
the gateway recovers by itself when space returns (nothing to restart); a SIGKILL while the disk is full
loses nothing either (the counter's meter is on disk, the missed steps fire after the restart);
`PRAGMA integrity_check` is ok throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx

from gateway.sim.mobility_work import run_mobility_work_sim
from gateway.sim.plc import run_modbus_press
from gateway.sources import codec
from tests.conftest import _free_port
from tests.e2e.helpers import GatewayProcess, wait_for, write_config
from tests.e2e.test_power_cut import RULES, db_rows, last_key, undelivered
from torture import Report
from torture.power_cut import integrity

API_KEY = "disk-full-key-0123456789"
SIZE = "4m"


def fill(path: Path) -> int:
    """Write zeros until the filesystem refuses; returns the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            chunk = b"\0" * size
            while True:
                try:
                    n = os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
                written += n
                if n < size:
                    break
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
    return written


def mount(mnt: Path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mnt)], check=True)


def umount(mnt: Path) -> None:
    subprocess.run(["umount", "-l", str(mnt)], check=False)


async def run(report: Report) -> None:
    if os.geteuid() != 0:
        report.check(False, "the disk campaign needs root to mount a size-limited tmpfs")
        return
    with tempfile.TemporaryDirectory(prefix="torture-disk-") as tmp:
        mnt = Path(tmp) / "fs"
        mnt.mkdir()
        mount(mnt)
        try:
            await _campaign(report, Path(tmp), mnt)
        finally:
            umount(mnt)


async def healthz(port: int) -> tuple[int, list[str]]:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        body: dict[str, Any] = r.json()
        return r.status_code, [str(x) for x in body.get("reasons", [])]


async def _campaign(report: Report, tmp: Path, mnt: Path) -> None:
    http_port = _free_port()
    state_dir = mnt / "state"
    filler = mnt / "filler"
    async with (
        run_mobility_work_sim(api_key=API_KEY) as sim,
        run_modbus_press(simulate=False, units=(1,)) as plc,
    ):
        config = write_config(
            tmp, mw_url=sim.url, api_key=API_KEY, http_port=http_port, plc_port=plc.port, rules=RULES
        )
        text = config.read_text().replace("state_dir: ./state", f"state_dir: {state_dir}")
        config.write_text(text.replace("plan: premium", "plan: ultimate"))
        gw = GatewayProcess(config, env={"MW_API_KEY": API_KEY}, http_port=http_port)
        strokes = 0

        async def press(n: int) -> None:
            nonlocal strokes
            for _ in range(n):
                strokes += 1
                await plc.set_holding(0, codec.encode(strokes, "uint32"))
                await asyncio.sleep(0.05)

        try:
            gw.start()
            await gw.wait_healthy_http()
            await press(40)
            await wait_for(lambda: last_key(state_dir) == strokes, timeout_s=30, what="the first 40 firings")
            await wait_for(lambda: undelivered(state_dir) == 0, timeout_s=30, what="the first 40 delivered")
            status, reasons = await healthz(http_port)
            report.fact(f"{SIZE} tmpfs; before filling: /healthz {status} {reasons}")
            report.check(
                status == 503 and any("disk" in r for r in reasons),
                "a 4 MiB state filesystem is reported nearly full from the start (threshold 64 MiB)",
            )

            # Full: the filler takes every byte; the press keeps going.
            sim.set_faults()
            acknowledged = {str(r[0]) for r in db_rows(state_dir, "SELECT key FROM firings")}
            written = fill(filler)
            report.fact(f"filler: {written} bytes; acknowledged before: {len(acknowledged)} firings")
            await press(40)

            def beyond_nearly_full(reasons: list[str]) -> list[str]:
                return [r for r in reasons if not r.startswith("disk nearly full")]

            async def full_reported() -> list[str]:
                status, reasons = await healthz(http_port)
                return beyond_nearly_full(reasons) if status == 503 else []

            try:
                reasons = await wait_for(full_reported, timeout_s=30, what="/healthz to report the full disk")
                report.fact(f"while full: /healthz 503 {reasons}")
                report.check(True, "/healthz reports the full disk (503 and a reason)")
            except AssertionError:
                report.check(False, f"/healthz reports the full disk: {await healthz(http_port)}")
            report.check(
                gw.proc is not None and gw.proc.poll() is None, "the gateway keeps running on a full disk"
            )

            # Space returns: recovery by itself.
            filler.unlink()
            final = strokes
            await wait_for(
                lambda: last_key(state_dir) == final, timeout_s=60, what="the held firings committed"
            )
            await wait_for(lambda: undelivered(state_dir) == 0, timeout_s=60, what="every row delivered")
            report.check(
                True, "recovered by itself when space returned: held firings committed and delivered"
            )
            status, reasons = await healthz(http_port)
            report.check(not beyond_nearly_full(reasons), f"the disk-full reason cleared ({reasons})")

            # Full again, and a SIGKILL while full; restarted once space is back.
            written = fill(filler)
            await press(30)
            await asyncio.sleep(1.0)
            gw.kill()
            report.check(integrity(state_dir) == "ok", "integrity_check after a SIGKILL on a full disk")
            filler.unlink()
            gw.start()
            await gw.wait_healthy_http()
            final = strokes
            await wait_for(
                lambda: last_key(state_dir) == final, timeout_s=60, what="the steps missed while dead"
            )
            await wait_for(lambda: undelivered(state_dir) == 0, timeout_s=60, what="every row delivered")
        finally:
            with contextlib.suppress(FileNotFoundError):
                filler.unlink()
            if gw.proc is not None:
                gw.stop()

        keys = [str(r[0]) for r in db_rows(state_dir, "SELECT key FROM firings")]
        steps = sorted(int(float(k.split(":", 1)[1])) for k in keys)
        missing = sorted(set(range(1, final + 1)) - set(steps))
        report.check(
            acknowledged <= set(keys), "every firing acknowledged before the disk filled is still there"
        )
        report.check(
            not missing, f"no firing lost at all: one per counter step 1..{final} (missing {missing[:10]})"
        )
        report.check(len(keys) == len(set(keys)), "none stored twice")
        per_firing: dict[str, int] = {}
        for t in sim.state.tasks:
            uid = str(t.metadata.get("firing"))
            per_firing[uid] = per_firing.get(uid, 0) + 1
        report.check(len(per_firing) == len(keys), f"every firing a task in the CMMS ({len(per_firing)})")
        report.check(max(per_firing.values()) == 1, "no duplicate task (no lost response in this campaign)")
        report.check(integrity(state_dir) == "ok", "integrity_check at the end")
        report.check("Traceback" not in gw.output, "no traceback in the gateway's log")
