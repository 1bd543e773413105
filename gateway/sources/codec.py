"""Modbus register encoding and decoding. Pure: no I/O, no pymodbus.

A register is 16 bits. Multi-register values are big-endian words by default (`word_order: big`, the first
register holds the most significant word); `word_order: little` reverses the registers. Inside one register
the protocol is big-endian; `byte_order: little` swaps the two bytes of every register (byte-swapped
devices). Strings ignore word_order: characters are read register after register, two per register, and
end at the first NUL (C strings: what follows a NUL is a previous, longer value left in the buffer).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Literal

Order = Literal["big", "little"]

#: struct format and register count of each numeric type
NUMERIC: dict[str, tuple[str, int]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float32": ("f", 2),
    "float64": ("d", 4),
}


class DecodeError(ValueError):
    """The registers do not hold a value of the configured type (the message says why, for a person)."""


def register_count(type_: str, length: int | None = None) -> int:
    """Registers a value of this type occupies."""
    if type_ in NUMERIC:
        return NUMERIC[type_][1]
    if type_ == "bool":
        return 1
    if type_ == "string":
        if length is None:
            raise ValueError("a string needs its length in registers")
        return length
    raise ValueError(f"unknown Modbus type {type_!r}")


def _swap_bytes(reg: int) -> int:
    return ((reg & 0xFF) << 8) | (reg >> 8)


def _to_bytes(registers: Sequence[int], *, word_order: Order, byte_order: Order) -> bytes:
    regs = list(registers)
    for reg in regs:
        if not 0 <= reg <= 0xFFFF:
            raise DecodeError(f"register value {reg!r} is not 16 bits")
    if word_order == "little":
        regs.reverse()
    if byte_order == "little":
        regs = [_swap_bytes(r) for r in regs]
    return b"".join(r.to_bytes(2, "big") for r in regs)


def _from_bytes(data: bytes, *, word_order: Order, byte_order: Order) -> list[int]:
    regs = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if byte_order == "little":
        regs = [_swap_bytes(r) for r in regs]
    if word_order == "little":
        regs.reverse()
    return regs


def decode(
    registers: Sequence[int],
    type_: str,
    *,
    word_order: Order = "big",
    byte_order: Order = "big",
    bit: int | None = None,
) -> int | float | bool | str:
    """Decode exactly the registers of one value (len(registers) == register_count(type_, ...))."""
    if type_ == "bool" or bit is not None:
        if len(registers) != 1:
            raise DecodeError(f"a bit is read from 1 register, got {len(registers)}")
        (reg,) = _from_bytes(
            _to_bytes(registers, word_order="big", byte_order=byte_order), word_order="big", byte_order="big"
        )
        return bool(reg >> bit & 1) if bit is not None else reg != 0
    if type_ == "string":
        data = _to_bytes(registers, word_order="big", byte_order=byte_order).split(b"\x00", 1)[0]
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"not UTF-8 text: {data!r}") from exc
    fmt, count = NUMERIC[type_]
    if len(registers) != count:
        raise DecodeError(f"{type_} needs {count} registers, got {len(registers)}")
    value = struct.unpack(">" + fmt, _to_bytes(registers, word_order=word_order, byte_order=byte_order))[0]
    assert isinstance(value, int | float)
    return value


def encode(
    value: int | float | bool | str,
    type_: str,
    *,
    word_order: Order = "big",
    byte_order: Order = "big",
    length: int | None = None,
) -> list[int]:
    """The registers a device holding `value` would show (the inverse of decode; for simulators and tests)."""
    if type_ == "bool":
        return [_swap_bytes(int(bool(value))) if byte_order == "little" else int(bool(value))]
    if type_ == "string":
        if not isinstance(value, str):
            raise TypeError("a string value is needed")
        size = register_count("string", length)
        data = value.encode("utf-8")
        if len(data) > 2 * size:
            raise ValueError(f"{value!r} does not fit in {size} registers")
        return _from_bytes(data.ljust(2 * size, b"\x00"), word_order="big", byte_order=byte_order)
    fmt, _count = NUMERIC[type_]
    return _from_bytes(struct.pack(">" + fmt, value), word_order=word_order, byte_order=byte_order)


def bits_of(registers: Sequence[int]) -> list[bool]:
    """Bits of registers, bit 0 of the first register first."""
    return [bool(reg >> i & 1) for reg in registers for i in range(16)]
