"""OPC UA alarms and conditions against a real asyncua server raising and clearing AlarmConditionType
conditions: the signals, severity_min, ConditionRefresh after a reconnect, one task per activation."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.core.samples import Quality
from gateway.sources.opcua import OpcuaConnector
from gateway.sources.registry import build_source
from gateway.sources.schema import OpcuaSource
from tests.engine.helpers import T0, engine
from tests.sources.alarm_server import AlarmServer
from tests.sources.conftest import Collector, running

FAST = {"publishing_interval": 0.05, "reconnect_delay": 0.05, "reconnect_max_delay": 0.5, "timeout": 2}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def alarm_server() -> AsyncIterator[AlarmServer]:
    server = AlarmServer(_port())
    await server.start()
    try:
        yield server
    finally:
        if server.server is not None:
            await server.stop()


def source(url: str, tmp_path: Path, alarms: dict[str, Any], **options: Any) -> OpcuaConnector:
    config = OpcuaSource.model_validate(
        {"protocol": "opcua", "url": url, **FAST, **options, "alarms": alarms}
    )
    built = build_source("oven", config, state_dir=tmp_path)
    assert isinstance(built, OpcuaConnector)
    return built


def values(collector: Collector, signal: str) -> list[Any]:
    return [s.value if s.quality is Quality.GOOD else "BAD" for s in collector.of(signal)]


async def test_a_condition_raised_and_cleared_gives_its_signals(collector: Collector, tmp_path: Path) -> None:
    async with alarm_server() as plc:
        high = await plc.alarm("Oven1", "HighTemp")
        src = source(plc.url, tmp_path, {"source": "i=2253"})
        async with running(src, collector):
            raised_at = await high.raise_("Oven 1 over 250 C", severity=800)
            await collector.wait_for(lambda: values(collector, "oven.alarm.HighTemp.active") == [True])
            active = collector.last("oven.alarm.HighTemp.active")
            assert active is not None and active.ts == pytest.approx(raised_at.timestamp(), abs=0.001)
            assert values(collector, "oven.alarm.HighTemp.message") == ["Oven 1 over 250 C"]
            assert values(collector, "oven.alarm.HighTemp.severity") == [800]
            assert values(collector, "oven.alarm.HighTemp.acked") == [False]
            assert values(collector, "oven.alarm.HighTemp.source") == ["Oven1"]
            # the details come before `active`: a rule firing on it renders this activation's message
            names = [s.signal for s in collector.samples]
            assert names.index("oven.alarm.HighTemp.message") < names.index("oven.alarm.HighTemp.active")
            await high.clear()
            await collector.wait_for(lambda: values(collector, "oven.alarm.HighTemp.active") == [True, False])
        saved = json.loads((tmp_path / "opcua" / "oven-alarms.json").read_text())
        assert [c["name"] for c in saved["conditions"].values()] == ["oven.alarm.HighTemp"]


async def test_severity_min_and_names_after_the_source(collector: Collector, tmp_path: Path) -> None:
    async with alarm_server() as plc:
        low = await plc.alarm("Pump7", "Vibration", via="equipment")
        high = await plc.alarm("Pump7", "Seal", via="equipment")
        src = source(
            plc.url,
            tmp_path,
            {"source": f"ns={plc.ns};s=Pump7", "severity_min": 500, "name": "source_condition"},
        )
        async with running(src, collector):
            await low.raise_("vibration slightly high", severity=300)
            await high.raise_("seal leaking", severity=900)
            await collector.wait_for(lambda: values(collector, "oven.alarm.Pump7.Seal.active") == [True])
            assert collector.of("oven.alarm.Pump7.Vibration.active") == []  # under severity_min: not reported
            await low.update(severity=600, message="vibration high")  # the same activation, now severe enough
            await collector.wait_for(lambda: values(collector, "oven.alarm.Pump7.Vibration.active") == [True])
            assert values(collector, "oven.alarm.Pump7.Vibration.message") == ["vibration high"]
            await low.update(severity=100, message="vibration easing")  # still active: stays reported
            await collector.wait_for(
                lambda: values(collector, "oven.alarm.Pump7.Vibration.severity") == [600, 100]
            )
            assert values(collector, "oven.alarm.Pump7.Vibration.active") == [True, True]


async def test_after_a_server_restart_condition_refresh_reports_what_changed_and_one_task_per_activation(
    collector: Collector, tmp_path: Path
) -> None:
    """D stays active, A clears and rises again, C clears, B rises while the link is down: the refresh after
    the reconnect reports exactly that, and the rules make one task per activation (two for A)."""
    async with alarm_server() as plc:
        alarms = {name: await plc.alarm("Line1", name) for name in "ACD"}
        since = {name: await alarm.raise_(f"{name} tripped") for name, alarm in alarms.items()}
        src = source(plc.url, tmp_path, {})
        async with running(src, collector):
            for name in "ACD":
                await collector.wait_for(lambda n=name: values(collector, f"oven.alarm.{n}.active") == [True])
            await plc.stop()
            await collector.wait_for(lambda: values(collector, "oven.alarm.D.active") == [True, "BAD"])
            await plc.start()  # the PLC kept D; A rose again, B is new, C cleared
            await (await plc.alarm("Line1", "D")).raise_("D tripped", at=since["D"])
            await (await plc.alarm("Line1", "A")).raise_("A tripped again")
            await (await plc.alarm("Line1", "B")).raise_("B tripped")
            await plc.alarm("Line1", "C")
            await collector.wait_for(lambda: values(collector, "oven.alarm.C.active") == [True, "BAD", False])
            assert values(collector, "oven.alarm.D.active") == [True, "BAD", True]
            assert values(collector, "oven.alarm.A.active") == [True, "BAD", False, True]
            assert values(collector, "oven.alarm.B.active") == [True]
            assert values(collector, "oven.alarm.A.message")[-1] == "A tripped again"

    rules = "\n".join(
        f"""
- id: alarm-{name}
  when: {{signal: oven.alarm.{name}.active, equals: true}}
  task: {{description: "{{{{ oven.alarm.{name}.message }}}} (severity {{{{ oven.alarm.{name}.severity }}}})"}}
"""
        for name in "ABCD"
    )
    eng = engine(tmp_path, rules)
    firings = []
    for i, sample in enumerate(collector.samples):
        firings += eng.process(sample, T0 + i)
    assert sorted(f.rule_id for f in firings) == ["alarm-A", "alarm-A", "alarm-B", "alarm-C", "alarm-D"]
    assert [f.task.description for f in firings if f.rule_id == "alarm-A"] == [
        "A tripped (severity 800)",
        "A tripped again (severity 800)",
    ]


async def test_probe_lists_the_alarms_the_server_reports(tmp_path: Path) -> None:
    """Before: `mw-gateway probe` listed only the data signals of a source with `alarms:`."""
    from gateway.sources.probe import probe_source

    async with alarm_server() as plc:
        config = OpcuaSource.model_validate(
            {"protocol": "opcua", "url": plc.url, **FAST, "alarms": {"source": "i=2253"}}
        )
        quiet = await probe_source("oven", config, seconds=1.0, state_dir=tmp_path)
        assert [(r.signal, r.quality) for r in quiet] == [("oven.alarm.*", "none")]
        assert "no active or unacknowledged alarm" in quiet[0].error and quiet[0].optional
        high = await plc.alarm("Oven1", "HighTemp")
        await high.raise_("Oven 1 over 250 C", severity=800)
        readings = {r.signal: r for r in await probe_source("oven", config, seconds=2.0, state_dir=tmp_path)}
    assert readings["oven.alarm.HighTemp.active"].value is True
    assert readings["oven.alarm.HighTemp.severity"].value == 800
    assert readings["oven.alarm.HighTemp.message"].value == "Oven 1 over 250 C"
