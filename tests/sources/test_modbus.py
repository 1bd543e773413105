"""Modbus source against a real pymodbus server (gateway.sim.plc) on loopback."""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any

import pytest
from pymodbus.client.mixin import ModbusClientMixin

from gateway.core.samples import LinkState, Quality
from gateway.sim.plc import run_modbus_press
from gateway.sources.modbus import MAX_REGISTERS, ModbusConnector, Point, plan_reads
from gateway.sources.registry import build_source
from gateway.sources.schema import ModbusSource
from tests.sources.conftest import Collector, running

FAST = {"poll": 0.02, "timeout": 0.2, "reconnect_delay": 0.05, "reconnect_max_delay": 0.2}


def source(port: int, signals: dict[str, Any], **options: Any) -> ModbusConnector:
    config = ModbusSource.model_validate(
        {"protocol": "modbus", "host": "127.0.0.1", "port": port, **FAST, **options, "signals": signals}
    )
    built = build_source("m", config)
    assert isinstance(built, ModbusConnector)
    return built


def _swap(regs: list[int]) -> list[int]:
    return [((r & 0xFF) << 8) | (r >> 8) for r in regs]


# ---------------------------------------------------------------- planning (pure)


def _points(spec: list[tuple[str, int, int]]) -> list[Point]:
    return [
        Point(f"m.s{i}", 1, table, address, count, "uint16", "big", "big", None, 1.0, 0.0)
        for i, (table, address, count) in enumerate(spec)
    ]


def test_plan_joins_neighbours_reads_through_small_gaps_and_splits_at_limits() -> None:
    blocks = plan_reads(
        _points([("holding", 0, 2), ("holding", 2, 2), ("holding", 10, 1), ("holding", 40, 1)]), max_gap=16
    )
    assert [(b.start, b.count) for b in blocks] == [(0, 11), (40, 1)]
    # never more than 125 registers, never a value cut in two
    blocks = plan_reads(_points([("holding", a, 4) for a in range(0, 400, 4)]), max_gap=0)
    assert all(b.count <= MAX_REGISTERS for b in blocks)
    assert len(blocks) == 4 and [b.count for b in blocks] == [124, 124, 124, 28]
    bits = plan_reads(_points([("coil", a, 1) for a in range(2500)]), max_gap=0)
    assert [(b.start, b.count) for b in bits] == [(0, 2000), (2000, 500)]
    assert len(plan_reads(_points([("holding", 0, 1), ("input", 0, 1), ("coil", 0, 1)]), max_gap=16)) == 3


# ---------------------------------------------------------------- against the server


TYPES = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
SAMPLE_VALUES = {
    "int16": -12345,
    "uint16": 54321,
    "int32": -2_000_000_123,
    "uint32": 4_000_000_123,
    "int64": -9_000_000_000_000_000_123,
    "uint64": 18_000_000_000_000_000_123,
    "float32": 1234.5,
    "float64": -98765.4321,
}


async def test_every_type_and_both_word_and_byte_orders_decode_exactly(collector: Collector) -> None:
    signals: dict[str, Any] = {}
    writes: list[tuple[int, list[int]]] = []
    address = 0
    for type_ in TYPES:
        for word_order in ("big", "little"):
            for byte_order in ("big", "little"):
                name = f"{type_}_{word_order}_{byte_order}"
                signals[name] = {
                    "holding": address,
                    "type": type_,
                    "word_order": word_order,
                    "byte_order": byte_order,
                }
                regs = ModbusClientMixin.convert_to_registers(
                    SAMPLE_VALUES[type_],
                    ModbusClientMixin.DATATYPE[type_.upper()],
                    word_order=word_order,  # type: ignore[arg-type]
                )
                writes.append((address, _swap(regs) if byte_order == "little" else regs))
                address += len(regs)
    signals["scaled"] = {"input": 0, "type": "uint32", "scale": 0.1, "offset": -5}
    signals["fault_bit_3"] = {"input": 2, "bit": 3}
    signals["fault_bit_4"] = {"input": 2, "bit": 4}
    signals["label"] = {"input": 3, "type": "string", "length": 4}
    signals["label_swapped"] = {"input": 7, "type": "string", "length": 2, "byte_order": "little"}
    signals["running"] = {"coil": 17}
    signals["door"] = {"discrete": 3}
    async with run_modbus_press(units=(1,), simulate=False) as plc:
        for addr, regs in writes:
            await plc.set_holding(addr, regs)
        await plc.set_input(0, [0x0001, 0x0000])  # 65536 raw
        await plc.set_input(2, [0b1000])
        await plc.set_input(3, [0x5052, 0x4553, 0x5300, 0x0000])  # "PRESS"
        await plc.set_input(7, [0x4241, 0x0043])  # "ABC" byte-swapped
        await plc.set_coil(17, [True])
        await plc.set_discrete(3, [True])
        src = source(plc.port, signals)
        async with running(src, collector):
            await collector.wait_for(
                lambda: all(collector.good(n) for n in src.signal_names()), "every signal read"
            )
    for type_ in TYPES:
        for word_order in ("big", "little"):
            for byte_order in ("big", "little"):
                got = collector.good(f"m.{type_}_{word_order}_{byte_order}")[0].value
                if type_ == "float32":
                    assert got == pytest.approx(SAMPLE_VALUES[type_], rel=1e-7)
                else:
                    assert got == SAMPLE_VALUES[type_], (type_, word_order, byte_order)
                assert isinstance(got, float if type_.startswith("float") else int)
    assert collector.good("m.scaled")[0].value == pytest.approx(65536 * 0.1 - 5)
    assert collector.good("m.fault_bit_3")[0].value is True
    assert collector.good("m.fault_bit_4")[0].value is False
    assert collector.good("m.label")[0].value == "PRESS"
    assert collector.good("m.label_swapped")[0].value == "ABC"
    assert collector.good("m.running")[0].value is True
    assert collector.good("m.door")[0].value is True


async def test_300_signals_of_one_unit_are_read_in_the_minimum_number_of_requests(
    collector: Collector,
) -> None:
    signals: dict[str, Any] = {}
    signals.update({f"h{a}": {"holding": a} for a in range(100)})  # 100 registers
    signals.update(
        {f"f{a}": {"holding": a, "type": "float32"} for a in range(100, 200, 2)}
    )  # 100 more, contiguous
    signals.update(
        {f"i{a}": {"holding": a, "type": "int32"} for a in range(300, 400, 2)}
    )  # a gap of 100 before
    signals.update({f"in{a}": {"input": a} for a in range(0, 100, 2)})  # gaps of 1: read through
    signals.update({f"c{a}": {"coil": a} for a in range(0, 500, 10)})  # gaps of 9 bits
    assert len(signals) == 300
    minimum = 2 + 1 + 1 + 1  # ceil(200 / 125) + the far holding group + input + coils
    async with run_modbus_press(units=(1,), simulate=False) as plc:
        src = source(plc.port, signals, poll=3600)  # exactly one poll cycle during the test
        async with running(src, collector):
            await collector.wait_for(lambda: len(collector.samples) >= 300, "one full cycle")
        assert len(plc.requests) == minimum, plc.requests
    assert len({s.signal for s in collector.samples}) == 300
    assert all(s.quality is Quality.GOOD for s in collector.samples)
    assert src.stats.reads == minimum


async def test_a_unit_that_never_answers_does_not_delay_another(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.sources")
    async with run_modbus_press(units=(1,), simulate=False) as plc:  # unit 9 does not exist: no answer at all
        await plc.set_holding(0, [42])
        src = source(plc.port, {"alive": {"holding": 0}, "dead": {"holding": 0, "unit": 9}}, timeout=0.1)
        async with running(src, collector):
            await collector.wait_for(
                lambda: len(collector.good("m.alive")) >= 40, "40 polls of the live unit"
            )
            await collector.wait_for(
                lambda: sum(r.unit == 9 for r in plc.requests) >= 3, "3 probes of the dead unit"
            )
        requests = list(plc.requests)
    # the live unit was never marked bad and the shared connection was never dropped
    assert all(s.quality is Quality.GOOD and s.value == 42 for s in collector.of("m.alive"))
    assert src.stats.reconnects == 0 and src.stats.link is LinkState.UP
    # the dead unit: one BAD sample, one ERROR line, then only rare probes with backoff
    dead = collector.of("m.dead")
    assert len(dead) == 1 and dead[0].quality is Quality.BAD and "unit 9 not answering" in dead[0].reason
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "unit 9" in errors[0].getMessage()
    # between two probes of the dead unit, the live unit kept being polled
    probes = [i for i, r in enumerate(requests) if r.unit == 9]
    for before, after in itertools.pairwise(probes):
        assert any(r.unit == 1 for r in requests[before + 1 : after]), requests
    assert sum(r.unit == 1 for r in requests) > 4 * len(probes)


async def test_garbage_marks_the_signal_bad_and_the_source_keeps_running(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.sources")
    signals = {
        "temp": {"holding": 0, "type": "float32"},
        "inf": {"holding": 2, "type": "float64"},
        "label": {"holding": 10, "type": "string", "length": 2},
        "ok": {"holding": 20},
        "beyond": {"holding": 1999, "type": "uint32"},  # the device has 2000 registers: exception 2
    }
    async with run_modbus_press(units=(1,), simulate=False) as plc:
        await plc.set_holding(0, [0x7FC0, 0x0000])  # NaN
        await plc.set_holding(2, [0x7FF0, 0, 0, 0])  # +inf
        await plc.set_holding(10, [0xFFFE, 0x4142])  # not UTF-8
        await plc.set_holding(20, [7])
        src = source(plc.port, signals)
        async with running(src, collector):
            await collector.wait_for(lambda: len(collector.of("m.ok")) >= 3, "three cycles")
            await plc.set_holding(0, codec_float32(71.5))
            await collector.wait_for(lambda: bool(collector.good("m.temp")), "temp good again")
    reasons = {name: collector.of(f"m.{name}")[0].reason for name in ("temp", "inf", "label", "beyond")}
    assert reasons["temp"] == "value is NaN"
    assert reasons["inf"] == "value is infinite"
    assert "not UTF-8" in reasons["label"]
    assert reasons["beyond"] == "device answered exception 2 (illegal data address)"
    assert all(collector.of(f"m.{name}")[0].quality is Quality.BAD for name in reasons)
    assert all(s.quality is Quality.GOOD for s in collector.of("m.ok"))
    assert collector.good("m.temp")[0].value == 71.5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # one clear line per problem, not one per poll
    assert sum("m.temp" in w and "NaN" in w for w in warnings) == 1
    assert sum("m.label" in w for w in warnings) == 1
    assert sum("illegal data address" in w for w in warnings) == 1
    assert src.stats.link is LinkState.UP and src.stats.errors >= 4


def codec_float32(value: float) -> list[int]:
    from gateway.sources.codec import encode

    return encode(value, "float32")


async def test_server_down_marks_signals_bad_and_the_source_reconnects(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.sources")
    async with run_modbus_press(units=(1,), simulate=False) as plc:
        await plc.set_holding(0, [1])
        src = source(plc.port, {"v": {"holding": 0}, "w": {"coil": 0}})
        async with running(src, collector):
            await collector.wait_for(lambda: bool(collector.good("m.v")), "first read")
            await plc.stop()
            await collector.wait_for(
                lambda: (s := collector.last("m.v")) is not None and s.quality is Quality.BAD, "bad"
            )
            assert src.stats.link is LinkState.DOWN
            n_bad = len(collector.samples)
            await plc.set_holding(0, [2])
            await plc.start()
            await collector.wait_for(
                lambda: any(s.value == 2 for s in collector.good("m.v")), "read after restart"
            )
    assert "link down" in collector.samples[n_bad - 1].reason
    assert src.stats.reconnects == 1 and src.stats.link is LinkState.UP
    by_level = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert [lvl for lvl, _ in by_level] == [logging.ERROR, logging.INFO], by_level
    assert "link down" in by_level[0][1] and "recovered" in by_level[1][1]
    assert not math.isnan(src.stats.last_sample_ts or math.nan)
