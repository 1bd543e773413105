"""Interop: our Sparkplug B host application against an independent edge node, Eclipse Tahu's JavaScript
client (npm `sparkplug-client`, which encodes with `sparkplug-payload` over protobufjs), through a real
mosquitto on loopback. The node side is tests/interop/sparkplug_edge.js; `make interop-deps` installs it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from gateway.core.samples import LinkState, Quality
from gateway.sources.registry import build_source
from gateway.sources.schema import SparkplugSource
from gateway.sources.sparkplug import SparkplugConnector
from tests.sources.conftest import SAFETY_TIMEOUT_S, Collector, running
from tests.sources.test_mqtt import Broker, broker

__all__ = ["broker"]  # the shared mosquitto fixture, imported from test_mqtt

HERE = Path(__file__).parent
SCRIPT = HERE / "sparkplug_edge.js"
NODE = shutil.which("node") or "/usr/bin/node"
G = "Plant1"

NODE_METRICS = [
    {"name": "Temperature", "alias": 1, "type": "Double", "value": 21.5},
    {"name": "Offset", "alias": 2, "type": "Int32", "value": -12},
    {"name": "Small", "alias": 3, "type": "Int8", "value": -5},
    {"name": "Big", "alias": 4, "type": "Int64", "value": -1234567},
    {"name": "Running", "alias": 5, "type": "Boolean", "value": True},
]
DEVICE_METRICS = [
    {"name": "Counters/Strokes", "alias": 10, "type": "UInt32", "value": 1000},
    {"name": "Mode", "alias": 11, "type": "String", "value": "auto"},
]
SIGNALS = {
    "temp": {"node": "Press1", "metric": "Temperature"},
    "offset": {"node": "Press1", "metric": "Offset"},
    "small": {"node": "Press1", "metric": "Small"},
    "big": {"node": "Press1", "metric": "Big"},
    "running": {"node": "Press1", "metric": "Running"},
    "strokes": {"node": "Press1", "device": "Stamper", "metric": "Counters/Strokes"},
    "mode": {"node": "Press1", "device": "Stamper", "metric": "Mode"},
}


class TahuEdge:
    """The Tahu edge node process: commands in on stdin, events out on stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.events.append(json.loads(line))
            self._changed.set()

    async def wait(self, predicate: Callable[[list[dict[str, Any]]], bool], what: str) -> None:
        async def loop() -> None:
            while not predicate(self.events):
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(loop(), SAFETY_TIMEOUT_S)
        except TimeoutError:
            raise AssertionError(f"the Tahu edge node never did: {what}; events: {self.events}") from None

    async def send(self, cmd: str, **fields: Any) -> None:
        assert self.process.stdin is not None
        done = sum(1 for e in self.events if e.get("event") == "done")
        self.process.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        await self.process.stdin.drain()
        await self.wait(lambda ev: sum(1 for e in ev if e.get("event") == "done") > done, f"command {cmd}")

    def commands(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == "ncmd"]

    async def kill(self) -> None:
        """Dies without a word: the broker publishes the node's will (its NDEATH)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def tahu_edge(port: int) -> AsyncIterator[TahuEdge]:
    if not (HERE / "node_modules" / "sparkplug-client").is_dir():
        raise RuntimeError(
            "the Tahu client is not installed: run `make interop-deps` (npm ci in tests/interop)"
        )
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(SCRIPT),
        f"mqtt://127.0.0.1:{port}",
        G,
        "Press1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=HERE,
    )
    edge = TahuEdge(process)
    try:
        await edge.wait(lambda ev: any(e.get("event") == "connected" for e in ev), "connect")
        yield edge
    finally:
        await edge.kill()


def host(port: int) -> SparkplugConnector:
    config = SparkplugSource.model_validate(
        {
            "protocol": "sparkplug",
            "url": f"mqtt://127.0.0.1:{port}",
            "group": G,
            "host_id": "mw-interop",
            "rebirth": True,
            "rebirth_interval": 0.001,  # every gap in this test deserves its own request
            "reconnect_delay": 0.05,
            "signals": SIGNALS,
        }
    )
    built = build_source("line3", config, gateway_id="interop")
    assert isinstance(built, SparkplugConnector)
    return built


def current(c: Collector, signal: str) -> Any:
    last = c.last(signal)
    if last is None:
        return None
    return last.value if last.quality is Quality.GOOD else "BAD"


async def until_up(src: SparkplugConnector) -> None:
    for _ in range(int(SAFETY_TIMEOUT_S / 0.01)):
        if src.stats.link is LinkState.UP:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the host never connected")


async def test_tahu_edge_node_birth_data_gap_death_rebirth(broker: Broker) -> None:
    collector = Collector()
    src = host(broker.port)
    async with running(src, collector):
        await until_up(src)
        async with tahu_edge(broker.port) as edge:
            # birth: initial values, every signed type right (-12 travels as 4294967284)
            await edge.send("nbirth", metrics=NODE_METRICS)
            await edge.send("dbirth", device="Stamper", metrics=DEVICE_METRICS)
            await collector.wait_for(lambda: current(collector, "line3.mode") == "auto", "births")
            assert [
                current(collector, f"line3.{k}") for k in ("temp", "offset", "small", "big", "running")
            ] == [
                21.5,
                -12,
                -5,
                -1234567,
                True,
            ]
            assert current(collector, "line3.strokes") == 1000

            # data by alias only
            await edge.send(
                "ddata", device="Stamper", metrics=[{"alias": 10, "type": "UInt32", "value": 1001}]
            )
            await edge.send("ndata", metrics=[{"alias": 2, "type": "Int32", "value": -13}])
            await collector.wait_for(lambda: current(collector, "line3.offset") == -13, "NDATA by alias")
            assert current(collector, "line3.strokes") == 1001
            assert edge.commands() == []

            # a seq gap: the host asks for a rebirth, the Tahu node answers with its births
            births_before = len(collector.of("line3.mode"))
            await edge.send("skip", n=3)
            await edge.send(
                "ddata", device="Stamper", metrics=[{"alias": 10, "type": "UInt32", "value": 1002}]
            )
            await edge.wait(lambda ev: any(e.get("event") == "ncmd" for e in ev), "receive an NCMD")
            (request,) = edge.commands()
            assert request["metrics"] == [{"name": "Node Control/Rebirth", "type": "Boolean", "value": True}]
            await collector.wait_for(lambda: len(collector.of("line3.mode")) > births_before, "the rebirth")
            assert current(collector, "line3.strokes") == 1002  # the DBIRTH carries the latest value

            # DDEATH for one device
            await edge.send("ddeath", device="Stamper")
            await collector.wait_for(lambda: current(collector, "line3.strokes") == "BAD", "DDEATH")
            assert current(collector, "line3.temp") == 21.5

        # the node dies (killed): the broker delivers its will, an NDEATH whose bdSeq matches the birth
        await collector.wait_for(lambda: current(collector, "line3.temp") == "BAD", "NDEATH from the will")
        temp = collector.last("line3.temp")
        assert temp is not None and "offline (NDEATH)" in temp.reason
        bad_counts = {s: sum(x.quality is Quality.BAD for x in collector.of(f"line3.{s}")) for s in SIGNALS}

        # a new edge node session: births make every signal good again
        async with tahu_edge(broker.port) as edge:
            await edge.send("nbirth", metrics=NODE_METRICS)
            await edge.send("dbirth", device="Stamper", metrics=DEVICE_METRICS)
            await collector.wait_for(lambda: current(collector, "line3.strokes") == 1000, "births again")
            await collector.wait_for(
                lambda: all(current(collector, f"line3.{k}") != "BAD" for k in SIGNALS), "good"
            )
        # one BAD sample per signal per death, never a burst
        assert bad_counts == {
            "temp": 1,
            "offset": 1,
            "small": 1,
            "big": 1,
            "running": 1,
            "strokes": 1,
            "mode": 1,
        }
