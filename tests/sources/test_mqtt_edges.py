"""MQTT edges against a real mosquitto: retained values, refused subscriptions, payloads no parser expects,
timestamps in any unit, and two clients with one client id."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.core.samples import LinkState, Quality
from gateway.engine.engine import Engine
from gateway.engine.loader import load_rules
from gateway.sources.mqtt import MqttConnector
from tests.sources.conftest import SAFETY_TIMEOUT_S, Collector, running
from tests.sources.test_mqtt import Broker, broker, publisher, source, wait_subscribed

__all__ = ["broker"]

RULES = """\
- id: hot
  when: {signal: oven.temp, above: 90}
  task: {equipment: EQ-1, description: "hot {{ value }}", assignees: [1]}
- id: silent
  when: {stale: oven.temp, for: 10m}
  task: {equipment: EQ-1, description: "silent sensor", assignees: [1]}
"""


async def test_a_retained_value_is_the_last_known_value_not_a_new_observation(
    broker: Broker, collector: Collector, tmp_path: Path
) -> None:
    async with publisher(broker.port) as pub:  # a device published once, retained, and died
        await pub.publish("plant/oven/temp", b"95.5", qos=1, retain=True)
    src = source(broker.port, {"temp": "plant/oven/temp"})
    async with running(src, collector):
        await collector.wait_for(lambda: bool(collector.of("oven.temp")), "the retained value")
        async with publisher(broker.port) as pub:  # a live message is an observation
            await pub.publish("plant/oven/temp", b"96.5", qos=1)
            await collector.wait_for(lambda: len(collector.of("oven.temp")) == 2, "the live value")
    retained, live = collector.of("oven.temp")
    assert retained.quality is Quality.GOOD and retained.value == 95.5 and retained.retained
    assert live.value == 96.5 and not live.retained

    # what the engine makes of it: shown as the last value, no `above` firing at start-up, and the `stale`
    # rule fires when nothing new arrives (the device is dead, whatever the broker kept)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RULES)
    engine = Engine(load_rules(tmp_path / "rules"), gateway_id="g")
    t0 = 1_800_000_000.0
    assert engine.tick(t0) == []  # the engine starts
    assert engine.process(retained, t0) == []
    assert engine.last_values["oven.temp"].value == 95.5
    fired = engine.tick(t0 + 601)
    assert [f.rule_id for f in fired] == ["silent"]
    # after a reconnect the broker hands the retained value over again: still no proof of life
    assert engine.process(retained, t0 + 700) == [] and engine.tick(t0 + 1400) == []
    assert [f.rule_id for f in engine.process(live, t0 + 1500)] == ["hot"]


async def test_max_age_takes_a_recent_retained_value_and_refuses_an_old_one(
    broker: Broker, collector: Collector
) -> None:
    now = time.time()
    async with publisher(broker.port) as pub:
        await pub.publish("d/recent", json.dumps({"v": 1.5, "ts": now - 30}).encode(), retain=True, qos=1)
        await pub.publish("d/old", json.dumps({"v": 2.5, "ts": now - 7200}).encode(), retain=True, qos=1)
        await pub.publish("d/unknown", b"3.5", retain=True, qos=1)
    sig = {"json": "v", "timestamp": "ts"}
    src = source(
        broker.port,
        {"recent": {"topic": "d/recent", **sig}, "old": {"topic": "d/old", **sig}, "unknown": "d/unknown"},
        max_age="10m",
    )
    async with running(src, collector):
        await collector.wait_for(
            lambda: all(collector.of(f"oven.{n}") for n in ("recent", "old", "unknown")), "three values"
        )
    recent, old, unknown = (collector.of(f"oven.{n}")[0] for n in ("recent", "old", "unknown"))
    assert recent.quality is Quality.GOOD and recent.value == 1.5 and not recent.retained
    assert recent.ts == pytest.approx(now - 30)
    assert old.quality is Quality.BAD and "older than max_age 600s" in old.reason and "2.5" in old.reason
    assert unknown.quality is Quality.GOOD and unknown.retained  # no timestamp: age unknown


DYNSEC = sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so")) or sorted(
    Path("/usr/lib").glob("mosquitto_dynamic_security.so")
)


@pytest.fixture
async def acl_broker(free_port: Callable[[], int], tmp_path: Path) -> AsyncIterator[Broker]:
    """mosquitto refusing subscriptions outside plant/# with SUBACK 0x80 (its dynamic-security plugin, shipped
    with the Debian package; a plain acl_file only filters deliveries and grants every subscription)."""
    port = free_port()
    access = {
        "defaultACLAccess": {
            "publishClientSend": True,
            "publishClientReceive": True,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": [],
        "groups": [{"groupname": "anonymous", "roles": [{"rolename": "plant-reader"}]}],
        "roles": [
            {
                "rolename": "plant-reader",
                "acls": [{"acltype": "subscribePattern", "topic": "plant/#", "allow": True}],
            }
        ],
        "anonymousGroup": "anonymous",
    }
    (tmp_path / "dynsec.json").write_text(json.dumps(access))
    # as root, mosquitto drops to its own user, which cannot read pytest's private tmp_path: stay root
    stay = "user root\n" if os.geteuid() == 0 else ""
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{stay}"
        f"plugin {DYNSEC[0]}\nplugin_opt_config_file {tmp_path / 'dynsec.json'}\n"
    )
    b = Broker(port, config)
    await b.start()
    try:
        yield b
    finally:
        await b.kill()


async def test_a_refused_subscription_is_an_error_and_its_signals_are_bad(
    acl_broker: Broker, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.sources")
    src = source(acl_broker.port, {"temp": "plant/oven/temp", "secret": "office/payroll"})
    async with running(src, collector):
        await collector.wait_for(lambda: bool(collector.of("oven.secret")), "the refused signal marked")
        async with publisher(acl_broker.port) as pub:
            await pub.publish("plant/oven/temp", b"71", qos=1)
        await collector.wait_for(lambda: bool(collector.good("oven.temp")), "the allowed topic still works")
    secret = collector.of("oven.secret")[0]
    assert secret.quality is Quality.BAD and "refused the subscription to 'office/payroll'" in secret.reason
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "office/payroll" in errors[0] and "0x80" in errors[0], errors
    assert "ACL" in errors[0] and src.stats.errors >= 1


async def test_payloads_no_parser_expects_are_bad_samples_and_the_source_keeps_running(
    broker: Broker, collector: Collector
) -> None:
    signals = {
        "state": {"topic": "p/state", "type": "string"},
        "huge": {"topic": "p/huge", "json": "v"},
        "huge_text": "p/huge_text",
        "deep": {"topic": "p/deep", "json": "v"},
        "s": {"topic": "p/s", "json": "v", "timestamp": "t"},
        "ms": {"topic": "p/ms", "json": "v", "timestamp": "t"},
        "us": {"topic": "p/us", "json": "v", "timestamp": "t"},
        "ns": {"topic": "p/ns", "json": "v", "timestamp": "t"},
        "far": {"topic": "p/far", "json": "v", "timestamp": "t"},
    }
    src = source(broker.port, signals)
    t = 1_767_225_600  # 2026-01-01T00:00:00Z
    async with running(src, collector):
        await wait_subscribed(src)
        async with publisher(broker.port) as pub:
            await pub.publish("p/state", b'"running"', qos=1)
            await pub.publish("p/huge", b'{"v": ' + b"9" * 5000 + b"}", qos=1)
            await pub.publish("p/huge_text", b"9" * 5000, qos=1)
            await pub.publish("p/deep", b'{"v": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", qos=1)
            await pub.publish("p/s", json.dumps({"v": 1, "t": t}).encode(), qos=1)
            await pub.publish("p/ms", json.dumps({"v": 1, "t": t * 1000}).encode(), qos=1)
            await pub.publish("p/us", json.dumps({"v": 1, "t": t * 1_000_000}).encode(), qos=1)
            await pub.publish("p/ns", json.dumps({"v": 1, "t": t * 1_000_000_000 + 5}).encode(), qos=1)
            await pub.publish("p/far", json.dumps({"v": 1, "t": 1e30}).encode(), qos=1)
            await pub.publish("p/state", b"stopped", qos=1)
            await collector.wait_for(lambda: len(collector.of("oven.state")) == 2, "every message")
    assert [s.value for s in collector.of("oven.state")] == ["running", "stopped"]
    for name in ("huge", "huge_text", "deep", "far"):
        sample = collector.of(f"oven.{name}")[0]
        assert sample.quality is Quality.BAD, (name, sample)
    assert "digits" in collector.of("oven.huge")[0].reason
    assert "nested too deep" in collector.of("oven.deep")[0].reason
    for name in ("s", "ms", "us", "ns"):
        assert collector.of(f"oven.{name}")[0].ts == pytest.approx(t), name
    assert src.stats.link is LinkState.UP


async def test_two_clients_with_one_client_id_are_named_once_in_the_log(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.sources")
    first = source(broker.port, {"t": "x/t"}, name="a", client_id="shared-id")
    second = source(broker.port, {"t": "x/t"}, name="b", client_id="shared-id")

    def takeovers(src: MqttConnector) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.ERROR
            and "same client id" in r.getMessage()
            and src._what in r.getMessage()
        ]

    async with running(first, Collector()), running(second, Collector()):
        deadline = asyncio.get_running_loop().time() + SAFETY_TIMEOUT_S
        while (
            not (takeovers(first) or takeovers(second))
            or first.stats.reconnects + second.stats.reconnects < 8
        ):
            assert asyncio.get_running_loop().time() < deadline, "the takeover was never named"
            await asyncio.sleep(0.05)
    named = takeovers(first) + takeovers(second)
    assert all("'shared-id'" in line for line in named)
    assert len(takeovers(first)) <= 1 and len(takeovers(second)) <= 1, named
