"""gateway.yaml: interpolation, located errors with hints, secrets that never print."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.core.errors import ConfigError
from gateway.logs import RedactSecrets

BASE = """\
gateway: {id: gw}
cmms:
  kind: mobility_work
  api_key: ${KEY}
http:
  listen: 127.0.0.1:${PORT:-8470}
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(Path("/etc/gw/gateway.yaml"), text=text, env=env or {})
    return [str(p) for p in info.value.problems]


def test_env_interpolation_with_default_and_types() -> None:
    config = load_config(Path("gateway.yaml"), text=BASE, env={"KEY": "s3cret-value"})
    assert config.http.port == 8470
    assert config.cmms.api_key.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(config) and "s3cret-value" not in str(config.model_dump())
    plain = load_config(
        Path("g.yaml"),
        text="gateway: {id: gw}\ncmms: {kind: dry_run}\nhttp: {listen: '127.0.0.1:${P}'}\n",
        env={"P": "9000"},
    )
    assert plain.http.listen == "127.0.0.1:9000"


def test_every_problem_at_once_with_line_column_and_hint() -> None:
    found = problems("""\
gateway:
  id: gw
  timezon: Europe/Paris
cmms:
  kind: mobilitywork
dispatcher:
  retry_max: 10 minutes
sources:
  press1:
    protocol: opcua
    url: http://10.0.0.1
    signals: {s: ns=2;s=X}
  press2: {protocol: modbus, host: plc2}
  press2: {protocol: modbus, host: plc2, signals: {}}
""")
    assert found == [
        "/etc/gw/gateway.yaml:3:3: unknown key 'timezon'; did you mean 'timezone'?",
        "/etc/gw/gateway.yaml:5:9: kind: 'mobilitywork' is not one of mobility_work, amage, servitly, "
        "dry_run; did you mean 'mobility_work'?",
        "/etc/gw/gateway.yaml:7:14: dispatcher.retry_max: expected a duration like 500ms, 30s, 5m, 12h or "
        "7d, got '10 minutes'",
        "/etc/gw/gateway.yaml:11:10: sources.press1.url: an OPC UA url starts with opc.tcp://, e.g. "
        "opc.tcp://10.0.0.10:4840",
        "/etc/gw/gateway.yaml:14:3: duplicate key 'press2': the later value would silently win; keep one",
    ]


def test_missing_variable_and_missing_file_say_what_to_do(tmp_path: Path) -> None:
    (only,) = problems(BASE)
    assert only.startswith("/etc/gw/gateway.yaml:4:12: environment variable KEY is not set")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "gateway.yaml")
    assert "pass -c FILE, or set MW_GATEWAY_CONFIG" in str(info.value)


def test_plain_http_beyond_loopback_is_refused_unless_asked_for() -> None:
    text = "gateway: {id: gw}\ncmms: {kind: dry_run}\nhttp: {listen: '0.0.0.0:8470'%s}\n"
    (only,) = problems(text % "")
    assert only.startswith("/etc/gw/gateway.yaml:3:")
    assert "allow_plain_http" in only
    allowed = load_config(Path("g.yaml"), text=text % ", allow_plain_http: true", env={})
    assert allowed.http.allow_plain_http


def test_secrets_are_redacted_from_log_records() -> None:
    redact = RedactSecrets(["s3cret-value"])
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "key %s rejected", ("s3cret-value",), None)
    redact.filter(record)
    assert record.getMessage() == "key *** rejected"
