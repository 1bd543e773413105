"""The Modbus register codec: every type, both word orders and both byte orders, checked against pymodbus."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client.mixin import ModbusClientMixin

from gateway.sources import codec

DT = ModbusClientMixin.DATATYPE
RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
orders = st.sampled_from(["big", "little"])


def _pymodbus_registers(value: float, type_: str, word_order: str, byte_order: str) -> list[int]:
    """An independent encoder: pymodbus's own, plus the byte swap pymodbus does not offer."""
    regs = ModbusClientMixin.convert_to_registers(value, DT[type_.upper()], word_order=word_order)  # type: ignore[arg-type]
    if byte_order == "little":
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    return regs


@given(data=st.data(), word_order=orders, byte_order=orders)
@pytest.mark.parametrize("type_", sorted(RANGES))
def test_integers_round_trip_and_match_pymodbus(
    type_: str, data: st.DataObject, word_order: str, byte_order: str
) -> None:
    low, high = RANGES[type_]
    value = data.draw(st.integers(low, high))
    regs = _pymodbus_registers(value, type_, word_order, byte_order)
    assert codec.encode(value, type_, word_order=word_order, byte_order=byte_order) == regs  # type: ignore[arg-type]
    decoded = codec.decode(regs, type_, word_order=word_order, byte_order=byte_order)  # type: ignore[arg-type]
    assert decoded == value and type(decoded) is int


@given(value=st.floats(width=32, allow_nan=False), word_order=orders, byte_order=orders)
def test_float32_exact(value: float, word_order: str, byte_order: str) -> None:
    regs = _pymodbus_registers(value, "float32", word_order, byte_order)
    decoded = codec.decode(regs, "float32", word_order=word_order, byte_order=byte_order)  # type: ignore[arg-type]
    assert struct.pack(">f", decoded) == struct.pack(">f", value)


@given(value=st.floats(allow_nan=False), word_order=orders, byte_order=orders)
def test_float64_exact(value: float, word_order: str, byte_order: str) -> None:
    regs = _pymodbus_registers(value, "float64", word_order, byte_order)
    decoded = codec.decode(regs, "float64", word_order=word_order, byte_order=byte_order)  # type: ignore[arg-type]
    assert struct.pack(">d", decoded) == struct.pack(">d", value)


@given(
    registers=st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2), word_order=orders, byte_order=orders
)
def test_decode_then_encode_gives_the_same_registers(
    registers: list[int], word_order: str, byte_order: str
) -> None:
    value = codec.decode(registers, "int32", word_order=word_order, byte_order=byte_order)  # type: ignore[arg-type]
    assert codec.encode(value, "int32", word_order=word_order, byte_order=byte_order) == registers  # type: ignore[arg-type]


def test_known_vectors() -> None:
    # 1.0 as float32 is 0x3F800000
    assert codec.decode([0x3F80, 0x0000], "float32") == 1.0
    assert codec.decode([0x0000, 0x3F80], "float32", word_order="little") == 1.0
    assert codec.decode([0x803F, 0x0000], "float32", byte_order="little") == 1.0
    assert codec.decode([0x0000, 0x803F], "float32", word_order="little", byte_order="little") == 1.0
    assert codec.decode([0x0001, 0x0002], "uint32") == 0x00010002
    assert codec.decode([0x0001, 0x0002], "uint32", word_order="little") == 0x00020001
    assert codec.decode([0xFFFF], "int16") == -1
    assert codec.decode([0x0102, 0x0304, 0x0506, 0x0708], "uint64") == 0x0102030405060708
    assert math.isnan(float(codec.decode([0x7FC0, 0x0000], "float32")))


@given(
    text=st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0x7FF), max_size=12), byte_order=orders
)
def test_strings(text: str, byte_order: str) -> None:
    length = (len(text.encode()) + 1) // 2 + 1
    regs = codec.encode(text, "string", length=length, byte_order=byte_order)  # type: ignore[arg-type]
    assert len(regs) == length
    assert codec.decode(regs, "string", byte_order=byte_order) == text  # type: ignore[arg-type]


def test_string_byte_order_and_garbage() -> None:
    assert codec.decode([0x4142, 0x4300], "string") == "ABC"
    assert codec.decode([0x4241, 0x0043], "string", byte_order="little") == "ABC"
    with pytest.raises(codec.DecodeError, match="not UTF-8"):
        codec.decode([0xFFFE], "string")


@given(reg=st.integers(0, 0xFFFF), bit=st.integers(0, 15))
def test_bits(reg: int, bit: int) -> None:
    assert codec.decode([reg], "bool", bit=bit) == bool(reg & (1 << bit))
    swapped = ((reg & 0xFF) << 8) | (reg >> 8)
    assert codec.decode([swapped], "bool", bit=bit, byte_order="little") == bool(reg & (1 << bit))
    assert codec.bits_of([reg])[bit] == bool(reg & (1 << bit))
    assert codec.decode([reg], "bool") == (reg != 0)


def test_wrong_register_count_is_a_decode_error() -> None:
    with pytest.raises(codec.DecodeError, match="needs 2 registers"):
        codec.decode([1], "float32")
    with pytest.raises(codec.DecodeError, match="not 16 bits"):
        codec.decode([70000], "uint16")


def test_a_string_ends_at_its_first_nul() -> None:
    from gateway.sources.codec import decode

    assert decode([0x4142, 0x4300, 0x5858, 0x5800], "string") == "ABC"
    assert decode([0x4241, 0x0043, 0x5858], "string", byte_order="little") == "ABC"
    assert decode([0x0041], "string") == ""


def test_scale_keeps_integers_when_the_result_is_whole() -> None:
    from gateway.sources.modbus import scaled

    assert type(scaled(5000, 0.1, 0.0)) is int and scaled(5000, 0.1, 0.0) == 500
    assert type(scaled(500, 1.0, 0.0)) is int
    assert scaled(18_000_000_000_000_000_123, 2.0, 1.0) == 36_000_000_000_000_000_247  # every digit
    assert scaled(5001, 0.1, 0.0) == 5001 * 0.1 and type(scaled(5001, 0.1, 0.0)) is float
    assert type(scaled(2.0, 2.0, 0.0)) is float  # a float register stays a float
