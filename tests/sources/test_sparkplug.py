"""Sparkplug B host application: the message logic driven directly, then against a real mosquitto broker with
an edge node of ours (aiomqtt + the codec). The independent edge node (Eclipse Tahu) is in
tests/interop/test_sparkplug_tahu.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli import main as cli_main
from gateway.config import load_config
from gateway.core.clock import ManualClock
from gateway.core.samples import LinkState, Quality
from gateway.sources import sparkplug_codec as codec
from gateway.sources.registry import build_source
from gateway.sources.schema import SparkplugSource
from gateway.sources.sparkplug import SparkplugConnector, parse_topic
from gateway.sources.sparkplug_browse import list_sparkplug, signals_block
from gateway.sources.sparkplug_codec import DataType as T
from tests.engine.helpers import T0, engine
from tests.sources.conftest import SAFETY_TIMEOUT_S, Collector, running, until
from tests.sources.test_mqtt import Broker, broker

__all__ = ["broker"]  # the shared mosquitto fixture, imported from test_mqtt

FAST = {"reconnect_delay": 0.05, "reconnect_max_delay": 0.3, "keepalive": 5, "timeout": 3}
G = "Plant1"
SIGNALS = {
    "strokes": {"node": "Press1", "device": "Stamper", "metric": "Counters/Strokes"},
    "temp": {"node": "Press1", "metric": "Temperature"},
    "offset": {"node": "Press1", "metric": "Offset"},
}
NODE_BIRTH = [
    ("Temperature", 1, T.DOUBLE, 21.5),
    ("Offset", 2, T.INT32, -12),
    ("bdSeq", 3, T.UINT64, 4),
    ("Node Control/Rebirth", 4, T.BOOLEAN, False),
]
DEVICE_BIRTH = [("Counters/Strokes", 10, T.UINT32, 1000), ("Mode", 11, T.STRING, "auto")]


def make(port: int = 1, *, clock: ManualClock | None = None, **options: Any) -> SparkplugConnector:
    config = SparkplugSource.model_validate(
        {
            "protocol": "sparkplug",
            "url": f"mqtt://127.0.0.1:{port}",
            "group": G,
            "host_id": "mw-test",
            "signals": SIGNALS,
            **FAST,
            **options,
        }
    )
    built = build_source("line3", config, clock=clock, gateway_id="test")
    assert isinstance(built, SparkplugConnector)
    return built


def values(c: Collector, signal: str) -> list[Any]:
    return [s.value if s.quality is Quality.GOOD else "BAD" for s in c.of(signal)]


async def born(src: SparkplugConnector, seq0: int = 0, bdseq: int = 4) -> None:
    birth = [(n, a, t, bdseq if n == "bdSeq" else v) for n, a, t, v in NODE_BIRTH]
    await src.on_message(f"spBv1.0/{G}/NBIRTH/Press1", codec.encode(birth, seq=seq0, timestamp_ms=1000))
    await src.on_message(
        f"spBv1.0/{G}/DBIRTH/Press1/Stamper", codec.encode(DEVICE_BIRTH, seq=seq0 + 1, timestamp_ms=1000)
    )


# ---------------------------------------------------------------- the message logic


def test_topics() -> None:
    assert parse_topic("spBv1.0/Plant1/NDATA/Press1", G) == ("NDATA", "Press1", None)
    assert parse_topic("spBv1.0/Plant1/DDATA/Press1/Stamper", G) == ("DDATA", "Press1", "Stamper")
    assert parse_topic("spBv1.0/Other/NDATA/Press1", G) is None
    assert parse_topic("spBv1.0/Plant1/NDATA/Press1/extra", G) is None
    assert parse_topic("spBv1.0/Plant1/STATE", G) is None


async def test_birth_gives_initial_values_and_data_decodes_by_alias(collector: Collector) -> None:
    src = make()
    src.bind(collector)
    await born(src)
    assert values(collector, "line3.temp") == [21.5]
    assert values(collector, "line3.offset") == [-12]  # not 4294967284
    assert values(collector, "line3.strokes") == [1000]
    assert collector.of("line3.temp")[0].ts == 1.0  # the metric's own timestamp, ms -> s
    await src.on_message(
        f"spBv1.0/{G}/DDATA/Press1/Stamper", codec.encode([(None, 10, T.UINT32, 1001)], seq=2)
    )
    await src.on_message(f"spBv1.0/{G}/NDATA/Press1", codec.encode([(None, 2, T.INT32, -13)], seq=3))
    assert values(collector, "line3.strokes") == [1000, 1001]
    assert values(collector, "line3.offset") == [-12, -13]
    assert src.rebirth_requests == 0


async def test_ndeath_with_matching_bdseq_marks_node_and_devices_bad_once(collector: Collector) -> None:
    src = make()
    src.bind(collector)
    await born(src, bdseq=4)
    stale = codec.encode([("bdSeq", None, T.UINT64, 3)], timestamp_ms=2000)
    await src.on_message(f"spBv1.0/{G}/NDEATH/Press1", stale)  # an older session's will: ignored
    assert all(s.quality is Quality.GOOD for s in collector.samples)
    death = codec.encode([("bdSeq", None, T.UINT64, 4)], timestamp_ms=2000)
    await src.on_message(f"spBv1.0/{G}/NDEATH/Press1", death)
    await src.on_message(f"spBv1.0/{G}/NDEATH/Press1", death)  # delivered twice: no second BAD sample
    for signal in ("line3.temp", "line3.offset", "line3.strokes"):
        assert values(collector, signal)[1:] == ["BAD"], signal
        assert "offline (NDEATH)" in collector.of(signal)[-1].reason
    await born(src, bdseq=5)  # a new session: good again
    assert values(collector, "line3.temp") == [21.5, "BAD", 21.5]
    assert values(collector, "line3.strokes") == [1000, "BAD", 1000]


async def test_a_nan_is_bad_and_the_death_after_it_adds_no_second_bad_sample(collector: Collector) -> None:
    """A Double NaN is a BAD sample (the Sink's check); the signal then counts as BAD like any other, so the
    node's death marks only the signals that were still good."""
    src = make()
    src.bind(collector)
    await born(src, bdseq=4)
    await src.on_message(f"spBv1.0/{G}/NDATA/Press1", codec.encode([(None, 1, T.DOUBLE, math.nan)], seq=2))
    assert values(collector, "line3.temp") == [21.5, "BAD"]
    assert collector.of("line3.temp")[-1].reason == "value is NaN"
    death = codec.encode([("bdSeq", None, T.UINT64, 4)], timestamp_ms=2000)
    await src.on_message(f"spBv1.0/{G}/NDEATH/Press1", death)
    assert values(collector, "line3.temp") == [21.5, "BAD"]  # already BAD: no second sample
    assert values(collector, "line3.offset") == [-12, "BAD"]
    await born(src, bdseq=5)
    assert values(collector, "line3.temp") == [21.5, "BAD", 21.5]


async def test_ddeath_marks_only_that_device_bad(collector: Collector) -> None:
    src = make()
    src.bind(collector)
    await born(src)
    await src.on_message(f"spBv1.0/{G}/DDEATH/Press1/Stamper", codec.encode([], seq=2))
    assert values(collector, "line3.strokes") == [1000, "BAD"]
    assert values(collector, "line3.temp") == [21.5]
    await src.on_message(f"spBv1.0/{G}/DBIRTH/Press1/Stamper", codec.encode(DEVICE_BIRTH, seq=3))
    assert values(collector, "line3.strokes") == [1000, "BAD", 1000]


async def test_historical_metrics_never_reach_the_rules(collector: Collector) -> None:
    src = make()
    src.bind(collector)
    await born(src)
    data = codec.encode([(None, 1, T.DOUBLE, 99.0), (None, 2, T.INT32, 5)], seq=2, historical=[1])
    await src.on_message(f"spBv1.0/{G}/NDATA/Press1", data)
    assert values(collector, "line3.temp") == [21.5]
    assert values(collector, "line3.offset") == [-12, 5]
    assert src.historical_dropped == 1


async def test_malformed_payload_is_bad_with_one_warning_per_node(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    src = make()
    src.bind(collector)
    await born(src)
    with caplog.at_level(logging.WARNING, logger="gateway.sources.sparkplug"):
        for seq in (2, 3, 4):
            good = codec.encode([(None, 1, T.DOUBLE, 22.0)], seq=seq)
            await src.on_message(f"spBv1.0/{G}/NDATA/Press1", good[:-1])  # cut inside seq
    warnings = [r for r in caplog.records if "Press1" in r.getMessage() and "payload" in r.getMessage()]
    assert len(warnings) == 1
    assert values(collector, "line3.temp") == [21.5, "BAD"]
    assert values(collector, "line3.strokes") == [1000]  # the device's own payloads were fine
    await src.on_message(f"spBv1.0/{G}/NDATA/Press1", codec.encode([(None, 1, T.DOUBLE, 23.0)], seq=5))
    assert values(collector, "line3.temp") == [21.5, "BAD", 23.0]


async def test_unsupported_and_missing_metrics_say_why(collector: Collector) -> None:
    src = make()
    src.bind(collector)
    birth = [("Temperature", 1, T.INT32_ARRAY, b"\x00\x00\x00\x00"), ("bdSeq", 3, T.UINT64, 0)]
    await src.on_message(f"spBv1.0/{G}/NBIRTH/Press1", codec.encode(birth, seq=0))
    temp = collector.last("line3.temp")
    assert temp is not None and temp.quality is Quality.BAD
    assert "Int32Array (array) metrics are not supported" in temp.reason
    offset = collector.last("line3.offset")
    assert offset is not None and "no metric 'Offset' in the birth of edge node Press1" in offset.reason


async def test_data_before_birth_produces_nothing(collector: Collector) -> None:
    src = make()
    src.bind(collector)
    await src.on_message(f"spBv1.0/{G}/NDATA/Press1", codec.encode([(None, 1, T.DOUBLE, 22.0)], seq=9))
    await src.on_message(f"spBv1.0/{G}/DDATA/Press1/Stamper", codec.encode([(None, 10, T.UINT32, 5)], seq=10))
    assert collector.samples == []


async def test_fuzzed_messages_never_raise(collector: Collector) -> None:
    src = make()
    src.bind(collector)
    await born(src)
    for i, data in enumerate(
        [b"", b"\x00", b"\xff" * 20, b"\x12\x02\x10\x01", codec.encode([(None, 99, 3, 1)])]
    ):
        await src.on_message(f"spBv1.0/{G}/NDATA/Press1", data)
        await src.on_message(f"spBv1.0/{G}/DBIRTH/Press1/Stamper", data)
        await src.on_message(f"spBv1.0/{G}/NDEATH/Press1", data)
        await src.on_message(f"spBv1.0/{G}/NBIRTH/Press{i}", data)


# ---------------------------------------------------------------- against mosquitto


class Edge:
    """A minimal edge node of ours: publishes what a test says and records the NCMDs it receives."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.commands: list[codec.Payload] = []
        self.got_command = asyncio.Event()

    async def publish(self, kind: str, payload: bytes, device: str | None = None) -> None:
        topic = f"spBv1.0/{G}/{kind}/Press1" + (f"/{device}" if device else "")
        await self.client.publish(topic, payload, qos=1)

    async def listen(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            self.commands.append(codec.decode(message.payload))
            self.got_command.set()


@contextlib.asynccontextmanager
async def edge_node(port: int) -> AsyncIterator[Edge]:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(f"spBv1.0/{G}/NCMD/Press1", qos=1)
        edge = Edge(client)
        task = asyncio.create_task(edge.listen())
        try:
            yield edge
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def retained(port: int, topic: str) -> bytes:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(SAFETY_TIMEOUT_S):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                return message.payload
    raise AssertionError("no retained message")


async def test_state_is_retained_online_then_offline(broker: Broker, collector: Collector) -> None:
    src = make(broker.port)
    async with running(src, collector):
        await until(lambda: src.stats.link is LinkState.UP, "connected")
        online = json.loads(await retained(broker.port, "spBv1.0/STATE/mw-test"))
        assert online["online"] is True and isinstance(online["timestamp"], int)
    offline = json.loads(await retained(broker.port, "spBv1.0/STATE/mw-test"))
    assert offline == {"online": False, "timestamp": online["timestamp"]}


async def take_over(port: int, client_id: str) -> None:
    """Connect with the given client id over a bare socket (MQTT 3.1.1 CONNECT), read the CONNACK, close: the
    broker ends the older connection with that id without a DISCONNECT, so it publishes that one's will."""
    ident = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(ident).to_bytes(2, "big") + ident
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(bytes([0x10, len(body)]) + body)
    await writer.drain()
    assert (await asyncio.wait_for(reader.readexactly(4), SAFETY_TIMEOUT_S))[:2] == b"\x20\x02"  # CONNACK
    writer.close()
    await writer.wait_closed()


async def test_will_says_offline_when_we_vanish(broker: Broker, collector: Collector) -> None:
    """The will, not our clean shutdown, carries the offline STATE: a second client with our id makes the
    broker drop our connection without a DISCONNECT and publish the will; then we come back online."""
    states: list[dict[str, Any]] = []
    src = make(broker.port)
    async with aiomqtt.Client("127.0.0.1", broker.port) as watcher:
        await watcher.subscribe("spBv1.0/STATE/mw-test", qos=1)

        async def watch() -> None:
            async for message in watcher.messages:
                assert isinstance(message.payload, bytes)
                states.append(json.loads(message.payload))

        watching = asyncio.create_task(watch())
        async with running(src, collector):
            await until(lambda: len(states) == 1, "online")
            await take_over(broker.port, src.client_id)
            await until(lambda: len(states) >= 3, "will, then online again")
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    first = states[0]["timestamp"]
    assert states[:2] == [{"online": True, "timestamp": first}, {"online": False, "timestamp": first}]
    assert states[2]["online"] is True


async def test_against_broker_birth_data_gap_rebirth_death(broker: Broker, collector: Collector) -> None:
    clock = ManualClock()
    src = make(broker.port, clock=clock, rebirth=True, rebirth_interval=60)
    async with running(src, collector), edge_node(broker.port) as edge:
        await until(lambda: src.stats.link is LinkState.UP, "connected")
        await edge.publish("NBIRTH", codec.encode(NODE_BIRTH, seq=0, timestamp_ms=1000))
        await edge.publish("DBIRTH", codec.encode(DEVICE_BIRTH, seq=1), "Stamper")
        await collector.wait_for(lambda: values(collector, "line3.strokes") == [1000], "births")
        await edge.publish("DDATA", codec.encode([(None, 10, T.UINT32, 1001)], seq=2), "Stamper")
        await collector.wait_for(lambda: values(collector, "line3.strokes")[-1] == 1001, "data by alias")
        assert edge.commands == []

        await edge.publish("DDATA", codec.encode([(None, 10, T.UINT32, 1005)], seq=6), "Stamper")  # gap
        await asyncio.wait_for(edge.got_command.wait(), SAFETY_TIMEOUT_S)
        (request,) = edge.commands
        assert [(m.name, codec.value_of(m, m.datatype)) for m in request.metrics] == [
            ("Node Control/Rebirth", True)
        ]
        await collector.wait_for(lambda: values(collector, "line3.strokes")[-1] == 1005, "value after gap")
        # a second gap within rebirth_interval: no second request
        await edge.publish("DDATA", codec.encode([(None, 10, T.UINT32, 1006)], seq=9), "Stamper")
        await edge.publish("DDATA", codec.encode([(None, 99, T.UINT32, 1)], seq=10), "Stamper")  # unknown
        await collector.wait_for(lambda: values(collector, "line3.strokes")[-1] == 1006, "value")
        await edge.publish("NDATA", codec.encode([(None, 1, T.DOUBLE, 30.0)], seq=11))
        await collector.wait_for(lambda: values(collector, "line3.temp")[-1] == 30.0, "ordered marker")
        assert src.rebirth_requests == 1
        clock.advance(61)
        await edge.publish("NDATA", codec.encode([(None, 1, T.DOUBLE, 31.0)], seq=20))
        await until(lambda: src.rebirth_requests == 2, "second rebirth request after the interval")

        await edge.publish("NDEATH", codec.encode([("bdSeq", None, T.UINT64, 4)]))
        await collector.wait_for(lambda: values(collector, "line3.strokes")[-1] == "BAD", "death")
        assert values(collector, "line3.temp")[-1] == "BAD"
        await edge.publish("NBIRTH", codec.encode(NODE_BIRTH, seq=0))
        await edge.publish("DBIRTH", codec.encode(DEVICE_BIRTH, seq=1), "Stamper")
        await collector.wait_for(
            lambda: values(collector, "line3.strokes")[-1] == 1000, "rebirth: good again"
        )


async def test_our_link_drop_marks_everything_bad(broker: Broker, collector: Collector) -> None:
    src = make(broker.port)
    async with running(src, collector):
        await until(lambda: src.stats.link is LinkState.UP, "connected")
        async with edge_node(broker.port) as edge:
            await edge.publish("NBIRTH", codec.encode(NODE_BIRTH, seq=0))
            await edge.publish("DBIRTH", codec.encode(DEVICE_BIRTH, seq=1), "Stamper")
            await collector.wait_for(lambda: values(collector, "line3.strokes") == [1000], "births")
        await broker.kill()
        await until(lambda: src.stats.link is LinkState.DOWN, "link down")
        for signal in ("line3.temp", "line3.offset", "line3.strokes"):
            assert values(collector, signal)[-1] == "BAD"
            assert collector.of(signal)[-1].reason.startswith("link down")
        await broker.start()
        await until(lambda: src.stats.link is LinkState.UP, "reconnected")
        async with edge_node(broker.port) as edge:
            await edge.publish("NBIRTH", codec.encode(NODE_BIRTH, seq=0))
            await collector.wait_for(lambda: values(collector, "line3.temp")[-1] == 21.5, "good after birth")


# ---------------------------------------------------------------- configuration


def test_check_refuses_an_empty_host_id(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "gateway: {id: t, state_dir: ./state, rules: rules/}\n"
        "cmms: {kind: dry_run}\n"
        "sources:\n"
        "  line3:\n"
        "    protocol: sparkplug\n"
        "    url: mqtt://127.0.0.1:1883\n"
        "    group: Plant1\n"
        '    host_id: ""\n'
        "    signals:\n"
        "      temp: {node: Press1, metric: Temperature}\n"
    )
    (tmp_path / "rules").mkdir()
    with pytest.raises(Exception) as info:
        load_config(path)
    text = str(info.value)
    assert f"{path}:8:" in text
    assert "host_id must name this gateway's own Sparkplug host application" in text


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"group": "Plant/1"}, "one MQTT topic level"),
        ({"host_id": "a+b"}, "one MQTT topic level"),
        ({"url": "tcp://x"}, "starts with mqtt://"),
        ({"signals": {"t": {"node": "N", "metric": "M", "topic": "x"}}}, "Extra inputs"),
        ({"signals": {"t": {"node": "N#", "metric": "M"}}}, "one MQTT topic level"),
    ],
)
def test_config_errors(options: dict[str, Any], words: str) -> None:
    base = {"protocol": "sparkplug", "url": "mqtt://h:1", "group": "G", "host_id": "h", "signals": {}}
    with pytest.raises(ValueError, match=words):
        SparkplugSource.model_validate({**base, **options})


# ---------------------------------------------------------------- discovery


async def test_list_sparkplug_and_signals_block(broker: Broker) -> None:

    async def edge_side() -> None:
        async with edge_node(broker.port) as edge:
            # heard without a birth, until the listing (subscribed by then) asks for a rebirth
            for _ in range(int(SAFETY_TIMEOUT_S / 0.05)):
                await edge.publish("NDATA", codec.encode([(None, 1, T.DOUBLE, 1.0)], seq=5))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(edge.got_command.wait(), 0.05)
                    break
            birth = [*NODE_BIRTH, ("Rows", 5, T.DATASET, None)]
            await edge.publish("NBIRTH", codec.encode(birth, seq=0))
            await edge.publish("DBIRTH", codec.encode(DEVICE_BIRTH, seq=1), "Stamper")

    listing_task = asyncio.create_task(list_sparkplug(f"mqtt://127.0.0.1:{broker.port}", G, 3, rebirth=True))
    await edge_side()
    listing = await listing_task
    scopes = {k: sorted(v.metrics) for k, v in listing.scopes.items()}
    assert scopes == {
        ("Press1", None): ["Offset", "Rows", "Temperature"],  # bdSeq and Node Control/* left out
        ("Press1", "Stamper"): ["Counters/Strokes", "Mode"],
    }
    yaml_text = signals_block(listing, source="line3", url=f"mqtt://127.0.0.1:{broker.port}")
    assert "    press1_temperature: {node: Press1, metric: Temperature}  # Double\n" in yaml_text
    assert (
        "    stamper_counters_strokes: {node: Press1, device: Stamper, metric: Counters/Strokes}" in yaml_text
    )
    assert "    # Rows: DataSet is not supported\n" in yaml_text
    # the block is valid configuration once host_id is filled in
    entry = yaml.safe_load(yaml_text.replace("CHANGE-ME", "mw-test"))["line3"]
    config = SparkplugSource.model_validate(entry)
    assert set(config.signals) == {
        "press1_offset",
        "press1_temperature",
        "stamper_counters_strokes",
        "stamper_mode",
    }


async def test_death_and_rebirth_fire_no_task(tmp_path: Path, collector: Collector) -> None:
    """Through the real engine: running going false fires once; a death (BAD, no value) and the rebirth after
    it fire nothing."""
    eng = engine(
        tmp_path,
        """
        - id: press-stopped
          when: {signal: line3.running, equals: false}
          task: {description: "stopped"}
        """,
    )
    src = make(signals={"running": {"node": "Press1", "metric": "Running"}})
    src.bind(collector)
    topic = f"spBv1.0/{G}/NBIRTH/Press1"

    async def birth(t_ms: int, seq: int = 0) -> None:
        metrics = [("Running", 7, T.BOOLEAN, True), ("bdSeq", 3, T.UINT64, 4)]
        await src.on_message(topic, codec.encode(metrics, seq=seq, timestamp_ms=t_ms))

    t0 = int(T0 * 1000)
    await birth(t0)
    data = [(False, 1), (True, 2)]
    for value, seq in data:
        message = codec.encode([(None, 7, T.BOOLEAN, value)], seq=seq, timestamp_ms=t0 + 60_000 * seq)
        await src.on_message(f"spBv1.0/{G}/NDATA/Press1", message)
    death = codec.encode([("bdSeq", None, T.UINT64, 4)], timestamp_ms=t0 + 180_000)
    await src.on_message(f"spBv1.0/{G}/NDEATH/Press1", death)
    await birth(t0 + 240_000)
    firings = []
    for sample in collector.of("line3.running"):
        firings += eng.process(sample, sample.ts)
    assert [(s.value, s.quality) for s in collector.of("line3.running")] == [
        (True, Quality.GOOD),
        (False, Quality.GOOD),
        (True, Quality.GOOD),
        (None, Quality.BAD),
        (True, Quality.GOOD),
    ]
    assert len(firings) == 1  # the real stop; the death and the rebirth add nothing


KINDS = [
    "NBIRTH",
    "NDATA",
    "NDEATH",
    "DBIRTH/Press1/Stamper",
    "DDATA/Press1/Stamper",
    "DDEATH/Press1/Stamper",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(st.tuples(st.sampled_from(KINDS), st.binary(max_size=80)), max_size=12))
async def test_fuzzed_message_sequences_never_raise(messages: list[tuple[str, bytes]]) -> None:
    """Any sequence of births, data and deaths with arbitrary bytes, after a real birth: no exception, and
    every sample is either GOOD with a value or BAD with a reason."""
    collector = Collector()
    src = make()
    src.bind(collector)
    await born(src)
    for kind, data in messages:
        topic = f"spBv1.0/{G}/{kind}" if "/" in kind else f"spBv1.0/{G}/{kind}/Press1"
        await src.on_message(topic, data)
    for sample in collector.samples:
        assert (sample.quality is Quality.GOOD and sample.value is not None) or (
            sample.quality is Quality.BAD and sample.reason
        )


async def test_cli_browse_prints_a_source_entry(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"mqtt://127.0.0.1:{broker.port}"
    args = ["browse", url, "--sparkplug", G, "--seconds", "1.5", "--yaml", "line3"]
    browsing = asyncio.create_task(asyncio.to_thread(cli_main, args))
    async with edge_node(broker.port) as edge:
        while not browsing.done():  # births are not retained: publish them while it listens
            await edge.publish("NBIRTH", codec.encode(NODE_BIRTH, seq=0))
            await asyncio.sleep(0.05)
    assert await browsing == 0
    out = capsys.readouterr().out
    assert out.startswith("line3:\n  protocol: sparkplug\n")
    assert "    press1_offset: {node: Press1, metric: Offset}  # Int32\n" in out
    # nothing heard: exit 1 and says so
    assert await asyncio.to_thread(cli_main, ["browse", url, "--sparkplug", "Empty", "--seconds", "0.2"]) == 1
    assert "no edge node of group Empty was heard in 0.2s" in capsys.readouterr().out


async def test_a_second_host_with_our_id_is_an_error(
    broker: Broker, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port) as other:  # a stale online STATE, retained
        await other.publish("spBv1.0/STATE/mw-test", b'{"online":true,"timestamp":1}', qos=1, retain=True)
    src = make(broker.port)
    with caplog.at_level(logging.ERROR, logger="gateway.sources.sparkplug"):
        async with running(src, collector):
            await until(lambda: src.stats.link is LinkState.UP and src._state_echoed, "online")
            assert not [r for r in caplog.records if "another host application" in r.getMessage()]
            async with aiomqtt.Client("127.0.0.1", broker.port) as other:
                await other.publish(
                    "spBv1.0/STATE/mw-test", b'{"online":true,"timestamp":2}', qos=1, retain=True
                )
            await until(
                lambda: any("another host application" in r.getMessage() for r in caplog.records), "error"
            )


async def test_an_absurdly_nested_state_on_our_topic_is_ignored(
    broker: Broker, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: json.loads raised RecursionError on 100,000 nested arrays and it escaped the message loop."""
    src = make(broker.port)
    with caplog.at_level(logging.ERROR, logger="gateway.sources.sparkplug"):
        async with running(src, collector):
            await until(lambda: src.stats.link is LinkState.UP and src._state_echoed, "online")
            async with aiomqtt.Client("127.0.0.1", broker.port) as other:
                await other.publish("spBv1.0/STATE/mw-test", b"[" * 100_000 + b"]" * 100_000, qos=1)
                await other.publish("spBv1.0/STATE/mw-test", b'{"online":true,"timestamp":2}', qos=1)
            await until(
                lambda: any("another host application" in r.getMessage() for r in caplog.records), "error"
            )
            assert src.stats.link is LinkState.UP and src.stats.reconnects == 0
