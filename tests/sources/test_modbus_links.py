"""Modbus link lifecycle: a cancelled source always ends, failed connects accumulate nothing, and a frozen
server (SIGSTOP: the kernel still accepts TCP connections) gives exactly one ERROR and one INFO per freeze."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException

from gateway.core.backoff import Backoff
from gateway.core.samples import LinkState, Quality
from gateway.sim.plc import run_modbus_press
from gateway.sources.modbus import ModbusConnector
from gateway.sources.schema import ModbusSource
from tests.sources.conftest import SAFETY_TIMEOUT_S, Collector, until

ROOT = Path(__file__).resolve().parents[2]
FAST = {"poll": 0.01, "timeout": 0.2, "reconnect_delay": 0.02, "reconnect_max_delay": 0.1}


def source(port: int, signals: dict[str, Any], **options: Any) -> ModbusConnector:
    config = ModbusSource.model_validate(
        {"protocol": "modbus", "host": "127.0.0.1", "port": port, **FAST, **options, "signals": signals}
    )
    return ModbusConnector("m", config)


def test_backoff_stays_capped_however_long_the_outage() -> None:
    backoff = Backoff(initial_s=1.0, max_s=30.0, jitter=0.0)
    delays = [backoff.next() for _ in range(5000)]  # 2.0**1025 overflows a float: the source used to die
    assert delays[:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0] and set(delays[5:]) == {30.0}
    backoff.reset()
    assert backoff.next() == 1.0


async def test_failed_connects_leave_no_task_client_or_buffer_behind(free_port: Callable[[], int]) -> None:
    src = source(free_port(), {"v": {"holding": 0}}, reconnect_delay=0.0005, reconnect_max_delay=0.001)
    baseline = len(asyncio.all_tasks())
    task = asyncio.create_task(src.run(lambda _s: None))
    try:
        await until(lambda: src.stats.errors >= 50, "50 refused connects")
        gc.collect()
        clients_at_50 = sum(isinstance(o, AsyncModbusTcpClient) for o in gc.get_objects())
        objects_at_50 = len(gc.get_objects())
        await until(lambda: src.stats.errors >= 1200 or task.done(), "1,200 refused connects")
        assert not task.done(), f"the source died: {task.exception()}"
        gc.collect()
        assert len(asyncio.all_tasks()) <= baseline + 2  # the source, and its connect in flight
        assert sum(isinstance(o, AsyncModbusTcpClient) for o in gc.get_objects()) <= max(clients_at_50, 1)
        assert len(gc.get_objects()) < objects_at_50 + 500  # 1,150 attempts later: nothing per attempt
        assert src.stats.link is LinkState.DOWN and src.stats.reconnects == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _Client:
    """The real pymodbus client, with one hook after a response arrived. pymodbus awaits every response with
    asyncio.wait_for, which on Python 3.11 returns the response and drops a cancellation that arrives in the
    same loop turn (the race that left `python -m bench sources` polling into an unread queue until 3.7 GB).
    `hook` makes that moment happen on demand instead of once in a few hundred runs."""

    def __init__(self, src: ModbusConnector) -> None:
        self.hook: Callable[[], Coroutine[Any, Any, None]] | None = None
        self.fired = False
        self.reads_after_hook = 0
        self.many_reads_after_hook = asyncio.Event()
        self._make = src._client

    def arm(self, hook: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.hook = hook

    def __call__(self) -> Any:
        client = self._make()
        execute = client.execute

        async def hooked(no_response_expected: bool, request: Any) -> Any:
            if self.fired:
                self.reads_after_hook += 1
                if self.reads_after_hook >= 200:
                    self.many_reads_after_hook.set()
            response = await execute(no_response_expected, request)
            if self.hook is not None:
                hook, self.hook, self.fired = self.hook, None, True
                await hook()
            return response

        client.execute = hooked  # type: ignore[method-assign]
        return client


async def _ends_when_cancelled(
    monkeypatch: pytest.MonkeyPatch, make_hook: Callable[[asyncio.Task[None]], Any]
) -> ModbusConnector:
    async with run_modbus_press(units=(1,), simulate=False) as plc:
        src = source(plc.port, {"v": {"holding": 0}}, poll=0.0001)
        client = _Client(src)
        monkeypatch.setattr(src, "_client", client)
        collector = Collector()
        task = asyncio.create_task(src.run(collector))
        await collector.wait_for(lambda: bool(collector.good("m.v")), "first read")
        client.arm(make_hook(task))
        waiter = asyncio.create_task(client.many_reads_after_hook.wait())
        done, _ = await asyncio.wait({task, waiter}, timeout=SAFETY_TIMEOUT_S, return_when="FIRST_COMPLETED")
        waiter.cancel()
        still_polling = task not in done
        task.cancel()  # a second cancel: the fixed source is already gone
        await asyncio.wait({task}, timeout=SAFETY_TIMEOUT_S)
        assert not still_polling, f"cancelled, the source went on: {client.reads_after_hook} reads later"
        assert task.cancelled()
        return src


async def test_a_cancel_the_library_swallows_with_a_response_still_ends_the_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def make_hook(task: asyncio.Task[None]) -> Any:
        async def hook() -> None:
            task.cancel()  # the source's poller is stopped: it cancels its unit task next
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0)  # ... which arrives here, with the response already in: 3.11 wait_for

        return hook

    await _ends_when_cancelled(monkeypatch, make_hook)


async def test_a_cancel_at_the_moment_the_connection_breaks_still_ends_the_source(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def make_hook(task: asyncio.Task[None]) -> Any:
        async def hook() -> None:
            task.cancel()
            raise ConnectionException("connection reset")  # a 3.11 TaskGroup then dropped the cancel

        return hook

    caplog.set_level(logging.INFO, logger="gateway.sources")
    await _ends_when_cancelled(monkeypatch, make_hook)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no "link down" loop


# ---------------------------------------------------------------- a frozen server in its own process


@contextlib.contextmanager
def plc_process(port: int, units: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "torture.plc_proc", "modbus", str(port), units],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(SAFETY_TIMEOUT_S)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("units", ["1", "1,2"])
async def test_a_frozen_server_gives_one_error_and_one_info_per_freeze(
    units: str, free_port: Callable[[], int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.sources")
    port = free_port()
    signals = {f"t{u}": {"holding": 2, "type": "float32", "unit": int(u)} for u in units.split(",")}
    freezes = 2
    with plc_process(port, units) as proc:
        src = source(port, signals)
        collector = Collector()
        task = asyncio.create_task(src.run(collector))
        try:
            for _ in range(freezes):
                n = len(collector.samples)
                await collector.wait_for(
                    lambda n=n: (
                        all(collector.good(f"m.t{u}") for u in units.split(","))  # type: ignore[misc]
                        and len(collector.samples) > n + 2
                    ),
                    "reads",
                )
                os.kill(proc.pid, signal.SIGSTOP)
                await until(lambda: src.stats.link is LinkState.DOWN, "link down")
                # several more connects to the frozen server, each accepted by the kernel, none answered
                attempts = src.stats.errors
                await until(lambda a=attempts: src.stats.errors >= a + 4, "retries while frozen")  # type: ignore[misc]
                assert all(collector.last(f"m.t{u}").quality is Quality.BAD for u in units.split(","))  # type: ignore[union-attr]
                os.kill(proc.pid, signal.SIGCONT)
                await until(lambda: src.stats.link is LinkState.UP, "link up")
            assert not task.done()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    records = [r for r in caplog.records if r.name == "gateway.sources.modbus" and r.levelno >= logging.INFO]
    levels = [r.levelno for r in records]
    assert levels == [logging.ERROR, logging.INFO] * freezes, [(r.levelname, r.getMessage()) for r in records]
    assert all("link down" in r.getMessage() for r in records[::2])
    assert all("recovered" in r.getMessage() for r in records[1::2])
    assert src.stats.reconnects == freezes
