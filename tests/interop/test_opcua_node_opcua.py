"""The OPC UA source against node-opcua (JavaScript; an implementation independent of asyncua, our client
library): NodeIds by namespace index and by `nsu=`, browse paths with a namespace alias, an unchanged value
confirmed at the keep-alive (no false `stale`), a server killed and restarted with its namespaces reordered
and a node that was missing at the first subscribe, and a server that does not trust our certificate."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.core.samples import LinkState, Quality
from gateway.sources.opcua import OpcuaConnector
from gateway.sources.registry import build_source
from gateway.sources.schema import OpcuaSource
from tests.interop.servers import node_opcua_server
from tests.sources.conftest import Collector, running, until

URI = "urn:mw-gateway:interop"
FAST = {"publishing_interval": 0.1, "reconnect_delay": 0.1, "reconnect_max_delay": 0.5, "timeout": 3}


def source(port: int, signals: dict[str, Any], tmp_path: Path, **options: Any) -> OpcuaConnector:
    config = OpcuaSource.model_validate(
        {"protocol": "opcua", "url": f"opc.tcp://127.0.0.1:{port}", **FAST, **options, "signals": signals}
    )
    built = build_source("node", config, state_dir=tmp_path / "state")
    assert isinstance(built, OpcuaConnector)
    return built


def _good(collector: Collector, signal: str) -> bool:
    return (s := collector.last(signal)) is not None and s.quality is Quality.GOOD


async def test_node_opcua_by_index_by_uri_and_by_alias_killed_and_restarted_renumbered(
    collector: Collector, free_port: Callable[[], int], tmp_path: Path
) -> None:
    port = free_port()
    signals = {
        "counter": "ns=2;s=Press.Counter",  # by index: right until the namespaces move
        "counter_uri": f"nsu={URI};s=Press.Counter",
        "constant": {"browse_path": "interop:Press/interop:Constant", "type": "number"},
        "text": {"node": f"nsu={URI};s=Press.Text", "type": "string"},
        "flag": {"node": f"nsu={URI};s=Press.Flag", "type": "bool"},
        "late": {"browse_path": "0:Objects/interop:Press/interop:Late"},  # not there at first
    }
    src = source(port, signals, tmp_path, keepalive=0.5, namespaces={"interop": URI})
    async with node_opcua_server(port, str(tmp_path / "pki")) as server, running(src, collector):
        await collector.wait_for(
            lambda: (
                all(_good(collector, f"node.{n}") for n in ("counter", "counter_uri", "text", "flag"))
                and len(collector.good("node.constant")) >= 3
            ),
            "every signal, and the unchanged constant confirmed twice",
        )
        assert collector.of("node.late")[0].quality is Quality.BAD
        counters = {s.value for s in collector.good("node.counter")}
        assert len(counters) >= 2  # a counter that moves
        await server.kill()
        await collector.wait_for(lambda: not _good(collector, "node.counter_uri"), "bad while dead")
        n = len(collector.samples)
        server.argv += ["--extra-namespace", "--late"]  # the new program: ns reordered, Late added
        await server.start()
        await collector.wait_for(
            lambda: (
                len(collector.samples) > n
                and all(_good(collector, f"node.{x}") for x in ("counter_uri", "constant", "text", "late"))
            ),
            "back after the restart, by URI and alias, and the late node found",
        )
    assert collector.good("node.constant")[0].value == 42.5
    assert {s.value for s in collector.good("node.constant")} == {42.5}
    assert collector.good("node.text")[0].value == "hello" and collector.good("node.flag")[0].value is True
    assert collector.good("node.late")[-1].value == 7
    # by index, ns=2 is now urn:mw-gateway:other: nothing there (documented: use nsu= or an alias)
    assert not _good(collector, "node.counter")
    assert src.stats.link is LinkState.UP


async def test_a_server_that_does_not_trust_our_certificate_is_one_clear_line(
    free_port: Callable[[], int], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.sources")
    port = free_port()
    collector = Collector()
    src = source(
        port, {"counter": f"nsu={URI};s=Press.Counter"}, tmp_path, security="Basic256Sha256,SignAndEncrypt"
    )
    async with node_opcua_server(port, str(tmp_path / "pki"), "--secure"), running(src, collector):
        await collector.wait_for(lambda: bool(collector.samples), "a bad sample")
        await until(lambda: src.stats.errors >= 3, "a few attempts")  # still one line
    cert = tmp_path / "state" / "opcua" / "node-cert.der"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert (
        f"rejected our certificate {cert}: trust it on the server (its rejected folder)"
        in errors[0].getMessage()
    )
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("gateway"))
    rejected = list((tmp_path / "pki" / "server").rglob("rejected/*"))
    assert rejected, "node-opcua put our certificate in its rejected folder"
    assert collector.samples[0].quality is Quality.BAD
