"""The trigger registry (gateway/engine/triggers/__init__.py) and the compatibility of what it builds: the
kinds it lists, the `when:` error messages, and the persisted state of every kind (keys, values and trigger
fingerprints, byte for byte what earlier versions wrote and read back)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Any

import pytest

import gateway.engine.triggers as registry
from gateway.core.errors import RuleError
from gateway.engine.triggers.base import WhenModel
from tests.engine.helpers import T0, bad, engine, good, ruleset


def test_every_trigger_module_is_registered_under_its_own_name() -> None:
    """A module of the package that defines a `when:` schema is a kind, and a kind is listed under its key."""
    defined: dict[str, str] = {}
    for info in pkgutil.iter_modules(registry.__path__):
        module = importlib.import_module(f"{registry.__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, WhenModel) and cls is not WhenModel and cls.__module__ == module.__name__:
                defined[cls.kind] = info.name
                assert getattr(module, "KIND", None) is registry.KINDS.get(cls.kind), info.name
    assert defined == {kind: kind for kind in registry.TRIGGER_KINDS}
    assert registry.TRIGGER_KINDS[:5] == ("counter", "hours", "signal", "expr", "stale")
    for name, kind in registry.KINDS.items():
        assert kind.name == name and registry.WHEN_MODELS[name] is kind.when


def test_when_without_a_trigger_names_every_kind(tmp_path: Path) -> None:
    with pytest.raises(RuleError) as info:
        ruleset(tmp_path, "- id: r\n  when: {every: 5}\n  task: {description: abc}\n")
    kinds = registry.TRIGGER_KINDS
    expected = f"when: needs exactly one trigger: {', '.join(kinds[:-1])} or {kinds[-1]}"
    assert [str(p) for p in info.value.problems] == [f"{tmp_path}/rules/rules.yaml:2:9: {expected}"]
    assert expected.startswith("when: needs exactly one trigger: counter, hours, signal, expr, stale, avg,")


def test_a_key_nested_in_a_trigger_gets_a_hint(tmp_path: Path) -> None:
    text = '- id: r\n  when: {hours: {expr: "a.b > 1", exp: 2}, every: 5}\n  task: {description: abc}\n'
    with pytest.raises(RuleError) as info:
        ruleset(tmp_path, text)
    where = f"{tmp_path}/rules/rules.yaml"
    assert [str(p) for p in info.value.problems] == [
        f"{where}:2:17: when.hours: Input should be a valid string (got {{'expr': 'a.b > 1', 'exp': 2}})",
        f"{where}:2:35: unknown key 'exp'; did you mean 'expr'?",
    ]


RULES = """
- id: c
  when: {counter: m.count, every: 100, wrap: uint16}
  cooldown: 1h
  task: {description: "count {{ value }}"}
- id: h
  when: {hours: m.run, every: 2h}
  task: {description: "hours {{ value }}"}
- id: s
  when: {signal: m.temp, above: 80, for: 5m, reset_below: 70}
  task: {description: "temp {{ value }}"}
- id: e
  when: {expr: "m.temp > 90 and m.run", for: 0s}
  task: {description: "expr fired"}
- id: st
  when: {stale: m.temp, for: 30m}
  task: {description: "stale fired"}
"""

# What the state table holds after the scenario below. The fingerprints are those earlier versions computed:
# a change here means every gateway in the field drops its saved counters and timers on upgrade.
STATE: dict[str, dict[str, Any]] = {
    "c": {
        "kind": "counter",
        "fp": "7c55b84793644022",
        "cooldown_until": T0 + 300 + 3600,
        "last_fired_at": T0 + 300,
        "last": 30,
        "total": 65500.0 + 65536 - 65500 + 30,  # 65500 -> 30 with wrap: uint16 is a wrap-around
        "next": 65600.0,
        "every": 100.0,
    },
    "h": {
        "kind": "hours",
        "fp": "95e4437c9a982ae9",
        "cooldown_until": 0.0,
        "last_fired_at": None,
        "acc_s": 600.0,
        "next_s": 7200.0,
        "every_s": 7200.0,
    },
    "s": {
        "kind": "signal",
        "fp": "56c59686ec3f0efc",
        "cooldown_until": 0.0,
        "last_fired_at": T0 + 600,
        "phase": "firing",
        "since": T0 + 300,
    },
    "e": {
        "kind": "expr",
        "fp": "1ce6cdffb9053190",
        "cooldown_until": 0.0,
        "last_fired_at": T0 + 300,
        "phase": "idle",
        "since": None,
    },
    "st": {
        "kind": "stale",
        "fp": "44094d4fd1b8c98c",
        "cooldown_until": 0.0,
        "last_fired_at": None,
        "phase": "idle",
    },
}


def _scenario(tmp_path: Path) -> tuple[Any, list[str]]:
    eng = engine(tmp_path, RULES)
    keys: list[str] = []
    steps: list[list[Any]] = [
        [good("m.count", 65490, T0), good("m.run", True, T0), good("m.temp", 50.0, T0)],
        [good("m.count", 65500, T0 + 300), good("m.temp", 95.0, T0 + 300)],
        [good("m.count", 30, T0 + 600), good("m.temp", 85.0, T0 + 600), bad("m.run", T0 + 600)],
    ]
    for batch in steps:
        now = batch[0].ts
        keys += [f.key for f in eng.process_batch(batch, now)]
        keys += [f.key for f in eng.tick(now)]
    return eng, keys


def test_the_persisted_state_of_every_kind_keeps_its_format(tmp_path: Path) -> None:
    eng, keys = _scenario(tmp_path)
    assert keys == ["c:65500", "e:2026-01-01T00:05:00.000Z", "s:2026-01-01T00:05:00.000Z"]
    assert eng.export_state() == STATE


def test_a_saved_state_of_every_kind_is_restored(tmp_path: Path) -> None:
    eng = engine(tmp_path, RULES, state=STATE)
    assert eng.export_state() == STATE
    status = {r["id"]: r for r in eng.rule_status(T0 + 700)}
    assert [status[r]["state"] for r in ("c", "h", "s", "e", "st")] == [
        "cooldown",
        "idle",
        "firing",
        "idle",
        "idle",
    ]
    assert status["c"]["progress"]["remaining"] == STATE["c"]["next"] - STATE["c"]["total"]
    # the counter resumes from its meter: 70 more counts reach the next threshold (swallowed by the cooldown)
    assert eng.process(good("m.count", 30, T0 + 700), T0 + 700) == []
    assert eng.process(good("m.count", 100, T0 + 700), T0 + 700) == []
    assert eng.rule_status(T0 + 700)[0]["swallowed_by_cooldown"] == 1
