"""Sparkplug B payload decoding: every scalar datatype, signed integers in unsigned fields, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sources import sparkplug_codec as codec
from gateway.sources.sparkplug_codec import DataType as T


def one(datatype: int, value: codec.ScalarValue) -> codec.Metric:
    return codec.decode(codec.encode([("m", 1, datatype, value)])).metrics[0]


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        (T.INT8, -12),
        (T.INT8, -128),
        (T.INT8, 127),
        (T.INT16, -12),
        (T.INT16, -32768),
        (T.INT32, -12),
        (T.INT32, -(2**31)),
        (T.INT32, 2**31 - 1),
        (T.INT64, -12),
        (T.INT64, -(2**63)),
        (T.UINT8, 255),
        (T.UINT16, 65535),
        (T.UINT32, 4294967295),
        (T.UINT64, 2**64 - 1),
        (T.BOOLEAN, True),
        (T.BOOLEAN, False),
        (T.STRING, "Running"),
        (T.TEXT, "a longer text"),
        (T.UUID, "1f0e4bb2-55a3-4f5e-9d1a-0e4b2f1c9a77"),
        (T.DOUBLE, -1.5e300),
    ],
)
def test_every_scalar_round_trips(datatype: int, value: codec.ScalarValue) -> None:
    assert codec.value_of(one(datatype, value), datatype) == value


def test_minus_twelve_is_not_4294967284() -> None:
    """benthos-umh PR #454: an Int32 of -12 travels as the uint32 4294967284."""
    metric = one(T.INT32, -12)
    assert metric.raw.int_value == 4294967284
    assert codec.value_of(metric, T.INT32) == -12


def test_narrow_signed_types_sent_in_their_own_width() -> None:
    """Some edge nodes write an Int8 of -12 as 0xF4 (244), not sign-extended to 32 bits."""
    metric = one(T.UINT32, 244)  # the same bytes as such an Int8
    assert codec.value_of(metric, T.INT8) == -12
    assert codec.value_of(one(T.UINT32, 0xFFF4), T.INT16) == -12


def test_integer_in_the_other_field_is_accepted() -> None:
    metric = one(T.INT64, -12)  # long_value = 2**64 - 12
    assert codec.value_of(metric, T.INT32) == -12
    assert codec.value_of(one(T.UINT32, 7), T.UINT64) == 7


def test_float_datetime_and_bytes() -> None:
    assert codec.value_of(one(T.FLOAT, 1.5), T.FLOAT) == 1.5
    assert codec.value_of(one(T.DATETIME, 1_700_000_000_123), T.DATETIME) == 1_700_000_000.123
    assert codec.value_of(one(T.BYTES, b"\x01\xff"), T.BYTES) == "01ff"


def test_out_of_range_is_a_problem() -> None:
    with pytest.raises(codec.ValueProblem, match="out of range for UInt8"):
        codec.value_of(one(T.UINT32, 256), T.UINT8)
    with pytest.raises(codec.ValueProblem, match="out of range for Int16"):
        codec.value_of(one(T.INT32, 70000), T.INT16)


@pytest.mark.parametrize(
    ("datatype", "words"),
    [
        (T.DATASET, "DataSet metrics are not supported"),
        (T.TEMPLATE, "Template metrics are not supported"),
        (T.FILE, "File metrics are not supported"),
        (T.INT32_ARRAY, "Int32Array \\(array\\) metrics are not supported"),
        (T.STRING_ARRAY, "StringArray \\(array\\) metrics are not supported"),
        (T.UNKNOWN, "Unknown"),
        (99, "unknown datatype 99"),
    ],
)
def test_unsupported_types_say_so(datatype: int, words: str) -> None:
    metric = one(T.BYTES, b"\x00")
    with pytest.raises(codec.ValueProblem, match=words):
        codec.value_of(metric, datatype)


def test_null_wrong_field_and_missing_datatype() -> None:
    with pytest.raises(codec.ValueProblem, match="null"):
        codec.value_of(one(T.INT32, None), T.INT32)
    with pytest.raises(codec.ValueProblem, match="without a boolean value"):
        codec.value_of(one(T.STRING, "x"), T.BOOLEAN)
    with pytest.raises(codec.ValueProblem, match="no datatype"):
        codec.value_of(one(T.STRING, "x"), None)


def test_payload_fields_and_historical_flag() -> None:
    data = codec.encode(
        [("a", 5, T.INT32, 1), ("b", 6, T.INT32, 2)], seq=7, timestamp_ms=1000, historical=["b"]
    )
    payload = codec.decode(data)
    assert (payload.seq, payload.timestamp_ms) == (7, 1000)
    assert [(m.name, m.alias, m.is_historical) for m in payload.metrics] == [("a", 5, False), ("b", 6, True)]


def test_rebirth_request_is_the_node_control_metric() -> None:
    payload = codec.decode(codec.rebirth_request(123))
    (metric,) = payload.metrics
    assert metric.name == "Node Control/Rebirth"
    assert codec.value_of(metric, metric.datatype) is True


@pytest.mark.parametrize("data", [b"\xff", b"\x12\x05\x0a\x03ab", b"\x0a", b"garbage that is not protobuf"])
def test_malformed_payloads_raise_payload_error(data: bytes) -> None:
    with pytest.raises(codec.PayloadError):
        codec.decode(data)


def test_truncated_birth_is_a_payload_error() -> None:
    data = codec.encode([("Temperature", 1, T.DOUBLE, 21.5)], seq=0, timestamp_ms=1)
    with pytest.raises(codec.PayloadError):
        codec.decode(data[:-3])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=40))
def test_fuzz_decoder_raises_only_payload_error(data: bytes, datatype: int) -> None:
    """Bytes from outside: decode() raises PayloadError or returns; value_of() raises ValueProblem or
    returns a usable value. Nothing else escapes."""
    try:
        payload = codec.decode(data)
    except codec.PayloadError:
        return
    for metric in payload.metrics:
        for kind in (metric.datatype, datatype):
            try:
                value = codec.value_of(metric, kind)
            except codec.ValueProblem:
                continue
            assert isinstance(value, bool | int | float | str)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(2**31), max_value=2**31 - 1), st.integers(min_value=0, max_value=60))
def test_fuzz_truncated_real_payloads(value: int, cut: int) -> None:
    data = codec.encode([("Counters/Strokes", 3, T.INT32, value), ("Mode", 4, T.STRING, "auto")], seq=1)
    try:
        payload = codec.decode(data[: max(len(data) - cut, 0)])
    except codec.PayloadError:
        return
    for metric in payload.metrics:
        try:
            codec.value_of(metric, metric.datatype)
        except codec.ValueProblem:
            pass
