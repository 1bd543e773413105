"""Simulated machines for the demo and the tests: a press and a pump behind Modbus TCP, the press over OPC UA.

Both run inside the caller's asyncio loop and stop cleanly when their `async with` block ends.

Modbus map (one server, two unit ids):

    unit 1, the press                       unit 2, the pump
    holding 0..1   strokes  uint32 (big)    holding 100..101  run_hours  uint32, tenths of an hour
    holding 2..3   temp     float32 (big)   input   10..11    temp       float32, word_order little
    holding 4      faults   uint16 bits     coil    5         running
    holding 10..17 recipe   string(8)
    coil    0      running

OPC UA (namespace urn:mw-gateway:sim, index 2): ns=2;s=Press1.StrokeCounter (UInt32),
ns=2;s=Press1.Temperature
(Double), ns=2;s=Press1.Running (Boolean), ns=2;s=Press1.FaultWord (UInt16),
ns=2;s=Press1.Recipe (String); browse path
0:Objects/2:Press1/2:StrokeCounter and so on.

The press strokes `STROKES_PER_S * speed` times a second while running; its temperature drifts around 70 °C
and,
for 6 of every 30 simulated minutes, overheats to about 90 °C. `speed` scales simulated time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.sources import codec

STROKES_PER_S = 2.0
TICK_S = 0.1
NAMESPACE_URI = "urn:mw-gateway:sim"

_FC_WRITE = {"coil": 5, "discrete": 2, "holding": 6, "input": 4}


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class PressModel:
    """The press and pump physics, as a pure function of simulated time."""

    seed: int = 7
    strokes: float = 0.0
    run_tenths_h: float = 0.0
    t: float = 0.0
    _rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)

    @property
    def running(self) -> bool:
        return not 3400 <= self.t % 3600 < 3600  # a 200 s stop every simulated hour

    @property
    def overheating(self) -> bool:
        return 1200 <= self.t % 1800 < 1560

    @property
    def temperature(self) -> float:
        base = 90.0 if self.overheating else 70.0 + 4.0 * math.sin(self.t / 300.0)
        return round(base + self._rng.uniform(-0.5, 0.5), 2)

    @property
    def pump_temperature(self) -> float:
        return round(55.0 + 3.0 * math.sin(self.t / 500.0), 2)

    def advance(self, seconds: float) -> None:
        if self.running:
            self.strokes += STROKES_PER_S * seconds
        self.run_tenths_h += seconds / 360.0
        self.t += seconds


# ---------------------------------------------------------------- Modbus


@dataclass(frozen=True, slots=True)
class ModbusRequest:
    """One request the server received (counted on the server side, for tests and the benchmark)."""

    unit: int
    function_code: int
    address: int
    count: int


class _KnownUnitsOnly:
    """The datastore, answering nothing at all for a unit id it does not have (like a dead device behind a
    gateway), where pymodbus's SimCore would answer unknown ids from device 0 or with an exception."""

    def __init__(self, core: Any) -> None:
        self.core = core

    def _check(self, unit: int) -> None:
        from pymodbus.exceptions import NoSuchIdException

        if unit not in self.core.devices:
            raise NoSuchIdException(f"no unit {unit}")

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1) -> Any:
        self._check(device_id)
        return await self.core.async_getValues(device_id, func_code, address, count)

    async def async_setValues(self, device_id: int, func_code: int, address: int, values: Any) -> Any:
        self._check(device_id)
        return await self.core.async_setValues(device_id, func_code, address, values)

    def device_ids(self) -> list[int]:
        return list(self.core.device_ids())


class ModbusPlc:
    """A running pymodbus TCP server. Tables hold 2000 registers and 2000 bits per unit."""

    def __init__(self, host: str, port: int, speed: float, units: tuple[int, ...], simulate: bool) -> None:
        self.host = host
        self.port = port or _free_port(host)
        self.speed = speed
        self.units = units
        self.simulate = simulate
        self.model = PressModel()
        self.requests: list[ModbusRequest] = []
        self._server: Any = None
        self._serve_task: asyncio.Task[None] | None = None
        self._sim_task: asyncio.Task[None] | None = None
        self._context: Any = None
        self._server_context_holder: Any = None  # the registers, kept across stop()/start()

    def _build_context(self) -> list[Any]:
        from pymodbus.simulator import DataType, SimData, SimDevice

        def device(uid: int) -> Any:
            return SimDevice(
                id=uid,
                simdata=(
                    [SimData(0, values=[False] * 2000, datatype=DataType.BITS)],
                    [SimData(0, values=[False] * 2000, datatype=DataType.BITS)],
                    [SimData(0, count=2000, values=0, datatype=DataType.REGISTERS)],
                    [SimData(0, count=2000, values=0, datatype=DataType.REGISTERS)],
                ),
            )

        return [device(uid) for uid in self.units]

    def _trace(self, sending: bool, pdu: Any) -> Any:
        if not sending:
            self.requests.append(
                ModbusRequest(int(pdu.dev_id), int(pdu.function_code), int(pdu.address), int(pdu.count))
            )
        return pdu

    async def start(self) -> None:
        """Start (or restart after stop()) listening on the same port; register values survive a restart."""
        from pymodbus.server import ModbusTcpServer

        if self._context is None:
            self._context = self._build_context()
        self._server = ModbusTcpServer(
            self._context, address=(self.host, self.port), ignore_missing_devices=True, trace_pdu=self._trace
        )
        if self._server_context_holder is None:
            self._server_context_holder = _KnownUnitsOnly(self._server.context)
        self._server.context = self._server_context_holder  # the same registers across a restart
        await self._server.serve_forever(background=True)
        if self.simulate and self._sim_task is None:
            self._sim_task = asyncio.create_task(self._simulate())

    async def stop(self) -> None:
        """Stop listening and drop every client connection (a power cut, as seen from the network)."""
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    async def close(self) -> None:
        if self._sim_task is not None:
            self._sim_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sim_task
            self._sim_task = None
        await self.stop()

    async def _set(self, unit: int, table: str, address: int, values: list[int] | list[bool]) -> None:
        context = self._server_context_holder
        fc = _FC_WRITE[table]
        if table in ("holding", "input") or len(values) > 1:
            fc = {"coil": 15, "discrete": 2, "holding": 16, "input": 4}[table]
        result = await context.async_setValues(unit, fc, address, list(values))
        if result:
            raise ValueError(f"cannot write {table} {address}: {result}")

    async def set_holding(self, address: int, registers: list[int], *, unit: int = 1) -> None:
        await self._set(unit, "holding", address, registers)

    async def set_input(self, address: int, registers: list[int], *, unit: int = 1) -> None:
        await self._set(unit, "input", address, registers)

    async def set_coil(self, address: int, bits: list[bool], *, unit: int = 1) -> None:
        await self._set(unit, "coil", address, bits)

    async def set_discrete(self, address: int, bits: list[bool], *, unit: int = 1) -> None:
        await self._set(unit, "discrete", address, bits)

    async def write_model(self) -> None:
        """Copy the model's values into the registers (done every tick while simulating)."""
        m = self.model
        if 1 in self.units:
            await self.set_holding(0, codec.encode(int(m.strokes) & 0xFFFFFFFF, "uint32"))
            await self.set_holding(2, codec.encode(m.temperature, "float32"))
            await self.set_holding(4, [0x0004 if m.overheating else 0])
            await self.set_holding(10, codec.encode("PART-A", "string", length=8))
            await self.set_coil(0, [m.running])
        if 2 in self.units:
            await self.set_holding(100, codec.encode(int(m.run_tenths_h), "uint32"), unit=2)
            await self.set_input(10, codec.encode(m.pump_temperature, "float32", word_order="little"), unit=2)
            await self.set_coil(5, [True], unit=2)

    async def _simulate(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await self.write_model()
            await asyncio.sleep(TICK_S)
            now = loop.time()
            self.model.advance((now - last) * self.speed)
            last = now


@contextlib.asynccontextmanager
async def run_modbus_press(
    host: str = "127.0.0.1",
    port: int = 0,
    speed: float = 1.0,
    *,
    units: tuple[int, ...] = (1, 2),
    simulate: bool = True,
) -> AsyncIterator[ModbusPlc]:
    """A Modbus TCP press (unit 1) and pump (unit 2). port=0 picks a free port (`plc.port`).
    simulate=False leaves every register at 0 for tests that set them with plc.set_holding() and friends."""
    plc = ModbusPlc(host, port, speed, units, simulate)
    await plc.start()
    try:
        yield plc
    finally:
        await plc.close()


# ---------------------------------------------------------------- OPC UA

PRESS_NODES = {
    "StrokeCounter": ("UInt32", 0),
    "Temperature": ("Double", 70.0),
    "Running": ("Boolean", True),
    "FaultWord": ("UInt16", 0),
    "Recipe": ("String", "PART-A"),
}


class OpcuaPlc:
    """A running asyncua server exposing the press."""

    def __init__(
        self,
        host: str,
        port: int,
        speed: float,
        *,
        simulate: bool,
        certificate: Path | None,
        private_key: Path | None,
        users: dict[str, str] | None,
    ) -> None:
        self.host = host
        self.port = port or _free_port(host)
        self.speed = speed
        self.simulate = simulate
        self.certificate = certificate
        self.private_key = private_key
        self.users = users
        self.model = PressModel()
        self.values: dict[str, Any] = {name: initial for name, (_t, initial) in PRESS_NODES.items()}
        self._server: Any = None
        self._nodes: dict[str, Any] = {}
        self._sim_task: asyncio.Task[None] | None = None
        self.ns = 2

    @property
    def url(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/"

    async def start(self) -> None:
        """Start (or restart after stop()) a fresh server on the same port, with the last written values."""
        from asyncua import ua
        from asyncua.crypto.permission_rules import User, UserRole
        from asyncua.server.server import Server
        from asyncua.server.user_managers import UserManager

        users = self.users

        class _Users(UserManager):
            def get_user(
                self,
                iserver: Any,
                username: str | None = None,
                password: str | None = None,
                certificate: Any = None,
            ) -> Any:
                if users is None or (username is not None and users.get(username) == password):
                    return User(role=UserRole.User)
                return None

        server = Server(user_manager=_Users())
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("mw-gateway simulated press")
        if self.certificate is not None and self.private_key is not None:
            await server.load_certificate(str(self.certificate))
            await server.load_private_key(str(self.private_key))
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if users is not None:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        self.ns = await server.register_namespace(NAMESPACE_URI)
        press = await server.nodes.objects.add_object(f"ns={self.ns};s=Press1", f"{self.ns}:Press1")
        for name, (vtype, _initial) in PRESS_NODES.items():
            node = await press.add_variable(
                f"ns={self.ns};s=Press1.{name}",
                f"{self.ns}:{name}",
                ua.Variant(self.values[name], getattr(ua.VariantType, vtype)),
            )
            self._nodes[name] = node
        await server.start()
        self._server = server
        if self.simulate and self._sim_task is None:
            self._sim_task = asyncio.create_task(self._simulate())

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def close(self) -> None:
        if self._sim_task is not None:
            self._sim_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sim_task
            self._sim_task = None
        await self.stop()

    async def write(
        self, name: str, value: Any, *, variant_type: str | None = None, status: str | None = None
    ) -> None:
        """Set one press variable (e.g. "StrokeCounter"); variant_type/status write garbage for tests."""
        from asyncua import ua
        from asyncua.ua.status_codes import StatusCodes

        self.values[name] = value
        if self._server is None:
            return
        vtype = getattr(ua.VariantType, variant_type or PRESS_NODES[name][0])
        code = ua.StatusCode(getattr(StatusCodes, status or "Good"))
        now: Any = datetime.now(UTC)
        dv = ua.DataValue(ua.Variant(value, vtype), StatusCode=code, SourceTimestamp=now)
        await self._server.write_attribute_value(
            self._nodes[name].nodeid, dv
        )  # no type check: garbage allowed

    async def _simulate(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            m = self.model
            with contextlib.suppress(Exception):  # the server may be restarting under us
                await self.write("StrokeCounter", int(m.strokes) & 0xFFFFFFFF)
                await self.write("Temperature", m.temperature)
                await self.write("Running", m.running)
                await self.write("FaultWord", 0x0004 if m.overheating else 0)
            await asyncio.sleep(TICK_S * 5)
            now = loop.time()
            m.advance((now - last) * self.speed)
            last = now


@contextlib.asynccontextmanager
async def run_opcua_press(
    host: str = "127.0.0.1",
    port: int = 0,
    speed: float = 1.0,
    *,
    simulate: bool = True,
    certificate: Path | None = None,
    private_key: Path | None = None,
    users: dict[str, str] | None = None,
) -> AsyncIterator[OpcuaPlc]:
    """An OPC UA press at `plc.url`. With certificate and private_key, the only endpoint is
    Basic256Sha256/SignAndEncrypt; with users, only username logins from that dict are accepted."""
    plc = OpcuaPlc(
        host, port, speed, simulate=simulate, certificate=certificate, private_key=private_key, users=users
    )
    await plc.start()
    try:
        yield plc
    finally:
        await plc.close()
