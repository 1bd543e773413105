"""The systemd unit (verify, security exposure), the install script, and the example configuration."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from gateway.runtime.reload import load_all

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "mw-gateway.service"
INSTALL = REPO / "systemd" / "install.sh"
ARTIFACTS = REPO / "test-artifacts"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


def _unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists here (verify checks it)."""
    text = UNIT.read_text()
    exe = Path(sys.executable).parent / "mw-gateway"
    assert exe.exists(), exe
    text = text.replace("/opt/mw-gateway/venv/bin/mw-gateway", str(exe))
    copy = tmp_path / "mw-gateway.service"
    copy.write_text(text)
    return copy


def _settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_unit_is_what_the_gateway_expects():
    s = _settings(UNIT.read_text())
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] == ["30s"] and s["Restart"] == ["on-failure"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["EnvironmentFile"] == ["/etc/mw-gateway/env"]
    assert s["StateDirectory"] == ["mw-gateway"] and s["ProtectSystem"] == ["strict"]
    assert s["User"] == ["mw-gateway"]
    assert s["ExecStart"] == ["/opt/mw-gateway/venv/bin/mw-gateway run -c /etc/mw-gateway/gateway.yaml"]
    # Bounded resources (issue 18 #10): file descriptors, memory, threads.
    assert s["LimitNOFILE"] == ["16384"] and s["MemoryMax"] == ["512M"] and s["TasksMax"] == ["256"]


def test_systemd_analyze_verify_passes(tmp_path):
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(_unit_copy(tmp_path))], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "mw-gateway.service" in line]
    assert result.returncode == 0 and problems == [], result.stdout + result.stderr


def test_systemd_analyze_security_rates_the_unit_ok_or_better(tmp_path):
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(_unit_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for mw-gateway\.service: (\d+\.\d+) (\w+)", output)
    assert match, output
    exposure, rating = float(match.group(1)), match.group(2)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "systemd-security.txt").write_text(output)
    print(f"\nsystemd-analyze security: exposure {exposure} {rating}")
    assert rating in {"PERFECT", "SAFE", "OK"}, output
    assert exposure <= 4.9


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _install(root: Path, *args: str) -> str:
    result = subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), "--no-venv", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_install_is_idempotent_keeps_edited_config_and_uninstalls(tmp_path):
    root = tmp_path / "root"
    first = _install(root)
    etc = root / "etc" / "mw-gateway"
    assert "wrote /etc/mw-gateway/env (mode 0600)" in first
    assert _mode(etc / "env") == 0o600 and _mode(etc) == 0o750
    assert (root / "etc/systemd/system/mw-gateway.service").read_text() == UNIT.read_text()
    assert sorted(p.name for p in (etc / "rules").iterdir()) == ["press1.yaml", "pump7.yaml"]
    assert (root / "var/lib/mw-gateway").is_dir()

    (etc / "gateway.yaml").write_text((etc / "gateway.yaml").read_text().replace("press-line-1", "line-7"))
    (etc / "env").write_text("MW_API_KEY=secret-of-the-site\n")
    (etc / "env").chmod(0o644)
    second = _install(root)
    assert "wrote" not in second  # nothing of the operator's is overwritten
    assert "line-7" in (etc / "gateway.yaml").read_text()
    assert (etc / "env").read_text() == "MW_API_KEY=secret-of-the-site\n"
    assert _mode(etc / "env") == 0o600  # but a loosened mode is put back

    _install(root, "--uninstall")
    assert (
        not (root / "opt/mw-gateway").exists()
        and not (root / "etc/systemd/system/mw-gateway.service").exists()
    )
    assert (etc / "gateway.yaml").exists()  # kept without --purge
    _install(root, "--uninstall", "--purge")
    assert not etc.exists() and not (root / "var/lib/mw-gateway").exists()


def test_the_installed_example_config_and_rules_pass_the_check(tmp_path, monkeypatch):
    root = tmp_path / "root"
    _install(root)
    monkeypatch.setenv("MW_API_KEY", "k" * 32)
    monkeypatch.setenv("MW_WEBHOOK_SECRET", "s" * 32)
    config, rules = load_all(root / "etc/mw-gateway/gateway.yaml")
    assert config.http.loopback and config.logging.format == "logfmt"
    assert str(config.state_dir) == "/var/lib/mw-gateway"
    assert {r.id for r in rules.rules} >= {"press1-lubrication"}


def test_install_rejects_an_unknown_option_before_doing_anything(tmp_path):
    result = subprocess.run(
        ["bash", str(INSTALL), "--root", str(tmp_path / "r"), "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "unknown option --bogus" in result.stderr
    assert not (tmp_path / "r").exists()
