"""The protocol-free part of OPC UA alarms: decoding the event fields, naming, deduplicating activations
across refreshes and restarts, severity_min; and the `alarms:` schema."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from pydantic import ValidationError

from gateway.core.clock import ManualClock
from gateway.sources.opcua_alarms import _FIELDS, AlarmState, ConditionEvent, decode
from gateway.sources.schema import OpcuaAlarms, OpcuaSource

T0 = 1_767_225_600.0


def alarms(**options: Any) -> OpcuaAlarms:
    return OpcuaAlarms.model_validate(options)


def event(name: str, active: bool | None, at: float, *, severity: int = 800, **kw: Any) -> ConditionEvent:
    fields: dict[str, Any] = {
        "condition_id": f"ns=2;s=Line1.{name}",
        "condition_name": name,
        "source_name": "Line1",
        "active": active,
        "acked": False,
        "severity": severity,
        "message": f"{name} tripped",
        "time": at,
        "transition": at,
    }
    fields.update(kw)
    return ConditionEvent(**fields)


def active_values(out: list[tuple[str, Any, float]]) -> list[Any]:
    return [value for signal, value, _ in out if signal.endswith(".active")]


def test_one_activation_across_a_restart_and_a_new_one_while_down(tmp_path: Path) -> None:
    path = tmp_path / "opcua" / "oven-alarms.json"
    clock = ManualClock(T0)
    state = AlarmState("oven", alarms(), clock, path)
    assert active_values(state.on_condition(event("A", True, T0))) == [True]
    assert active_values(state.on_condition(event("B", True, T0))) == [True]
    assert active_values(state.on_condition(event("C", True, T0))) == [True]

    again = AlarmState("oven", alarms(), clock, path)  # the gateway restarted
    again.refresh_start()
    assert active_values(again.on_condition(event("A", True, T0))) == [True]  # the same activation
    assert active_values(again.on_condition(event("B", True, T0 + 60))) == [False, True]  # rose again
    out = again.refresh_end()  # C was not in the refresh: it cleared
    assert [(s, v) for s, v, _ in out if s.endswith(".active")] == [("oven.alarm.C.active", False)]
    assert sorted(again.signal_names())[:5] == [
        "oven.alarm.A.acked",
        "oven.alarm.A.active",
        "oven.alarm.A.message",
        "oven.alarm.A.severity",
        "oven.alarm.A.source",
    ]


def test_a_refresh_without_transition_times_repeats_the_known_activation() -> None:
    state = AlarmState("oven", alarms(), ManualClock(T0), None)
    state.on_condition(event("A", True, T0))
    state.refresh_start()
    out = state.on_condition(event("A", True, T0 + 30, transition=None))  # Time = when the server refreshed
    assert [(v, ts) for s, v, ts in out if s.endswith(".active")] == [(True, T0)]
    state.refresh_end()
    out = state.on_condition(event("A", True, T0 + 40, transition=None))  # outside a refresh: a new one
    assert active_values(out) == [False, True]


def test_severity_min_gates_activations_not_clears() -> None:
    state = AlarmState("oven", alarms(severity_min=500), ManualClock(T0), None)
    assert state.on_condition(event("A", True, T0, severity=200)) == []
    assert state.on_condition(event("A", False, T0 + 1, severity=200)) == []  # never reported: no signals
    assert active_values(state.on_condition(event("A", True, T0 + 2, severity=700))) == [True]
    assert active_values(state.on_condition(event("A", True, T0 + 2, severity=100))) == [True]
    assert active_values(state.on_condition(event("A", False, T0 + 3, severity=100))) == [False]


def test_names_are_made_safe_and_a_second_condition_of_the_same_name_gets_a_suffix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = AlarmState("oven", alarms(), ManualClock(T0), None)
    out = state.on_condition(event("High temp.zone/1", True, T0))
    assert out[-1][0] == "oven.alarm.High_temp_zone_1.active"
    other = event("High temp.zone/1", True, T0, condition_id="ns=2;s=Line2.HighTemp", source_name="Line2")
    with caplog.at_level(logging.WARNING, logger="gateway.sources.opcua_alarms"):
        name = state.on_condition(other)[-1][0]
    assert name.startswith("oven.alarm.High_temp_zone_1_") and name != out[-1][0]
    assert "alarms.name: source_condition" in caplog.text
    by_source = AlarmState("oven", alarms(name="source_condition"), ManualClock(T0), None)
    assert by_source.on_condition(other)[-1][0] == "oven.alarm.Line2.High_temp_zone_1.active"


def test_details_come_before_active_and_non_alarms_are_ignored() -> None:
    state = AlarmState("oven", alarms(), ManualClock(T0), None)
    out = state.on_condition(event("A", True, T0, message="over 250 C", severity=900, acked=True))
    assert [(s.rsplit(".", 1)[1], v) for s, v, _ in out] == [
        ("severity", 900),
        ("message", "over 250 C"),
        ("acked", True),
        ("source", "Line1"),
        ("active", True),
    ]
    assert state.on_condition(event("Dialog", None, T0)) == []


def test_a_damaged_state_file_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "oven-alarms.json"
    path.write_text('{"conditions": {"x": {"nope": 1}}}')
    with caplog.at_level(logging.WARNING, logger="gateway.sources.opcua_alarms"):
        state = AlarmState("oven", alarms(), ManualClock(T0), path)
    assert state.signal_names() == [] and "activations seen before are forgotten" in caplog.text


def test_decode_takes_what_the_server_sent_and_never_raises() -> None:
    names = [f[0] for f in _FIELDS]
    at = datetime(2026, 1, 1, tzinfo=UTC)
    values = {
        "EventType": ua.NodeId(9341),
        "SourceName": "Oven1",
        "Time": at,
        "Message": ua.LocalizedText("hot"),
        "Severity": 800,
        "ConditionId": ua.NodeId("Oven1.HighTemp", 2),
        "ConditionName": "HighTemp",
        "Retain": True,
        "ActiveState/Id": True,
        "ActiveState/TransitionTime": at,
        "AckedState/Id": False,
        "BranchId": ua.NodeId(),
    }
    kind, cond = decode([ua.Variant(values[n]) for n in names])
    assert kind == "condition" and cond is not None
    assert (cond.condition_id, cond.message, cond.severity, cond.transition) == (
        "ns=2;s=Oven1.HighTemp",
        "hot",
        800,
        at.timestamp(),
    )
    assert cond.source_name == "Oven1"
    node_opcua = dict(values, SourceName="2:Oven1")  # node-opcua sends the browse name with its index
    assert decode([ua.Variant(node_opcua[n]) for n in names])[1] == cond
    assert decode([ua.Variant(ua.NodeId(2787))]) == ("refresh_start", None)
    assert decode([ua.Variant(ua.NodeId(2788))]) == ("refresh_end", None)
    assert decode([]) == ("other", None)  # no ConditionId: not a condition
    branch = [*(ua.Variant(values[n]) for n in names[:-1]), ua.Variant(ua.NodeId(77, 2))]
    assert decode(branch) == ("branch", None)  # a previous state waiting for its acknowledgement
    junk = [ua.Variant(v) for v in ["x", 5, "not a time", 3.5, "many", ua.NodeId("c", 2), 7, None, "yes"]]
    kind, cond = decode(junk)
    assert kind == "condition" and cond is not None and cond.active is None and cond.time is None


def test_alarms_schema() -> None:
    only_alarms = OpcuaSource.model_validate(
        {"protocol": "opcua", "url": "opc.tcp://h:4840", "alarms": {"source": "i=2253", "severity_min": 500}}
    )
    assert only_alarms.signals == {} and only_alarms.alarms is not None
    assert only_alarms.alarms.name == "condition"
    with pytest.raises(ValidationError, match=r"alarm\.\* are the alarms' signals"):
        OpcuaSource.model_validate(
            {"protocol": "opcua", "url": "opc.tcp://h:4840", "alarms": {}, "signals": {"alarm": "i=1"}}
        )
    with pytest.raises(ValidationError, match="less than or equal to 1000"):
        alarms(severity_min=1001)


ALARM_RULES = """\
- id: oven-high-temp
  when: {signal: oven.alarm.HighTemp.active, equals: true}
  task:
    equipment: OVEN-1
    description: "{{ oven.alarm.HighTemp.message }} ({{ oven.alarm.HighTemp.severity }})"
- id: oven-typo
  when: {signal: oven.alarms.HighTemp.active, equals: true}
  task: {equipment: OVEN-1, description: "never"}
"""


def test_check_accepts_the_alarm_signals_of_a_source_with_alarms(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "oven.yaml").write_text(ALARM_RULES)
    config = tmp_path / "gateway.yaml"
    config.write_text("""\
gateway: {id: gw}
cmms: {kind: mobility_work, api_key: "${MW_API_KEY}"}
sources:
  oven: {protocol: opcua, url: "opc.tcp://127.0.0.1:4840", alarms: {source: i=2253, severity_min: 500}}
""")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "MW_API_KEY": "secret-key-123456"},
        timeout=60,
    )
    problems = [line for line in result.stdout.splitlines() if "oven.yaml:" in line]
    assert len(problems) == 1 and "unknown signal 'oven.alarms.HighTemp.active'" in problems[0], result.stdout
