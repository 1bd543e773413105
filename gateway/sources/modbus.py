"""Modbus TCP and RTU polling with pymodbus.

How a source runs:

- `plan_reads()` coalesces the signals of one unit and table into as few requests as possible: neighbours are
  read together, reading through gaps of at most `max_gap`, and a request never exceeds the protocol limits
  (125 registers, 2000 bits) nor splits one value.
- One connection per source. Each unit (device id) is polled by its own task on its own schedule. pymodbus
  serializes requests on a connection (one transaction at a time), so a unit that never answers could hold
  the connection for `timeout` on every attempt: we send each request once (retries=0) with the source's
  `timeout`, and a unit that timed out is put on exponential backoff, so it is probed rarely and the other
  units keep their schedule. pymodbus's own "close the connection after N unanswered requests" is disabled:
  a dead unit behind a gateway must not drop the link of the live ones. The connection is re-opened only
  when it really broke, or when no unit answers at all.
- An exception answered by a device marks the signals of that request bad; the unit stays up. When the
  answer is "illegal data address" or "illegal data value" (a hole in the register map, or a request larger
  than the device accepts) and the request covers several signals, it is split in two and each half read
  again, down to single signals: only the signal at the refused address turns BAD, named in one WARNING, and
  the split stays (the bad address is not read together with its neighbours again).
- The link counts as up only after a successful Modbus exchange, not after the TCP connect: a frozen server
  (SIGSTOP) still accepts connections into the kernel's backlog, and must not make the link flap. A unit that
  stops answering is only suspect until another unit answers (then it is reported down, once); when no unit
  answers, the connection is dropped instead: one ERROR for the link, DEBUG on every retry, one INFO at the
  first answer after it. A unit keeps its up/down state across reconnections, so it is not reported again.
- Cancellation: on Python 3.11, `asyncio.wait_for` (which pymodbus uses for every request and connect) drops a
  cancellation that arrives together with the response, and a TaskGroup drops its parent's cancellation when a
  child failed at the same moment. Every await on pymodbus and on the poll group is followed by
  `_raise_if_cancelled()`, so a cancelled source always ends instead of polling (and emitting) forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from gateway.core.backoff import Backoff
from gateway.core.clock import Clock, SystemClock
from gateway.core.samples import Emit, LinkState, SourceStats
from gateway.sources import codec
from gateway.sources._common import Link, Sink, quiet_library_logger
from gateway.sources.schema import ModbusSignal, ModbusSource

log = logging.getLogger(__name__)

MAX_REGISTERS = 125  # per read request (holding, input)
MAX_BITS = 2000  # per read request (coil, discrete)
_BIT_TABLES = ("coil", "discrete")
_SPLIT_ON = (2, 3)  # illegal data address, illegal data value: a hole in the map, a request too large

_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target did not respond",
}


@dataclass(frozen=True, slots=True)
class Point:
    """One configured signal, resolved against its source's defaults."""

    name: str  # full name "source.signal"
    unit: int
    table: str  # holding | input | coil | discrete
    address: int
    count: int  # registers, or 1 bit
    type: str
    word_order: codec.Order
    byte_order: codec.Order
    bit: int | None
    scale: float
    offset: float

    @classmethod
    def from_config(cls, source: str, key: str, sig: ModbusSignal, src: ModbusSource) -> Point:
        return cls(
            name=f"{source}.{key}",
            unit=src.unit if sig.unit is None else sig.unit,
            table=sig.table,
            address=sig.address,
            count=sig.register_count,
            type=sig.value_type,
            word_order=sig.word_order or src.word_order,
            byte_order=sig.byte_order or src.byte_order,
            bit=sig.bit,
            scale=sig.scale,
            offset=sig.offset,
        )

    @property
    def end(self) -> int:
        return self.address + self.count


@dataclass(slots=True)
class Block:
    """One read request: `count` registers (or bits) of `table` from `start`, covering `points`."""

    unit: int
    table: str
    start: int
    count: int
    points: list[Point] = field(default_factory=list)
    failing: str = ""  # the reason of the last failure, "" when its last read succeeded


def plan_reads(
    points: Sequence[Point], *, max_gap: int, max_registers: int = MAX_REGISTERS, max_bits: int = MAX_BITS
) -> list[Block]:
    """The fewest requests covering every point: per unit and table, sorted by address, a point joins the
    current request while the gap before it is at most max_gap and the request stays within the limit
    (the protocol's, or the smaller one a device accepts: `max_registers`, `max_bits`)."""
    blocks: list[Block] = []
    groups: dict[tuple[int, str], list[Point]] = {}
    for p in points:
        groups.setdefault((p.unit, p.table), []).append(p)
    for (unit, table), group in sorted(groups.items()):
        limit = max_bits if table in _BIT_TABLES else max_registers
        current: Block | None = None
        for p in sorted(group, key=lambda q: (q.address, q.count)):
            if current is not None:
                end = current.start + current.count
                if p.address - end <= max_gap and max(end, p.end) - current.start <= limit:
                    current.count = max(end, p.end) - current.start
                    current.points.append(p)
                    continue
            current = Block(unit, table, p.address, p.count, [p])
            blocks.append(current)
    return blocks


class _LinkLost(Exception):
    """The connection broke (or no unit answers): reconnect with backoff."""


def _raise_if_cancelled() -> None:
    """Raise CancelledError when the current task was asked to stop but a library swallowed the request."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass
class _Unit:
    id: int
    blocks: list[Block]
    link: Link
    backoff: Backoff

    @property
    def signals(self) -> list[str]:
        return [p.name for b in self.blocks for p in b.points]


class ModbusConnector:
    """A Source reading one Modbus TCP host or RTU serial line."""

    def __init__(self, name: str, config: ModbusSource, *, clock: Clock | None = None) -> None:
        quiet_library_logger("pymodbus")
        self.name = name
        self.config = config
        self.stats = SourceStats()
        self._clock = clock or SystemClock()
        self.points = [Point.from_config(name, key, sig, config) for key, sig in config.signals.items()]
        self.blocks = plan_reads(
            self.points, max_gap=config.max_gap, max_registers=config.max_registers, max_bits=config.max_bits
        )
        where = f"{config.host}:{config.port}" if config.host else str(config.serial)
        self._what = f"modbus source {name} ({where})"
        self._link = Link(self._what, log, self.stats)
        units: dict[int, list[Block]] = {}
        for block in self.blocks:
            units.setdefault(block.unit, []).append(block)
        self._units = [
            _Unit(uid, blocks, Link(f"{self._what} unit {uid}", log), self._backoff())
            for uid, blocks in units.items()
        ]

        # per connection: has any unit answered yet; units that failed since the last answer of any unit
        # (unit id -> reason): the unit or the whole connection is dead, the next answer (or none) tells
        self._proven = False
        self._suspects: dict[int, str] = {}
        self._connection_backoff = self._backoff()

    def signal_names(self) -> list[str]:
        return [p.name for p in self.points]

    def _backoff(self) -> Backoff:
        return Backoff(initial_s=self.config.reconnect_delay, max_s=self.config.reconnect_max_delay)

    def _client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        cfg = self.config
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if cfg.host is not None:
            client = AsyncModbusTcpClient(
                cfg.host, port=cfg.port, timeout=cfg.timeout, retries=0, reconnect_delay=0, name=self.name
            )
        else:
            assert cfg.serial is not None
            client = AsyncModbusSerialClient(
                cfg.serial,
                baudrate=cfg.baudrate,
                bytesize=cfg.bytesize,
                parity=cfg.parity,
                stopbits=cfg.stopbits,
                timeout=cfg.timeout,
                retries=0,
                reconnect_delay=0,
                name=self.name,
            )
        client.set_max_no_responses(1_000_000_000)  # a silent unit must not close the others' connection
        return client

    async def run(self, emit: Emit) -> None:
        sink = Sink(emit, self.stats, self._clock, log, self.name)
        backoff = self._connection_backoff = self._backoff()
        while True:
            client = self._client()
            reason = "connection closed"
            self._proven = False
            self._suspects.clear()
            try:
                connected = await client.connect()
                _raise_if_cancelled()
                if not connected:
                    raise _LinkLost("cannot connect")
                log.debug("%s: TCP/serial connection open, waiting for a first answer", self._what)
                await self._poll_units(client, sink)
            except _LinkLost as lost:
                reason = str(lost)
            except (ModbusException, OSError) as failed:
                reason = f"{type(failed).__name__}: {failed}"
            finally:
                client.close()
            self.stats.errors += 1
            if self._link.down(reason):
                sink.all_bad(self.signal_names(), f"link down: {reason}")
            for unit in self._units:  # a unit keeps its up/down state (and its logs) across connections
                unit.backoff.reset()
                for block in unit.blocks:
                    block.failing = ""
            await asyncio.sleep(backoff.next())

    async def _poll_units(self, client: Any, sink: Sink) -> None:
        """Poll every unit, each in its own task, until one of them raises; then stop the others.

        Not a TaskGroup: on Python 3.11 a TaskGroup drops its parent's cancellation when a child fails at the
        same moment, and leaves the parent 'cancelling' after a child failed, so neither a cancel nor a
        connection loss could be told apart afterwards."""
        tasks = [asyncio.create_task(self._poll_forever(client, unit, sink)) for unit in self._units]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)  # each child ends: it re-raises a cancel the library swallowed
        for task in done:
            if not task.cancelled() and (exc := task.exception()) is not None:
                raise exc
        raise _LinkLost("polling stopped")  # not reached: a unit polls until it raises

    async def _poll_forever(self, client: Any, unit: _Unit, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        next_due = loop.time()
        while True:
            failure = await self.poll_unit(client, unit, sink)
            now = loop.time()
            if failure is None:
                self._suspects.pop(unit.id, None)
                self._answered(sink)
                unit.link.up()
                unit.backoff.reset()
                next_due += self.config.poll
                if next_due < now:  # late (a slow device or a long pause): skip the missed cycles
                    next_due = now
                delay = next_due - now
            else:
                if unit.link.state is LinkState.DOWN:
                    unit.link.down(failure)  # already reported: DEBUG
                else:
                    # the unit, or the whole connection? Reported once another unit answers.
                    self._suspects[unit.id] = failure
                    log.debug("%s unit %d: %s", self._what, unit.id, failure)
                if all(u.id in self._suspects or u.link.state is LinkState.DOWN for u in self._units):
                    raise _LinkLost(failure)  # nothing answers: the connection itself is suspect
                delay = unit.backoff.next()
                next_due = now + delay
            await asyncio.sleep(delay)

    def _answered(self, sink: Sink) -> None:
        """A unit answered: the connection works, so the link is up and the suspects are really down."""
        if not self._proven:
            self._proven = True
            self._link.up()
            self._connection_backoff.reset()
        for unit in self._units:
            failure = self._suspects.get(unit.id)
            if failure is not None and unit.link.down(failure):
                sink.all_bad(unit.signals, f"unit {unit.id} not answering: {failure}")
        self._suspects.clear()

    async def poll_unit(self, client: Any, unit: _Unit, sink: Sink) -> str | None:
        """One poll cycle of one unit: every block read and emitted. The unit's failure reason, or None."""
        pending = list(unit.blocks)
        while pending:
            block = pending.pop(0)
            try:
                response = await _read(client, block)
            except ModbusIOException as exc:
                self.stats.errors += 1
                if not client.connected:
                    raise _LinkLost("connection lost") from exc
                return f"no answer within {self.config.timeout:g}s"
            except ConnectionException as exc:
                self.stats.errors += 1
                raise _LinkLost(f"connection lost: {exc}") from exc
            if response.isError():
                self.stats.errors += 1
                code = int(getattr(response, "exception_code", 0))
                reason = f"device answered exception {code} ({_EXCEPTION_NAMES.get(code, 'unknown')})"
                if code in _SPLIT_ON and len(block.points) > 1:
                    halves = self._split(unit, block)
                    log.debug(
                        "%s unit %d: reading %s %d..%d: %s; reading it in %d parts",
                        self._what,
                        unit.id,
                        block.table,
                        block.start,
                        block.start + block.count - 1,
                        reason,
                        len(halves),
                    )
                    pending[:0] = halves
                    continue
                if block.failing != reason:
                    if len(block.points) == 1:
                        p = block.points[0]
                        log.warning(
                            "%s unit %d: %s (%s %d): %s; marked bad",
                            self._what,
                            unit.id,
                            p.name,
                            p.table,
                            p.address,
                            reason,
                        )
                    else:
                        log.warning(
                            "%s unit %d: reading %s %d..%d: %s; its signals are marked bad",
                            self._what,
                            unit.id,
                            block.table,
                            block.start,
                            block.start + block.count - 1,
                            reason,
                        )
                block.failing = reason
                sink.all_bad([p.name for p in block.points], reason)
                continue
            self.stats.reads += 1
            if block.failing:
                log.info("%s unit %d: %s %d reads again", self._what, unit.id, block.table, block.start)
                block.failing = ""
            self._emit_block(block, response, sink)
        return None

    def _split(self, unit: _Unit, block: Block) -> list[Block]:
        """Replace a refused block of several signals by two smaller ones (for good: a device that refuses
        an address refuses it on every poll); the halves are planned like any read."""
        points = sorted(block.points, key=lambda q: (q.address, q.count))
        half = len(points) // 2
        parts = [
            b
            for group in (points[:half], points[half:])
            for b in plan_reads(
                group,
                max_gap=self.config.max_gap,
                max_registers=self.config.max_registers,
                max_bits=self.config.max_bits,
            )
        ]
        at = unit.blocks.index(block)
        unit.blocks[at : at + 1] = parts
        return parts

    def _emit_block(self, block: Block, response: Any, sink: Sink) -> None:
        ts = self._clock.now()
        if block.table in _BIT_TABLES:
            bits = list(response.bits)
            if len(bits) < block.count:
                for p in block.points:
                    sink.garbage(p.name, f"device sent {len(bits)} bits, {block.count} were asked", ts)
                return
            for p in block.points:
                sink.good(p.name, bool(bits[p.address - block.start]), ts)
            return
        regs = list(response.registers)
        if len(regs) != block.count:
            for p in block.points:
                sink.garbage(p.name, f"device sent {len(regs)} registers, {block.count} were asked", ts)
            return
        for p in block.points:
            offset = p.address - block.start
            try:
                value = codec.decode(
                    regs[offset : offset + p.count],
                    p.type,
                    word_order=p.word_order,
                    byte_order=p.byte_order,
                    bit=p.bit,
                )
            except codec.DecodeError as exc:
                sink.garbage(p.name, str(exc), ts)
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = scaled(value, p.scale, p.offset)
            sink.good(p.name, value, ts)


def scaled(value: int | float, scale: float, offset: float) -> int | float:
    """value × scale + offset. An integer stays an integer when the result is whole (`500 × 1.0` is 500, not
    500.0; `5000 × 0.1` is 500): integral factors are applied in integer arithmetic, so a 64-bit counter
    keeps every digit."""
    if scale == 1 and offset == 0:
        return value
    if isinstance(value, int) and scale.is_integer() and offset.is_integer():
        return value * int(scale) + int(offset)
    result = value * scale + offset
    if isinstance(value, int) and result.is_integer() and abs(result) < 2**53:
        return int(result)
    return result


async def _read(client: Any, block: Block) -> Any:
    if block.table == "holding":
        response = await client.read_holding_registers(block.start, count=block.count, device_id=block.unit)
    elif block.table == "input":
        response = await client.read_input_registers(block.start, count=block.count, device_id=block.unit)
    elif block.table == "coil":
        response = await client.read_coils(block.start, count=block.count, device_id=block.unit)
    else:
        response = await client.read_discrete_inputs(block.start, count=block.count, device_id=block.unit)
    _raise_if_cancelled()  # pymodbus's wait_for returns the response and drops a cancel that came with it
    return response
