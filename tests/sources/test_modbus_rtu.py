"""Modbus RTU over a serial line: pymodbus's serial server on one pseudo-terminal, the gateway's Modbus source
(`serial: /dev/pts/N`) on another, the two joined by a byte relay in the test (a null-modem cable)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.core.samples import LinkState, Quality
from gateway.sources import codec
from gateway.sources.modbus import ModbusConnector
from gateway.sources.registry import build_source
from gateway.sources.schema import ModbusSource
from tests.sources.conftest import Collector, running

FAST = {"poll": 0.02, "timeout": 0.3, "reconnect_delay": 0.05, "reconnect_max_delay": 0.2}
BAUDRATE = 19200


# ---------------------------------------------------------------- the serial line


def _crc16(frame: bytes) -> bytes:
    """CRC-16/MODBUS, written out here so the wire is checked independently of pymodbus's framer."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


@dataclass
class SerialLine:
    """Two pseudo-terminals whose master sides are joined by a relay running in the test's loop: what one
    end writes comes out of the other. `to_server` keeps every byte the gateway sent."""

    server_port: str
    gateway_port: str
    to_server: bytearray = field(default_factory=bytearray)

    def read_requests(self) -> list[tuple[int, int, int, int]]:
        """The gateway's requests as (unit, function, address, count), every frame checked as RTU: a read
        request is 8 bytes ending in its CRC, with no other framing on the line."""
        data = bytes(self.to_server)
        assert len(data) % 8 == 0, data.hex()
        requests = []
        for i in range(0, len(data), 8):
            frame = data[i : i + 8]
            assert frame[6:] == _crc16(frame[:6]), f"bad CRC in {frame.hex()}"
            requests.append(
                (frame[0], frame[1], int.from_bytes(frame[2:4], "big"), int.from_bytes(frame[4:6], "big"))
            )
        return requests


@contextlib.asynccontextmanager
async def serial_line() -> AsyncIterator[SerialLine]:
    loop = asyncio.get_running_loop()
    (server_master, server_slave), (gateway_master, gateway_slave) = os.openpty(), os.openpty()
    for slave in (server_slave, gateway_slave):
        tty.setraw(slave)  # no echo, no line editing, before either program opens its end
    line = SerialLine(os.ttyname(server_slave), os.ttyname(gateway_slave))

    def relay(source: int, target: int, keep: bytearray | None) -> None:
        data = os.read(source, 4096)  # readable, so this returns what is there
        if keep is not None:
            keep.extend(data)
        os.write(target, data)

    loop.add_reader(gateway_master, relay, gateway_master, server_master, line.to_server)
    loop.add_reader(server_master, relay, server_master, gateway_master, None)
    try:
        yield line
    finally:
        loop.remove_reader(gateway_master)
        loop.remove_reader(server_master)
        for fd in (server_master, server_slave, gateway_master, gateway_slave):  # slaves held: no EIO
            os.close(fd)


# ---------------------------------------------------------------- the RTU devices


class _KnownUnitsOnly:
    """The server's datastore, silent for a unit id it does not have (a dead device on the bus) where
    pymodbus's SimCore would answer from device 0 or with an exception."""

    def __init__(self, core: Any) -> None:
        self.core = core

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1) -> Any:
        if device_id not in self.core.devices:
            raise NoSuchIdException(f"no unit {device_id}")
        return await self.core.async_getValues(device_id, func_code, address, count)

    async def async_setValues(self, device_id: int, func_code: int, address: int, values: Any) -> Any:
        return await self.core.async_setValues(device_id, func_code, address, values)


def _device(uid: int) -> SimDevice:
    return SimDevice(
        id=uid,
        simdata=(
            [SimData(0, values=[False] * 64, datatype=DataType.BITS)],  # coils
            [SimData(0, values=[False] * 64, datatype=DataType.BITS)],  # discrete inputs
            [SimData(0, count=256, values=0, datatype=DataType.REGISTERS)],  # holding
            [SimData(0, count=256, values=0, datatype=DataType.REGISTERS)],  # input
        ),
    )


@dataclass
class RtuDevices:
    server: ModbusSerialServer
    store: _KnownUnitsOnly

    async def set_holding(self, unit: int, address: int, registers: list[int]) -> None:
        assert not await self.store.async_setValues(unit, 16, address, registers)

    async def set_coil(self, unit: int, address: int, value: bool) -> None:
        assert not await self.store.async_setValues(unit, 15, address, [value])


@contextlib.asynccontextmanager
async def rtu_devices(port: str, units: tuple[int, ...]) -> AsyncIterator[RtuDevices]:
    server = ModbusSerialServer(
        [_device(uid) for uid in units], port=port, baudrate=BAUDRATE, ignore_missing_devices=True
    )
    store = _KnownUnitsOnly(server.context)
    server.context = store  # type: ignore[assignment]
    await server.serve_forever(background=True)
    try:
        yield RtuDevices(server, store)
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


def source(port: str, signals: dict[str, Any], **options: Any) -> ModbusConnector:
    config = ModbusSource.model_validate(
        {
            "protocol": "modbus",
            "serial": port,
            "baudrate": BAUDRATE,
            **FAST,
            **options,
            "signals": signals,
        }
    )
    built = build_source("line", config)
    assert isinstance(built, ModbusConnector)
    return built


def _has(collector: Collector, signal: str, value: Any) -> bool:
    return any(s.value == value for s in collector.good(signal))


# ---------------------------------------------------------------- tests


async def test_rtu_holding_registers_and_coils_of_two_units_over_a_serial_line(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.sources")
    async with serial_line() as line, rtu_devices(line.server_port, (1, 2)) as devices:
        await devices.set_holding(1, 0, codec.encode(4_000_000_123, "uint32"))
        await devices.set_holding(1, 2, codec.encode(1234.5, "float32", word_order="little"))
        await devices.set_coil(1, 3, True)
        await devices.set_holding(2, 100, codec.encode(-1234, "int16"))
        await devices.set_coil(2, 5, True)
        src = source(
            line.gateway_port,
            {
                "strokes": {"holding": 0, "type": "uint32"},
                "temp": {"holding": 2, "type": "float32", "word_order": "little"},
                "running": {"coil": 3},
                "pump_delta": {"holding": 100, "type": "int16", "unit": 2},
                "pump_on": {"coil": 5, "unit": 2},
            },
        )
        async with running(src, collector):
            await collector.wait_for(
                lambda: all(collector.good(f"line.{n}") for n in ("strokes", "temp", "running", "pump_on")),
                "first values of both units",
            )
            await devices.set_holding(1, 0, codec.encode(4_000_000_124, "uint32"))
            await devices.set_coil(2, 5, False)
            await collector.wait_for(
                lambda: (
                    _has(collector, "line.strokes", 4_000_000_124) and _has(collector, "line.pump_on", False)
                ),
                "changed values",
            )
    assert collector.good("line.strokes")[0].value == 4_000_000_123
    assert collector.good("line.temp")[0].value == 1234.5
    assert collector.good("line.running")[0].value is True
    assert collector.good("line.pump_delta")[0].value == -1234
    assert collector.good("line.pump_on")[0].value is True
    assert not [s for s in collector.samples if s.quality is Quality.BAD]
    # what went over the line: valid RTU frames, one coalesced holding read and one coil read per unit
    requests = line.read_requests()
    assert set(requests) == {(1, 3, 0, 4), (1, 1, 3, 1), (2, 3, 100, 1), (2, 1, 5, 1)}
    assert src.stats.link is LinkState.UP and src.stats.errors == 0
    assert len(requests) - 1 <= src.stats.reads <= len(requests)  # the last may be in flight at the stop
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []


async def test_a_silent_unit_on_the_bus_is_bad_while_the_other_keeps_being_read(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.sources")
    async with serial_line() as line, rtu_devices(line.server_port, (1,)) as devices:
        await devices.set_holding(1, 0, [7])
        src = source(
            line.gateway_port,
            {"count": {"holding": 0}, "dead": {"holding": 0, "unit": 9}},
            timeout=0.1,
        )
        async with running(src, collector):
            await collector.wait_for(
                lambda: any(s.quality is Quality.BAD for s in collector.of("line.dead")), "unit 9 bad"
            )
            for value in (8, 9):  # unit 1 keeps being polled while unit 9 is probed with backoff
                await devices.set_holding(1, 0, [value])
                await collector.wait_for(partial(_has, collector, "line.count", value), f"count {value}")
    assert not collector.good("line.dead")
    assert "unit 9 not answering: no answer within 0.1s" in collector.of("line.dead")[0].reason
    assert src.stats.link is LinkState.UP
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "unit 9" in errors[0], errors
    assert {unit for unit, *_ in line.read_requests()} == {1, 9}
