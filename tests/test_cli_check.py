"""`mw-gateway check`: every problem at once, as FILE:LINE:COL lines, exit 1."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

GOOD_RULES = """\
- id: pump7-overheat
  when: {signal: pump7.temp, above: 85, for: 5m, reset_below: 80}
  cooldown: 12h
  task: {equipment: 2507, description: "Pump 7 overheating ({{ value }} °C)", assignees: [3], duration: 4h}
"""


def run_check(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
    )


def test_three_mistakes_three_located_lines(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "pump.yaml").write_text(GOOD_RULES)
    config = tmp_path / "gateway.yaml"
    config.write_text("""\
gateway:
  id: press-line-1
cmms:
  kind: mobility_work
  api_key: ${MW_API_KEY}
  plan: premum
http:
  lisen: 127.0.0.1:8470
sources:
  pump7:
    protocol: modbus
    host: 10.0.0.20
    signals:
      temp: {input: 10, type: float33}
""")
    result = run_check(config, {"MW_API_KEY": "k" * 40})
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 3, result.stdout
    located = [re.match(rf"^{re.escape(str(config))}:(\d+):(\d+): (.+)$", line) for line in lines]
    assert all(located), lines
    found = {(int(m.group(1)), m.group(3).split(":")[0]) for m in located if m}
    assert [int(m.group(1)) for m in located if m] == [6, 8, 14]
    assert "did you mean 'listen'" in lines[1]
    assert "plan" in lines[0] and "type" in lines[2], found
    assert "3 problems found" in result.stderr


def test_missing_env_var_is_located_and_secret_free(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "pump.yaml").write_text(GOOD_RULES.replace("pump7.temp", "pump7.tmp"))
    config = tmp_path / "gateway.yaml"
    config.write_text("""\
gateway: {id: gw}
cmms: {kind: mobility_work, api_key: "${MW_API_KEY}"}
sources:
  pump7: {protocol: modbus, host: h, signals: {temp: {input: 10, type: float32}}}
""")
    result = run_check(config)
    assert result.returncode == 1
    assert f"{config}:2:" in result.stdout and "MW_API_KEY is not set" in result.stdout
    # The rule problem is reported in the same run, against the rule file.
    assert "pump.yaml:2:" in result.stdout and "pump7.tmp" in result.stdout


def test_valid_config_passes(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "pump.yaml").write_text(GOOD_RULES)
    config = tmp_path / "gateway.yaml"
    config.write_text("""\
gateway: {id: gw}
cmms: {kind: mobility_work, api_key: "${MW_API_KEY}"}
sources:
  pump7: {protocol: modbus, host: h, signals: {temp: {input: 10, type: float32}}}
""")
    result = run_check(config, {"MW_API_KEY": "secret-key-123456"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout and "1 rules" in result.stdout
    assert "secret-key-123456" not in result.stdout + result.stderr


def test_while_open_suppress_without_webhooks_is_a_warning_not_an_error(tmp_path: Path) -> None:
    """Issue 13 item 11: `while_open: suppress` silently did nothing when no webhook could ever arrive."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "pump.yaml").write_text(GOOD_RULES)
    config = tmp_path / "gateway.yaml"
    base = """\
gateway: {id: gw}
cmms: {kind: mobility_work, api_key: "${MW_API_KEY}"}
sources:
  pump7: {protocol: modbus, host: h, signals: {temp: {input: 10, type: float32}}}
"""
    config.write_text(base)
    result = run_check(config, {"MW_API_KEY": "secret-key-123456"})
    assert result.returncode == 0 and "OK" in result.stdout
    assert "1 rule use while_open: suppress (pump7-overheat)" in result.stderr
    assert "http.webhook_secret" in result.stderr
    config.write_text(base + 'http: {webhook_secret: "${SECRET}"}\n')
    result = run_check(config, {"MW_API_KEY": "secret-key-123456", "SECRET": "s" * 32})
    assert result.returncode == 0 and "while_open" not in result.stderr
    (tmp_path / "rules" / "pump.yaml").write_text(GOOD_RULES.replace("cooldown: 12h", "while_open: create"))
    config.write_text(base)
    result = run_check(config, {"MW_API_KEY": "secret-key-123456"})
    assert result.returncode == 0 and "while_open" not in result.stderr


def test_a_window_shorter_than_the_source_poll_is_reported(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "pump.yaml").write_text(
        "- id: vib\n"
        "  when: {signal: pump7.temp, avg: 2s, above: 4}\n"
        "  task: {description: abc}\n"
        "- id: ok\n"
        "  when: {signal: pump7.temp, max: 10s, above: 4}\n"
        "  task: {description: abc}\n"
    )
    config = tmp_path / "gateway.yaml"
    config.write_text("""\
gateway:
  id: press-line-1
cmms:
  kind: dry_run
sources:
  pump7:
    protocol: modbus
    host: 10.0.0.20
    poll: 5s
    signals:
      temp: {input: 10, type: float32}
""")
    result = run_check(config)
    assert result.returncode == 1, result.stdout + result.stderr
    rules = tmp_path / "rules" / "pump.yaml"
    assert result.stdout.splitlines() == [
        f"{rules}:2:35: the window avg: 2s is shorter than the poll interval of source 'pump7' (5s): it sees "
        "one sample at most"
    ]
