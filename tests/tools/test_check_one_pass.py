"""`mw-gateway check` reports schema and semantic problems in one pass: a rule file holding one problem of
each kind gives one located line for each, including the semantic problem of a rule whose schema is wrong."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from gateway.engine.lint import lint_rules

CONFIG = """\
gateway: {id: chk}
cmms: {kind: dry_run}
sources:
  press:
    protocol: modbus
    host: 127.0.0.1
    signals:
      temp: {holding: 0, type: float32}
      mode: {holding: 10, type: string, length: 4}
      running: {coil: 0}
  oven:
    protocol: mqtt
    url: mqtt://127.0.0.1:1883
    signals:
      "{1}_state": {topic: "oven/+/state", type: string}
"""

ONE_OF_EACH = """\
- id: a-schema
  when: {signal: press.temp, above: 80}
  cooldwon: 1h
  task: {description: "Temperature {{ valu }}"}
- id: b-unknown-signal
  when: {signal: press.tmep, above: 80}
  task: {description: "Too hot"}
- id: b-unknown-signal
  when: {signal: press.temp, above: 90}
  task: {description: "Way too hot"}
- id: d-short
  when: {signal: press.temp, above: 70}
  task: {description: "ok"}
- id: e-nobody
  when: {signal: press.temp, above: 60}
  task: {description: "Warm press", assignees: []}
- id: f-types
  when: {signal: press.temp, equals: "HOT"}
  task: {description: "Hot press"}
- id: g-types-expr
  when: {expr: "press.temp > 50 and press.mode == 3"}
  task: {description: "Mode three"}
- id: h-fine
  when: {expr: "press.running == true and press.mode == 'AUTO' and oven.zone1_state != 'off'"}
  task: {description: "All as declared", assignees: [3]}
"""


def test_one_problem_of_each_kind_one_line_each_in_one_run(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "press.yaml").write_text(ONE_OF_EACH)
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    rules = re.escape(str(tmp_path / "rules" / "press.yaml"))
    found = [re.match(rf"^{rules}:(\d+):(\d+): (.+)$", line) for line in result.stdout.splitlines()]
    assert all(found), result.stdout
    got = [(int(m.group(1)), m.group(3)) for m in found if m]
    expected = [
        (3, "unknown key 'cooldwon'"),  # schema
        (4, "unknown name 'valu' in the description"),  # the same rule: not left for a second round
        (6, "unknown signal 'press.tmep'"),
        (8, "duplicate rule id 'b-unknown-signal'"),
        (13, "the description needs at least 3 characters"),
        (16, "assignees is empty"),
        (18, "press.temp is a number (as declared in gateway.yaml): comparing it with the string 'HOT'"),
        (21, "press.mode is a string (as declared in gateway.yaml): comparing it with the number 3"),
    ]
    assert len(got) == len(expected), result.stdout
    for (line, message), (want_line, want) in zip(got, expected, strict=True):
        assert line == want_line and message.startswith(want), (line, message)
    assert "8 problems found" in result.stderr


def test_an_invalid_rule_still_gets_its_signals_duplicates_and_description_checked(tmp_path: Path) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text("""\
- id: x
  when: {signal: press.nope, above: 1, sideways: true}
  task: {description: "{{ press.gone }}", assignees: []}
- id: x
  when: {expr: "press.missing > 1"}
  priority: urgent
  task: {description: "a"}
""")
    problems = lint_rules(rules, known_signals={"press.temp"}, signal_types={"press.temp": "number"})
    messages = sorted((p.line, p.message.split(":")[0]) for p in problems)
    assert messages == [
        (2, "unknown signal 'press.nope'"),
        (3, "assignees is empty"),
        (3, "unknown signal 'press.gone' in the description"),
        (4, "duplicate rule id 'x'"),
        (5, "unknown signal 'press.missing' in the expression"),
        (7, "the description needs at least 3 characters (the CMMS minimum)"),
    ], problems


def test_shipped_rules_have_nothing_to_lint() -> None:
    root = Path(__file__).resolve().parents[2]
    assert lint_rules(root / "rules") == []
