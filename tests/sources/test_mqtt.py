"""MQTT source against a real mosquitto broker started by the tests on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.config import load_config
from gateway.core.samples import LinkState, Quality
from gateway.sources.mqtt import MqttConnector, match_topic, signal_name
from gateway.sources.registry import build_source
from gateway.sources.schema import MqttSource
from tests.sources.conftest import Collector, running

FAST = {"reconnect_delay": 0.05, "reconnect_max_delay": 0.3, "keepalive": 5, "timeout": 3}
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Broker:
    """A mosquitto process on a fixed port that tests can kill and start again."""

    def __init__(self, port: int, config: Path) -> None:
        self.port = port
        self.config = config
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            MOSQUITTO,
            "-c",
            str(self.config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(200):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            await asyncio.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        self.process = None


@pytest.fixture
async def broker(free_port: Callable[[], int], tmp_path: Path) -> AsyncIterator[Broker]:
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    b = Broker(port, config)
    await b.start()
    try:
        yield b
    finally:
        await b.kill()


def source(port: int, signals: dict[str, Any], name: str = "oven", **options: Any) -> MqttConnector:
    config = MqttSource.model_validate(
        {"protocol": "mqtt", "url": f"mqtt://127.0.0.1:{port}", **FAST, **options, "signals": signals}
    )
    built = build_source(name, config, gateway_id="test")
    assert isinstance(built, MqttConnector)
    return built


@contextlib.asynccontextmanager
async def publisher(port: int) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-publisher") as client:
        yield client


async def wait_subscribed(src: MqttConnector) -> None:
    for _ in range(500):
        if src.stats.link is LinkState.UP:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the source never connected")


def test_topic_matching_and_placeholders() -> None:
    assert match_topic("plant/+/temp", "plant/line1/temp") == ["line1"]
    assert match_topic("plant/+/temp", "plant/line1/pressure") is None
    assert match_topic("plant/#", "plant/a/b/c") == ["a/b/c"]
    assert match_topic("plant/+/+/v", "plant/a/b/v") == ["a", "b"]
    assert match_topic("#", "$SYS/broker/uptime") is None
    assert signal_name("{1}_temp", ["line 1"]) == "line_1_temp"
    assert signal_name("{2}.{1}", ["a", "b/c"]) == "b.c.a"


def test_placeholders_are_checked_and_named_as_globs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="wildcard number 2"):
        MqttSource.model_validate({"protocol": "mqtt", "url": "mqtt://x", "signals": {"{2}_t": "a/+/t"}})
    with pytest.raises(ValueError, match="not a valid topic filter"):
        MqttSource.model_validate({"protocol": "mqtt", "url": "mqtt://x", "signals": {"t": "a/#/t"}})
    text = (
        "gateway: {id: g}\ncmms: {kind: dry_run}\n"
        "sources:\n  oven:\n    protocol: mqtt\n    url: mqtt://localhost\n"
        "    signals:\n      '{1}_temp': {topic: plant/+/temp}\n      door: plant/door\n"
    )
    config = load_config(tmp_path / "gateway.yaml", text=text, env={})
    assert config.signal_names() == {"oven.*_temp", "oven.door"}


async def test_plain_and_json_payloads_wildcards_and_payload_timestamps(
    broker: Broker, collector: Collector
) -> None:
    src = source(
        broker.port,
        {
            "temp": "plant/line1/oven/temp",
            "json_temp": {"topic": "plant/line1/oven/json", "json": "data.temp", "timestamp": "data.ts"},
            "first": {"topic": "plant/line1/oven/json", "json": "values.0", "timestamp": "at"},
            "{1}_temp": {"topic": "plant/+/temp"},
            "mode": {"topic": "plant/mode", "type": "string"},
            "running": {"topic": "plant/running", "type": "bool", "qos": 0},
        },
    )
    async with running(src, collector), publisher(broker.port) as pub:
        await wait_subscribed(src)
        await pub.publish("plant/line1/oven/temp", "71.5", qos=1)
        await pub.publish(
            "plant/line1/oven/json",
            json.dumps(
                {"data": {"temp": 80, "ts": 1_767_225_600_000}, "values": [3.5], "at": "2026-01-01T00:00:01Z"}
            ),
            qos=1,
        )
        await pub.publish("plant/line1/temp", "60", qos=1)
        await pub.publish("plant/line2/temp", "61.25", qos=1)
        await pub.publish("plant/mode", "AUTO", qos=1)
        await pub.publish("plant/running", "true", qos=0)
        await collector.wait_for(lambda: len(collector.samples) >= 7, "seven samples")
    assert collector.good("oven.temp")[0].value == 71.5
    json_temp = collector.good("oven.json_temp")[0]
    assert json_temp.value == 80 and json_temp.ts == 1_767_225_600.0  # milliseconds in the payload
    first = collector.good("oven.first")[0]
    assert first.value == 3.5 and first.ts == 1_767_225_601.0
    assert collector.good("oven.line1_temp")[0].value == 60
    assert collector.good("oven.line2_temp")[0].value == 61.25
    assert collector.good("oven.mode")[0].value == "AUTO"
    assert collector.good("oven.running")[0].value is True
    assert src.signal_names() == [
        "oven.temp",
        "oven.json_temp",
        "oven.first",
        "oven.*_temp",
        "oven.mode",
        "oven.running",
    ]
    assert src.stats.reads == 6 and src.stats.errors == 0


async def test_garbage_payloads_are_bad_with_a_clear_log_line(
    broker: Broker, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.sources")
    src = source(broker.port, {"temp": "t/plain", "j": {"topic": "t/json", "json": "data.temp"}})
    async with running(src, collector), publisher(broker.port) as pub:
        await wait_subscribed(src)
        for payload in ("hot", "nan", "inf"):
            await pub.publish("t/plain", payload, qos=1)
        for payload in (
            "{not json",
            '{"data": {}}',
            '{"data": {"temp": "warm"}}',
            '{"data": {"temp": true}}',
        ):
            await pub.publish("t/json", payload, qos=1)
        await pub.publish("t/plain", b"\xff\xfe", qos=1)
        await pub.publish("t/plain", "42", qos=1)
        await pub.publish("t/json", '{"data": {"temp": 43}}', qos=1)
        await collector.wait_for(
            lambda: bool(collector.good("oven.temp")) and bool(collector.good("oven.j")), "good"
        )
    reasons = [s.reason for s in collector.samples if s.quality is Quality.BAD]
    assert reasons == [
        "expected a number, got 'hot' (topic t/plain)",
        "value is NaN",
        "value is infinite",
        "the payload is not JSON: '{not json' (topic t/json)",
        "no 'data.temp' in the payload (topic t/json)",
        "expected a number, got 'warm' (topic t/json)",
        "expected a number, got true (topic t/json)",
        "the payload is not UTF-8 text (topic t/plain)",
    ]
    assert collector.good("oven.temp")[0].value == 42 and collector.good("oven.j")[0].value == 43
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 8 and all("bad value" in w for w in warnings)
    assert src.stats.link is LinkState.UP and src.stats.errors == 8


async def test_broker_killed_and_restarted_the_source_reconnects_by_itself(
    broker: Broker, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.sources")
    src = source(broker.port, {"temp": "plant/temp"})
    async with running(src, collector):
        await wait_subscribed(src)
        async with publisher(broker.port) as pub:
            await pub.publish("plant/temp", "20", qos=1)
        await collector.wait_for(lambda: bool(collector.good("oven.temp")), "first value")
        await broker.kill()
        await collector.wait_for(
            lambda: (s := collector.last("oven.temp")) is not None and s.quality is Quality.BAD, "bad"
        )
        assert src.stats.link is LinkState.DOWN
        await broker.start()
        async with publisher(broker.port) as pub:
            await pub.publish(
                "plant/temp", "21", qos=1, retain=True
            )  # delivered whenever the source resubscribes
        await collector.wait_for(
            lambda: any(s.value == 21 for s in collector.good("oven.temp")), "value after restart"
        )
    assert "link down" in collector.of("oven.temp")[1].reason
    assert src.stats.reconnects == 1 and src.stats.link is LinkState.UP
    levels = [r.levelno for r in caplog.records if r.levelno >= logging.INFO]
    assert levels == [logging.ERROR, logging.INFO]


async def test_persistent_session_keeps_qos1_messages_sent_while_away(broker: Broker) -> None:
    first = Collector()
    src = source(broker.port, {"count": "line/count"}, client_id="gw-press-1")
    async with running(src, first):
        await wait_subscribed(src)
    # the gateway is stopped; the broker keeps its session and queues QoS 1 messages
    async with publisher(broker.port) as pub:
        for n in range(5):
            await pub.publish("line/count", str(n), qos=1)
    again = Collector()
    restarted = source(broker.port, {"count": "line/count"}, client_id="gw-press-1")
    async with running(restarted, again):
        await again.wait_for(lambda: len(again.good("oven.count")) == 5, "the five queued messages")
    assert [s.value for s in again.good("oven.count")] == [0, 1, 2, 3, 4]
    assert restarted.client_id == "gw-press-1"
    assert source(broker.port, {"x": "y"}).client_id == "mw-gateway-test-oven"
