"""OPC UA edges against a real asyncua server: an unchanged value is confirmed, not left to look stale; a
short network drop (a TCP proxy cut) ends with every signal good again; a node missing at the first
subscribe is found later."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.utils import ServiceError

from gateway.core.samples import LinkState, Quality
from gateway.sim.plc import run_opcua_press
from tests.sources.conftest import Collector, running, until
from tests.sources.proxy import tcp_proxy
from tests.sources.test_opcua import _make_certificate, _value, source


def _bad(collector: Collector, signal: str) -> bool:
    return (s := collector.last(signal)) is not None and s.quality is Quality.BAD


async def test_an_unchanged_value_is_confirmed_at_each_keepalive(
    collector: Collector, tmp_path: Path
) -> None:
    async with run_opcua_press(simulate=False) as plc:
        await plc.write("Temperature", 71.5)
        src = source(plc.url, {"temp": "ns=2;s=Press1.Temperature"}, tmp_path, keepalive=0.2)
        async with running(src, collector):
            await collector.wait_for(lambda: len(collector.good("press.temp")) >= 3, "two confirmations")
    samples = collector.good("press.temp")
    assert {s.value for s in samples} == {71.5}
    assert samples[2].ts > samples[1].ts > samples[0].ts  # the time of each confirmation
    assert src.stats.link is LinkState.UP


async def test_after_a_short_network_drop_unchanged_signals_are_good_again(
    collector: Collector, tmp_path: Path
) -> None:
    async with run_opcua_press(simulate=False) as plc:
        await plc.write("Temperature", 71.5)
        await plc.write("StrokeCounter", 10)
        async with tcp_proxy(plc.port) as proxy:
            src = source(
                f"opc.tcp://127.0.0.1:{proxy.port}/",
                {"temp": "ns=2;s=Press1.Temperature", "strokes": "ns=2;s=Press1.StrokeCounter"},
                tmp_path,
                keepalive=60,  # no confirmation during the test: the values must come back by themselves
            )
            async with running(src, collector):
                await collector.wait_for(
                    lambda: bool(collector.good("press.temp") and collector.good("press.strokes")), "values"
                )
                await proxy.cut()
                await collector.wait_for(lambda: _bad(collector, "press.temp"), "marked bad on the drop")
                await proxy.restore()  # the session is still alive on the server: asyncua reuses it
                await collector.wait_for(
                    lambda: not _bad(collector, "press.temp") and not _bad(collector, "press.strokes"),
                    "both unchanged values good again",
                )
                await plc.write("StrokeCounter", 11)
                await collector.wait_for(lambda: _value(collector, "press.strokes", 11), "later changes")
    assert collector.last("press.temp") is not None and collector.last("press.temp").value == 71.5
    assert src.stats.link is LinkState.UP and src.stats.reconnects == 1


async def test_an_untrusted_client_certificate_is_one_clear_line_not_a_traceback(
    collector: Collector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    server_cert, server_key = _make_certificate(tmp_path, "server", "urn:freeopcua:python:server")

    async def untrusted(certificate: Any, application: Any) -> None:
        raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

    async with run_opcua_press(simulate=False, certificate=server_cert, private_key=server_key) as plc:
        plc._server.set_certificate_validator(untrusted)
        src = source(plc.url, {"strokes": "ns=2;s=Press1.StrokeCounter"}, tmp_path, security="Basic256Sha256")
        async with running(src, collector):
            await collector.wait_for(lambda: bool(collector.samples), "a bad sample")
            await until(lambda: src.stats.errors >= 3, "a few attempts")  # still one line
    cert = tmp_path / "opcua" / "press-cert.der"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert f"the server rejected our certificate {cert}: trust it on the server" in errors[0]
    assert not any(r.exc_info for r in caplog.records)
