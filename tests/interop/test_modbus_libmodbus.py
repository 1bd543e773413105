"""The Modbus source against libmodbus (C; an implementation independent of pymodbus, our client library).

The test writes the registers over Modbus with its own encoding (struct, written here, not our codec), so a
codec bug cannot cancel itself out."""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from gateway.core.samples import LinkState, Quality
from gateway.sources.modbus import ModbusConnector
from gateway.sources.registry import build_source
from gateway.sources.schema import ModbusSource
from tests.interop.servers import libmodbus_server
from tests.sources.conftest import Collector, running

FAST = {"poll": 0.02, "timeout": 0.5, "reconnect_delay": 0.05, "reconnect_max_delay": 0.2}
FORMATS = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}
VALUES: dict[str, int | float] = {
    "int16": -12345,
    "uint16": 54321,
    "int32": -2_000_000_123,
    "uint32": 4_000_000_123,
    "int64": -9_000_000_000_000_000_123,
    "uint64": 18_000_000_000_000_000_123,
    "float32": 1234.5,
    "float64": -98765.4321,
}


def registers(value: float, type_: str, word_order: str, byte_order: str) -> list[int]:
    raw = struct.pack(">" + FORMATS[type_], value)
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def source(port: int, signals: dict[str, Any], **options: Any) -> ModbusConnector:
    config = ModbusSource.model_validate(
        {"protocol": "modbus", "host": "127.0.0.1", "port": port, **FAST, **options, "signals": signals}
    )
    built = build_source("lm", config)
    assert isinstance(built, ModbusConnector)
    return built


async def write(port: int, holding: dict[int, list[int]], coils: dict[int, list[bool]] | None = None) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2)
    await client.connect()
    try:
        for address, regs in holding.items():
            assert not (await client.write_registers(address, regs)).isError()
        for address, bits in (coils or {}).items():
            assert not (await client.write_coils(address, bits)).isError()
    finally:
        client.close()


async def test_every_type_word_and_byte_order_from_libmodbus_and_a_server_killed_and_restarted(
    collector: Collector, free_port: Callable[[], int]
) -> None:
    port = free_port()
    signals: dict[str, Any] = {}
    holding: dict[int, list[int]] = {}
    address = 0
    for type_ in FORMATS:
        for word_order in ("big", "little"):
            for byte_order in ("big", "little"):
                regs = registers(VALUES[type_], type_, word_order, byte_order)
                signals[f"{type_}_{word_order}_{byte_order}"] = {
                    "holding": address,
                    "type": type_,
                    "word_order": word_order,
                    "byte_order": byte_order,
                }
                holding[address] = regs
                address += len(regs)
    # input registers mirror holding registers on this server, discrete inputs mirror coils
    holding[500] = [0x0000, 0x1388]  # 5000
    holding[502] = [0b1000]
    holding[503] = list(struct.unpack(">4H", b"PRESS\x00XY"))  # a C string with an old tail after its NUL
    holding[507] = [0x4241, 0x0043]  # "ABC" byte-swapped
    signals |= {
        "scaled": {"input": 500, "type": "uint32", "scale": 0.1},
        "fault_bit_3": {"input": 502, "bit": 3},
        "fault_bit_4": {"holding": 502, "bit": 4},
        "label": {"input": 503, "type": "string", "length": 4},
        "label_swapped": {"holding": 507, "type": "string", "length": 2, "byte_order": "little"},
        "running": {"coil": 17},
        "door": {"discrete": 18},
    }
    async with libmodbus_server(port) as server:
        await write(port, holding, {17: [True], 18: [True]})
        src = source(port, signals)
        async with running(src, collector):
            await collector.wait_for(
                lambda: all(collector.good(n) for n in src.signal_names()), "every signal read"
            )
            await server.kill()
            await collector.wait_for(
                lambda: (s := collector.last("lm.running")) is not None and s.quality is Quality.BAD,
                "bad while the server is dead",
            )
            n = len(collector.samples)
            await server.start()  # a new process: empty registers
            await write(port, {0: [7]}, {17: [False]})
            await collector.wait_for(
                lambda: (
                    src.stats.reconnects == 1
                    and any(s.value is False for s in collector.good("lm.running")[-1:])
                    and len(collector.samples) > n
                ),
                "read again after the restart",
            )
    for type_ in FORMATS:
        for word_order in ("big", "little"):
            for byte_order in ("big", "little"):
                got = collector.good(f"lm.{type_}_{word_order}_{byte_order}")[0].value
                want = VALUES[type_]
                assert got == (pytest.approx(want, rel=1e-7) if type_ == "float32" else want)
                assert type(got) is (float if type_.startswith("float") else int), (type_, got)
    scaled = collector.good("lm.scaled")[0].value
    assert scaled == 500 and type(scaled) is int  # whole: stays an integer
    assert collector.good("lm.fault_bit_3")[0].value is True
    assert collector.good("lm.fault_bit_4")[0].value is False
    assert collector.good("lm.label")[0].value == "PRESS"  # cut at the NUL: not "PRESS\x00XY"
    assert collector.good("lm.label_swapped")[0].value == "ABC"
    assert collector.good("lm.door")[0].value is True
    assert src.stats.link is LinkState.UP and src.stats.reconnects == 1


async def test_a_refused_address_inside_a_coalesced_read_marks_only_its_signal_bad(
    collector: Collector, free_port: Callable[[], int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.sources")
    port = free_port()
    signals = {f"r{a}": {"holding": a} for a in range(0, 20)}
    async with libmodbus_server(port, "--hole", "13"):
        await write(port, {0: list(range(100, 113)), 14: list(range(114, 120))})
        src = source(port, signals)
        async with running(src, collector):
            await collector.wait_for(
                lambda: all(len(collector.of(f"lm.r{a}")) >= 3 for a in range(20)), "three cycles"
            )
        requests = len(src.blocks), sum(len(u.blocks) for u in src._units)
    assert collector.last("lm.r13") is not None and collector.last("lm.r13").quality is Quality.BAD
    assert "exception 2" in collector.of("lm.r13")[0].reason
    for a in (*range(13), *range(14, 20)):
        assert all(s.quality is Quality.GOOD for s in collector.of(f"lm.r{a}")), a
        assert collector.good(f"lm.r{a}")[0].value == 100 + a
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "lm.r13 (holding 13)" in warnings[0], warnings
    assert requests[0] == 1 and requests[1] <= 8, requests  # one planned read, split a few times for good


async def test_a_device_accepting_fewer_registers_than_the_protocol_allows(
    collector: Collector, free_port: Callable[[], int]
) -> None:
    port = free_port()
    signals = {f"r{a}": {"holding": a} for a in range(80)}
    signals_bits = {f"c{a}": {"coil": a} for a in range(40)}
    async with libmodbus_server(port, "--max-registers", "64", "--max-bits", "32"):
        await write(port, {0: list(range(80))})
        src = source(port, signals | signals_bits, max_registers=64, max_bits=32)
        assert [b.count for b in src.blocks] == [32, 8, 64, 16]
        async with running(src, collector):
            await collector.wait_for(
                lambda: all(collector.of(n) for n in src.signal_names()), "every signal read"
            )
    assert all(s.quality is Quality.GOOD for s in collector.samples), collector.samples[:3]
    assert [collector.good(f"lm.r{a}")[0].value for a in range(80)] == list(range(80))
