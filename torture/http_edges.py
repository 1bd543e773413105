"""HTTP and maintenance edges (issue 18, items 10 and 11): floods on loopback against the gateway's real HTTP
server in a process of its own with a small descriptor limit, and a month of retention on a large database
while a watchdog loop measures how long the event loop is held.

Parts (each bounded in count and time):
- idle flood: 1,100 idle sockets (the report's figure) against a server limited to 256 descriptors; then
  /healthz must answer, the log must hold no traceback and one "connection limit reached" line.
- slow heads: 300 sockets sending a request head one byte at a time; all closed by header_timeout.
- slow bodies: 300 webhook bodies of 1 MB sent 960 KiB then stalled; the server's RSS growth is measured
  (before the fix: 54 -> 370 MB) and must stay under the documented bound.
- retention month: 100,000 old webhook events (with consumptions and activities) plus 30 days of traffic;
  one prune per simulated day while a 100 ms "watchdog" tick runs; the longest tick gap must stay far under
  WatchdogSec (30 s), and what remains must be exactly what the retention says.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from gateway.core.clock import ManualClock
from gateway.runtime.housekeeping import prune
from gateway.store import Store
from tests.conftest import _free_port
from tests.store.bigdb import counts, fill
from tests.web.edge_server import spawn
from torture import Report, keep_log

NOFILE = 256
IDLE = int(os.environ.get("TORTURE_EDGES_IDLE", "1100"))
SLOW = int(os.environ.get("TORTURE_EDGES_SLOW", "300"))
OLD_EVENTS = int(os.environ.get("TORTURE_EDGES_OLD_EVENTS", "100000"))
RSS_BOUND_MB = 120  # 16 MiB body budget + 64 KiB per connection's read buffer + the interpreter's slack
DAY = 86400.0


async def run(report: Report) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the clients need their own descriptors
    try:
        await idle_flood(report)
        await slow_heads(report)
        await slow_bodies(report)
        with tempfile.TemporaryDirectory(prefix="torture-edges-") as tmp:
            await retention_month(report, Path(tmp))
    finally:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.asynccontextmanager
async def server(**settings: Any) -> Any:
    port = _free_port()
    proc = spawn(port, NOFILE, settings)
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"edge server did not start: {proc.communicate()[1][-2000:]}")
    try:
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def healthz(port: int) -> int:
    try:
        async with httpx.AsyncClient(timeout=15) as client:
            return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code
    except httpx.HTTPError:
        return 0


Pair = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect_many(port: int, n: int) -> tuple[list[Pair], int]:
    pairs, failed = [], 0
    for _ in range(n):
        try:
            pairs.append(await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5))
        except (OSError, TimeoutError):
            failed += 1
    return pairs, failed


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 0.5) == b""
    except ConnectionError:  # reset: the server closed while we were still writing
        return True
    except (TimeoutError, OSError):
        return False


async def idle_flood(report: Report) -> None:
    async with server(header_timeout=120) as (port, proc):
        started = time.monotonic()
        pairs, failed = await connect_many(port, IDLE)
        elapsed = time.monotonic() - started
        report.fact(f"idle flood: {len(pairs)} sockets opened ({failed} refused) in {elapsed:.1f}s")
        report.check(await healthz(port) == 200, f"/healthz answers with {IDLE} idle sockets open")
        for _, w in pairs:
            w.close()
        proc.kill()
        _, err = proc.communicate(timeout=30)
    keep_log("http_edges-idle.log", err)
    report.check("Traceback" not in err, "idle flood: no traceback in the server's log")
    report.check(err.count("HTTP connection limit reached") == 1, "idle flood: the limit logged once")
    report.check(len(err) < 100_000, f"idle flood: log size bounded ({len(err)} bytes)")


async def slow_heads(report: Report) -> None:
    async with server(header_timeout=1) as (port, _):
        pairs, _ = await connect_many(port, SLOW)
        for _, w in pairs:
            w.write(b"GET /healthz HTTP/1.1\r\nHost: g\r\nX-Slow: ")  # a head that never ends
        for _ in range(10):  # a byte now and then, well inside any per-read timeout
            await asyncio.sleep(0.2)
            for _, w in pairs:
                if not w.is_closing():
                    with contextlib.suppress(OSError, ConnectionError):
                        w.write(b"a")
        closed = sum([await closed_by_server(r) for r, _ in pairs])
        report.fact(
            f"slow heads: {closed} of {len(pairs)} closed by the server after 2 s (header_timeout 1 s)"
        )
        report.check(closed == len(pairs), f"slow heads: all {len(pairs)} closed by header_timeout")
        report.check(await healthz(port) == 200, f"/healthz answers after {SLOW} slow request heads")
        for _, w in pairs:
            w.close()


async def slow_bodies(report: Report) -> None:
    async with server(body_timeout=20) as (port, proc):
        base = rss_mb(proc.pid)
        pairs, _ = await connect_many(port, SLOW)
        writers = [w for _, w in pairs]
        head = b"POST /webhooks/mobility-work HTTP/1.1\r\nHost: g\r\nContent-Length: 1000000\r\n\r\n"
        for w in writers:
            with contextlib.suppress(OSError, ConnectionError):
                w.write(head)
        for _ in range(15):  # 15 x 64 KiB = 960 KiB of each 1 MB body, slowly; never the end
            for w in writers:
                if not w.is_closing():  # closed by the server (evicted, or 503 past the body budget)
                    with contextlib.suppress(OSError, ConnectionError):
                        w.write(b" " * 65536)
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
        peak = rss_mb(proc.pid)
        report.fact(f"slow bodies: {len(writers)} x 1 MB stalled at 960 KiB: RSS {base:.0f} -> {peak:.0f} MB")
        report.check(peak - base < RSS_BOUND_MB, f"slow bodies: RSS growth under {RSS_BOUND_MB} MB")
        report.check(await healthz(port) == 200, "/healthz answers while the slow bodies hang")
        for w in writers:
            w.close()


async def retention_month(report: Report, tmp: Path) -> None:
    t0 = 1_767_225_600.0
    clock = ManualClock(t0)
    store = await Store.open(tmp, gateway_id="edges", clock=clock)
    try:
        fill(tmp, events=OLD_EVENTS, start=t0 - 60 * DAY, step=0.1, outbox_rows=OLD_EVENTS // 10)
        size = (tmp / "gateway.sqlite3").stat().st_size >> 20
        report.fact(f"retention: database of {counts(tmp)} ({size} MiB)")
        gaps: list[float] = []
        stop = asyncio.Event()

        async def watchdog() -> None:  # the periodic tick that feeds systemd: how long is it held?
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.1)
                now = time.monotonic()
                gaps.append(now - last - 0.1)
                last = now

        dog = asyncio.create_task(watchdog())
        longest = 0.0
        for _ in range(30):
            fill(tmp, events=2000, start=clock.now(), step=40.0)
            clock.advance(DAY)
            started = time.monotonic()
            await prune(store, now=clock.now(), retention_s=30 * DAY, history_s=45 * DAY)
            longest = max(longest, time.monotonic() - started)
        stop.set()
        await dog
        report.fact(
            f"retention: 30 daily prunes, longest {longest:.1f}s; watchdog gap at most {max(gaps):.2f}s"
        )
        report.check(max(gaps) < 2.0, "retention: the watchdog tick is never held 2 s (WatchdogSec 30 s)")
        left = counts(tmp)
        report.check(left["outbox"] == 0, "retention: every old delivered outbox row pruned")
        cutoff_events = await store.db.fetchone(
            "SELECT COUNT(*) FROM webhook_events WHERE received_at < ?", (clock.now() - 45 * DAY,)
        )
        gone = cutoff_events is not None and cutoff_events[0] == 0
        report.check(gone, "retention: nothing older than history_retention")
        report.check(
            left["webhook_events"] >= 30 * 2000 // 3, f"retention: the month's history kept ({left})"
        )
        integrity = await store.db.fetchone("PRAGMA integrity_check")
        report.check(integrity is not None and integrity[0] == "ok", "retention: integrity_check ok")
    finally:
        await store.close()
