"""OPC UA: what was resolved by name (browse paths, `nsu=` namespace URIs) follows the server across an
asyncua-internal reconnect, also when the restarted server numbered its address space differently."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.server.server import Server

from gateway.core.samples import LinkState, Quality
from gateway.sim.plc import NAMESPACE_URI, run_opcua_press
from tests.sources.conftest import Collector, running
from tests.sources.test_opcua import _value, source


class _RenumberingServer:
    """An asyncua server whose restart renumbers its address space, as a PLC does after a program download:
    the variable's numeric NodeId changes and the namespace index of NAMESPACE_URI moves (another namespace
    is registered before it), while the browse names, in a namespace registered first, stay the same."""

    def __init__(self, port: int) -> None:
        self.url = f"opc.tcp://127.0.0.1:{port}/"
        self.generation = 0
        self.server: Any = None
        self.counter: Any = None
        self.temperature: Any = None

    async def start(self, counter: int, temperature: float) -> None:

        self.generation += 1
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        names = await server.register_namespace("urn:mw-gateway:test:names")  # 2 in both generations
        if self.generation > 1:
            await server.register_namespace("urn:mw-gateway:test:added-later")
        ns = await server.register_namespace(NAMESPACE_URI)  # 3, then 4
        press = await server.nodes.objects.add_object(ua.NodeId(100 * self.generation, ns), f"{names}:Press1")
        self.counter = await press.add_variable(
            ua.NodeId(100 * self.generation + 1, ns),
            f"{names}:StrokeCounter",
            ua.Variant(counter, ua.VariantType.UInt32),
        )
        self.temperature = await press.add_variable(
            ua.NodeId("Press1.Temperature", ns),
            f"{names}:Temperature",
            ua.Variant(temperature, ua.VariantType.Double),
        )
        await server.start()
        self.server = server

    async def stop(self) -> None:
        server, self.server = self.server, None
        await server.stop()


def _free_tcp_port() -> int:

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_browse_paths_and_namespace_uris_are_resolved_again_after_a_reconnect(
    collector: Collector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:

    caplog.set_level(logging.INFO, logger="gateway.sources")
    plc = _RenumberingServer(_free_tcp_port())
    await plc.start(counter=10, temperature=70.0)
    try:
        src = source(
            plc.url,
            {
                "strokes": {"browse_path": "0:Objects/2:Press1/2:StrokeCounter"},
                "temp": f"nsu={NAMESPACE_URI};s=Press1.Temperature",
            },
            tmp_path,
        )
        async with running(src, collector):
            await collector.wait_for(
                lambda: _value(collector, "press.strokes", 10) and _value(collector, "press.temp", 70.0),
                "first values",
            )
            await plc.stop()
            await collector.wait_for(
                lambda: (s := collector.last("press.strokes")) is not None and s.quality is Quality.BAD,
                "marked bad",
            )
            await plc.start(counter=11, temperature=71.0)  # renumbered: ns=3;i=101 is now ns=4;i=201
            await collector.wait_for(
                lambda: _value(collector, "press.strokes", 11) and _value(collector, "press.temp", 71.0),
                "values from the renumbered nodes",
            )
            await plc.server.write_attribute_value(
                plc.counter.nodeid, ua.DataValue(ua.Variant(12, ua.VariantType.UInt32))
            )
            await collector.wait_for(lambda: _value(collector, "press.strokes", 12), "next change")
    finally:
        await plc.stop()
    assert src.stats.link is LinkState.UP
    levels = [r.levelno for r in caplog.records if r.name.startswith("gateway") and r.levelno >= logging.INFO]
    assert levels == [logging.ERROR, logging.INFO], caplog.records


async def test_browse_paths_still_deliver_after_a_plain_server_restart(
    collector: Collector, tmp_path: Path
) -> None:
    async with run_opcua_press(simulate=False) as plc:
        await plc.write("StrokeCounter", 20)
        src = source(
            plc.url,
            {
                "strokes": {"browse_path": "0:Objects/2:Press1/2:StrokeCounter"},
                "temp": f"nsu={NAMESPACE_URI};s=Press1.Temperature",
            },
            tmp_path,
        )
        async with running(src, collector):
            await collector.wait_for(lambda: _value(collector, "press.strokes", 20), "first value")
            await plc.stop()
            await collector.wait_for(
                lambda: (s := collector.last("press.strokes")) is not None and s.quality is Quality.BAD, "bad"
            )
            await plc.start()
            await plc.write("StrokeCounter", 21)
            await plc.write("Temperature", 75.5)
            await collector.wait_for(
                lambda: _value(collector, "press.strokes", 21) and _value(collector, "press.temp", 75.5),
                "values after the restart",
            )
    assert src.stats.link is LinkState.UP and src.stats.reconnects == 1
