"""Sources: Modbus requests per poll cycle against the minimum, samples per second into the engine queue,
CPU per 1,000 register reads. A real pymodbus server (gateway.sim.plc) and, when installed, a real mosquitto
on loopback."""

from __future__ import annotations

import asyncio
import shutil
import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

from gateway.core.samples import Sample
from gateway.sim.plc import run_modbus_press
from gateway.sources.modbus import MAX_BITS, MAX_REGISTERS, ModbusConnector
from gateway.sources.schema import ModbusSource, MqttSource

Row = tuple[str, str, str]

WAIT_S = 30.0  # every wait is bounded: a benchmark that hangs is a failed benchmark


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel a source and make sure it ended (a source that ignores a cancel would poll, and fill an unread
    queue, forever)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=WAIT_S)
    if task not in done:
        raise RuntimeError(f"the source did not stop within {WAIT_S:g}s of being cancelled")
    if not task.cancelled() and task.exception() is not None:
        raise RuntimeError("the source failed") from task.exception()


async def _until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {WAIT_S:g}s: {what}")
        await asyncio.sleep(0.005)


def _signals_300() -> dict[str, Any]:
    signals: dict[str, Any] = {}
    signals.update({f"h{a}": {"holding": a} for a in range(100)})
    signals.update({f"f{a}": {"holding": a, "type": "float32"} for a in range(100, 200, 2)})
    signals.update({f"i{a}": {"holding": a, "type": "int32"} for a in range(300, 400, 2)})
    signals.update({f"in{a}": {"input": a} for a in range(0, 100, 2)})
    signals.update({f"c{a}": {"coil": a} for a in range(0, 500, 10)})
    return signals


def _minimum(src: ModbusConnector) -> int:
    """The lower bound, computed from the signals and not from the plan: per unit and table, every run of
    neighbours (gaps within max_gap) needs ceil(span / protocol limit) requests."""
    spans: dict[tuple[int, str], list[tuple[int, int]]] = {}
    for p in src.points:
        spans.setdefault((p.unit, p.table), []).append((p.address, p.end))
    lower = 0
    for (_unit, table), ranges in spans.items():
        limit = MAX_BITS if table in ("coil", "discrete") else MAX_REGISTERS
        ranges.sort()
        start, end = ranges[0]
        for a, b in ranges[1:]:
            if a - end > src.config.max_gap:
                lower += -(-(end - start) // limit)
                start = a
            end = max(end, b)
        lower += -(-(end - start) // limit)
    return lower


def _modbus_config(port: int, signals: dict[str, Any], poll: float) -> ModbusSource:
    return ModbusSource.model_validate(
        {
            "protocol": "modbus",
            "host": "127.0.0.1",
            "port": port,
            "poll": poll,
            "timeout": 1,
            "signals": signals,
        }
    )


async def _modbus_rows() -> list[Row]:
    rows: list[Row] = []
    async with run_modbus_press(units=(1,), simulate=False) as plc:
        src = ModbusConnector("bench", _modbus_config(plc.port, _signals_300(), poll=3600))
        seen = asyncio.Event()
        count = 0

        def emit(_s: Sample) -> None:
            nonlocal count
            count += 1
            if count >= 300:
                seen.set()

        task = asyncio.create_task(src.run(emit))
        await asyncio.wait_for(seen.wait(), WAIT_S)
        await _stop(task)
        rows.append(
            (
                "modbus requests per poll cycle (300 signals, 1 unit)",
                str(len(plc.requests)),
                f"minimum {_minimum(src)}",
            )
        )

        # samples per second into the engine queue, polling as fast as the link allows
        plc.requests.clear()
        queue: asyncio.Queue[Sample] = asyncio.Queue()
        fast = ModbusConnector("bench", _modbus_config(plc.port, _signals_300(), poll=0.0001))
        task = asyncio.create_task(fast.run(queue.put_nowait))
        await asyncio.sleep(0.3)  # warm up
        n0, cpu0, t0 = queue.qsize(), time.process_time(), time.perf_counter()
        regs0 = sum(r.count for r in plc.requests if r.function_code in (3, 4))
        await asyncio.sleep(2.0)
        n1, cpu1, t1 = queue.qsize(), time.process_time(), time.perf_counter()
        regs1 = sum(r.count for r in plc.requests if r.function_code in (3, 4))
        await _stop(task)
        rows.append(
            (
                "modbus samples/s into the engine queue",
                f"{(n1 - n0) / (t1 - t0):,.0f}",
                "loopback, poll as fast as possible",
            )
        )
        per_k = (cpu1 - cpu0) * 1000 / max((regs1 - regs0) / 1000, 1e-9)
        rows.append(
            (
                "modbus CPU per 1,000 register reads",
                f"{per_k:.2f} ms",
                "client + in-process pymodbus server, one core",
            )
        )
    return rows


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _mqtt_rows() -> list[Row]:
    mosquitto = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if shutil.which("/usr/sbin/mosquitto") else None
    )
    if mosquitto is None:
        return [("mqtt samples/s into the engine queue", "n/a", "mosquitto not installed")]
    import aiomqtt

    from gateway.sources.mqtt import MqttConnector

    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        mosquitto, "-p", str(port), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        for _ in range(200):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.02)
        config = MqttSource.model_validate(
            {
                "protocol": "mqtt",
                "url": f"mqtt://127.0.0.1:{port}",
                "clean_session": True,
                "signals": {"{1}": {"topic": "bench/+", "json": "v"}},
            }
        )
        src = MqttConnector("mq", config, gateway_id="bench")
        queue: asyncio.Queue[Sample] = asyncio.Queue()
        task = asyncio.create_task(src.run(queue.put_nowait))
        await _until(lambda: src.stats.link.value == "up", "mqtt source connected")
        total = 20_000
        rates = []
        async with aiomqtt.Client("127.0.0.1", port, max_queued_outgoing_messages=0) as pub:
            for _ in range(3):
                start_n = queue.qsize()
                t0 = time.perf_counter()
                for i in range(total):
                    await pub.publish(f"bench/s{i % 100}", b'{"v": %d}' % i, qos=0)
                await _until(
                    lambda start_n=start_n: queue.qsize() - start_n >= total * 0.99,  # type: ignore[misc]
                    "99% of the published messages received",
                )
                rates.append((queue.qsize() - start_n) / (time.perf_counter() - t0))
        await _stop(task)
        return [
            (
                "mqtt samples/s into the engine queue",
                f"{statistics.median(rates):,.0f}",
                "JSON payloads, QoS 0, 100 topics",
            ),
            await _sparkplug_row(port),
        ]
    finally:
        proc.kill()
        await proc.wait()


async def _sparkplug_row(port: int) -> Row:
    """Sparkplug B on the same broker as the plain-JSON row: one NDATA per sample (one metric by alias),
    QoS 0, 100 metrics born in one NBIRTH."""
    what = "sparkplug samples/s into the engine queue"
    try:
        from gateway.sources import sparkplug_codec as codec
        from gateway.sources.sparkplug import SparkplugConnector
    except ImportError:
        return (what, "n/a", "the sparkplug extra (protobuf) is not installed")
    import aiomqtt

    from gateway.sources.schema import SparkplugSource

    config = SparkplugSource.model_validate(
        {
            "protocol": "sparkplug",
            "url": f"mqtt://127.0.0.1:{port}",
            "group": "Bench",
            "host_id": "mw-bench",
            "signals": {f"m{i}": {"node": "N1", "metric": f"Metric {i}"} for i in range(100)},
        }
    )
    src = SparkplugConnector("sp", config, gateway_id="bench")
    queue: asyncio.Queue[Sample] = asyncio.Queue()
    task = asyncio.create_task(src.run(queue.put_nowait))
    await _until(lambda: src.stats.link.value == "up", "sparkplug source connected")
    int32 = codec.DataType.INT32
    birth = codec.encode([(f"Metric {i}", i, int32, 0) for i in range(100)], seq=0, timestamp_ms=1)
    total = 20_000
    rates = []
    async with aiomqtt.Client("127.0.0.1", port, max_queued_outgoing_messages=0) as pub:
        await pub.publish("spBv1.0/Bench/NBIRTH/N1", birth, qos=0)
        await _until(lambda: queue.qsize() >= 100, "the birth's initial values")
        seq = 0
        for _ in range(3):
            payloads = []  # encoded before the clock starts: the row measures the host side
            for i in range(total):
                seq = (seq + 1) % 256
                payloads.append(
                    codec.encode([(None, i % 100, int32, -i)], seq=seq, timestamp_ms=1_700_000_000_000)
                )
            start_n = queue.qsize()
            t0 = time.perf_counter()
            for data in payloads:
                await pub.publish("spBv1.0/Bench/NDATA/N1", data, qos=0)
            await _until(
                lambda start_n=start_n: queue.qsize() - start_n >= total * 0.99,  # type: ignore[misc]
                "99% of the published messages received",
            )
            rates.append((queue.qsize() - start_n) / (time.perf_counter() - t0))
    await _stop(task)
    return (
        what,
        f"{statistics.median(rates):,.0f}",
        "NDATA, 1 metric by alias, QoS 0, 100 metrics (same broker)",
    )


def run() -> list[Row]:
    async def main() -> list[Row]:
        return [*await _modbus_rows(), *await _mqtt_rows()]

    return asyncio.run(main())


if __name__ == "__main__":
    for row in run():
        print(" | ".join(row))
