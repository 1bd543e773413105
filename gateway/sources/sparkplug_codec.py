"""Sparkplug B payloads: decoding a message into plain metrics, and encoding the few we send (and tests use).

Pure functions over the generated protobuf module (`sparkplug_b_pb2`, from `sparkplug_b.proto`); importing
this module imports `protobuf`, the optional `sparkplug` extra.

Values, by datatype (Sparkplug 3.0, 6.4.16):

- Int8, Int16, Int32 travel in the uint32 `int_value`, Int64 in the uint64 `long_value`, as two's
  complement: -12 as an Int32 arrives as 4294967284 and is converted back. Int8/Int16 sent sign-extended to
  32 bits or only in their own width (some edge nodes do each) both decode.
- UInt8..UInt64 are range-checked. An integer found in the other integer field (`long_value` for an Int32,
  `int_value` for a UInt64) is accepted: implementations differ there and the value is unambiguous.
- Float, Double as floats; Boolean; String, Text, UUID as text; DateTime (ms since the epoch) as Unix
  seconds (a float, like every time in the gateway); Bytes as lowercase hex text.
- File, DataSet, Template, PropertySet(List) and the array types are unsupported: their metrics decode to an
  `unsupported` reason, which the source turns into a BAD sample saying so.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from gateway.core.samples import Value
from gateway.sources import sparkplug_b_pb2

pb: Any = sparkplug_b_pb2  # generated: its classes are made at import time, invisible to mypy


class DataType(enum.IntEnum):
    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTYSET = 20
    PROPERTYSETLIST = 21
    INT8_ARRAY = 22
    INT16_ARRAY = 23
    INT32_ARRAY = 24
    INT64_ARRAY = 25
    UINT8_ARRAY = 26
    UINT16_ARRAY = 27
    UINT32_ARRAY = 28
    UINT64_ARRAY = 29
    FLOAT_ARRAY = 30
    DOUBLE_ARRAY = 31
    BOOLEAN_ARRAY = 32
    STRING_ARRAY = 33
    DATETIME_ARRAY = 34


# The spec's own names, as edge nodes and SCADA tools print them.
TYPE_NAMES = {
    0: "Unknown", 1: "Int8", 2: "Int16", 3: "Int32", 4: "Int64", 5: "UInt8", 6: "UInt16", 7: "UInt32",
    8: "UInt64", 9: "Float", 10: "Double", 11: "Boolean", 12: "String", 13: "DateTime", 14: "Text",
    15: "UUID", 16: "DataSet", 17: "Bytes", 18: "File", 19: "Template", 20: "PropertySet",
    21: "PropertySetList", 22: "Int8Array", 23: "Int16Array", 24: "Int32Array", 25: "Int64Array",
    26: "UInt8Array", 27: "UInt16Array", 28: "UInt32Array", 29: "UInt64Array", 30: "FloatArray",
    31: "DoubleArray", 32: "BooleanArray", 33: "StringArray", 34: "DateTimeArray",
}  # fmt: skip

_SIGNED_BITS = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64}
_UNSIGNED_BITS = {DataType.UINT8: 8, DataType.UINT16: 16, DataType.UINT32: 32, DataType.UINT64: 64}
_UNSUPPORTED = {
    DataType.DATASET: "DataSet",
    DataType.TEMPLATE: "Template",
    DataType.FILE: "File",
    DataType.PROPERTYSET: "PropertySet",
    DataType.PROPERTYSETLIST: "PropertySetList",
}

REBIRTH_METRIC = "Node Control/Rebirth"
BDSEQ_METRIC = "bdSeq"


class PayloadError(ValueError):
    """The bytes are not a Sparkplug B payload (truncated, not protobuf, wrong wire types)."""


class ValueProblem(ValueError):
    """One metric's value cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric of a payload, before its name is resolved (DATA messages often carry only the alias)."""

    name: str | None
    alias: int | None
    datatype: int | None
    timestamp_ms: int | None
    is_historical: bool
    is_null: bool
    raw: Any  # the protobuf Metric, decoded on demand with value_of()


@dataclass(frozen=True, slots=True)
class Payload:
    timestamp_ms: int | None
    seq: int | None
    metrics: tuple[Metric, ...]


def decode(data: bytes) -> Payload:
    """The payload's metrics; raises PayloadError (never anything else) for bytes that do not parse."""
    try:
        message = pb.Payload.FromString(data)
    except (DecodeError, RuntimeWarning, ValueError, TypeError, OverflowError) as exc:
        raise PayloadError(f"not a Sparkplug B payload ({len(data)} bytes): {exc}") from None
    metrics = tuple(
        Metric(
            name=m.name if m.HasField("name") else None,
            alias=m.alias if m.HasField("alias") else None,
            datatype=m.datatype if m.HasField("datatype") else None,
            timestamp_ms=m.timestamp if m.HasField("timestamp") else None,
            is_historical=m.is_historical,
            is_null=m.is_null,
            raw=m,
        )
        for m in message.metrics
    )
    return Payload(
        timestamp_ms=message.timestamp if message.HasField("timestamp") else None,
        seq=message.seq if message.HasField("seq") else None,
        metrics=metrics,
    )


SUPPORTED = frozenset(
    {*_SIGNED_BITS, *_UNSIGNED_BITS, DataType.FLOAT, DataType.DOUBLE, DataType.BOOLEAN, DataType.STRING,
     DataType.TEXT, DataType.UUID, DataType.DATETIME, DataType.BYTES}
)  # fmt: skip


def is_supported(datatype: int | None) -> bool:
    """Whether metrics of this datatype decode to a value (the scalar types)."""
    return datatype in SUPPORTED


def type_name(datatype: int | None) -> str:
    if datatype is None:
        return "no datatype"
    return TYPE_NAMES.get(datatype, f"datatype {datatype}")


def value_of(metric: Metric, datatype: int | None) -> Value:
    """The metric's value as the gateway uses it; raises ValueProblem with the reason."""
    if datatype is None:
        raise ValueProblem("the metric has no datatype (neither in the birth nor in this message)")
    if metric.is_null:
        raise ValueProblem("the edge node sent a null value")
    raw = metric.raw
    which = raw.WhichOneof("value")
    try:
        kind = DataType(datatype)
    except ValueError:
        raise ValueProblem(f"unknown datatype {datatype}") from None
    if kind in _SIGNED_BITS or kind in _UNSIGNED_BITS:
        if which == "int_value":
            number = int(raw.int_value)
        elif which == "long_value":
            number = int(raw.long_value)
        else:
            raise ValueProblem(f"{type_name(datatype)} metric without an integer value ({which or 'empty'})")
        return _integer(number, kind, wide=which == "long_value")
    if kind in (DataType.FLOAT, DataType.DOUBLE):
        if which in ("float_value", "double_value"):
            return float(getattr(raw, which))
        raise ValueProblem(f"{type_name(datatype)} metric without a float value ({which or 'empty'})")
    if kind is DataType.BOOLEAN:
        if which == "boolean_value":
            return bool(raw.boolean_value)
        raise ValueProblem(f"Boolean metric without a boolean value ({which or 'empty'})")
    if kind in (DataType.STRING, DataType.TEXT, DataType.UUID):
        if which == "string_value":
            return str(raw.string_value)
        raise ValueProblem(f"{type_name(datatype)} metric without a string value ({which or 'empty'})")
    if kind is DataType.DATETIME:
        if which in ("long_value", "int_value"):
            return int(getattr(raw, which)) / 1000.0
        raise ValueProblem(f"DateTime metric without a long value ({which or 'empty'})")
    if kind is DataType.BYTES:
        if which == "bytes_value":
            return bytes(raw.bytes_value).hex()
        raise ValueProblem(f"Bytes metric without a bytes value ({which or 'empty'})")
    if kind in _UNSUPPORTED:
        raise ValueProblem(f"{_UNSUPPORTED[kind]} metrics are not supported: map a scalar metric instead")
    if kind is DataType.UNKNOWN:
        raise ValueProblem("the metric's datatype is Unknown (0)")
    raise ValueProblem(
        f"{type_name(datatype)} (array) metrics are not supported: map a scalar metric instead"
    )


def _integer(number: int, kind: DataType, *, wide: bool) -> int:
    if kind in _UNSIGNED_BITS:
        bits = _UNSIGNED_BITS[kind]
        if number >= 1 << bits:
            raise ValueProblem(f"{number} is out of range for {type_name(kind)}")
        return number
    bits = _SIGNED_BITS[kind]
    container = 64 if wide else 32
    if kind is DataType.INT64:
        container = 64
    unsigned = number & ((1 << container) - 1)
    signed = unsigned - (1 << container) if unsigned >= 1 << (container - 1) else unsigned
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if low <= signed <= high:
        return signed
    if unsigned < 1 << bits:  # sent in its own width only: 0xF4 as an Int8 is -12
        return unsigned - (1 << bits) if unsigned > high else unsigned
    raise ValueProblem(f"{signed} is out of range for {type_name(kind)}")


# ---------------------------------------------------------------- encoding (our NCMD; tests; the bench)

ScalarValue = bool | int | float | str | bytes | None


def encode(
    metrics: Iterable[tuple[str | None, int | None, int, ScalarValue]],
    *,
    seq: int | None = None,
    timestamp_ms: int | None = None,
    historical: Iterable[str | int] = (),
) -> bytes:
    """A payload from (name, alias, datatype, value) tuples; a value of None encodes is_null. Signed
    integers are written as two's complement in their field, as the specification says."""
    history = set(historical)
    message = pb.Payload()
    if timestamp_ms is not None:
        message.timestamp = timestamp_ms
    if seq is not None:
        message.seq = seq
    for name, alias, datatype, value in metrics:
        m = message.metrics.add()
        if name is not None:
            m.name = name
        if alias is not None:
            m.alias = alias
        m.datatype = datatype
        if timestamp_ms is not None:
            m.timestamp = timestamp_ms
        if name in history or alias in history:
            m.is_historical = True
        _set_value(m, DataType(datatype), value)
    return bytes(message.SerializeToString())


def _set_value(m: Any, kind: DataType, value: ScalarValue) -> None:
    if value is None:
        m.is_null = True
    elif kind in (DataType.INT8, DataType.INT16, DataType.INT32, DataType.UINT8, DataType.UINT16):
        m.int_value = int(value) & 0xFFFFFFFF  # type: ignore[arg-type]
    elif kind is DataType.UINT32:
        m.int_value = int(value)  # type: ignore[arg-type]
    elif kind in (DataType.INT64, DataType.UINT64, DataType.DATETIME):
        m.long_value = int(value) & 0xFFFFFFFFFFFFFFFF  # type: ignore[arg-type]
    elif kind is DataType.FLOAT:
        m.float_value = float(value)  # type: ignore[arg-type]
    elif kind is DataType.DOUBLE:
        m.double_value = float(value)  # type: ignore[arg-type]
    elif kind is DataType.BOOLEAN:
        m.boolean_value = bool(value)
    elif kind in (DataType.STRING, DataType.TEXT, DataType.UUID):
        m.string_value = str(value)
    elif isinstance(value, bytes):
        m.bytes_value = value
    else:
        raise TypeError(f"cannot encode {value!r} as {type_name(kind)}")


def rebirth_request(timestamp_ms: int) -> bytes:
    """The NCMD payload asking an edge node to publish its births again (Sparkplug 3.0, 6.4.x)."""
    return encode([(REBIRTH_METRIC, None, DataType.BOOLEAN, True)], timestamp_ms=timestamp_ms)
