"""gateway.yaml: interpolation, located errors with hints, secrets that never print."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.core.errors import ConfigError
from gateway.runtime.logs import RedactSecrets

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
    opt_ins = ", allow_plain_http: true, allow_unauthenticated: true"
    allowed = load_config(Path("g.yaml"), text=text % opt_ins, env={})
    assert allowed.http.allow_plain_http


def test_secrets_are_redacted_from_log_records() -> None:
    redact = RedactSecrets(["s3cret-value"])
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "key %s rejected", ("s3cret-value",), None)
    redact.filter(record)
    assert record.getMessage() == "key *** rejected"


# ---------------------------------------------------------------- secrets from the environment (issue 18 #8)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "systemd" / "gateway.yaml.example"


def _env_file(path: Path, **values: str) -> dict[str, str]:
    """The variables of an EnvironmentFile= as systemd reads it (VAR=value lines), with some filled in."""
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            env[name.strip()] = value.strip()
    return {**env, **values}


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_the_shipped_templates_with_an_empty_webhook_secret_are_refused_not_left_unsigned() -> None:
    # Before: MW_WEBHOOK_SECRET= (as shipped) made webhook_secret null, signatures were off, and one unsigned
    # POST set a stock signal. Now the empty variable is an error at the line that uses it.
    env = _env_file(REPO / "systemd" / "env.example", MW_API_KEY="k" * 32)
    assert env["MW_WEBHOOK_SECRET"] == ""
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE, env=env)
    (only,) = [str(p) for p in info.value.problems]
    line = _line_of(EXAMPLE, "webhook_secret: ${MW_WEBHOOK_SECRET}")
    assert only.startswith(f"{EXAMPLE}:{line}:19: http.webhook_secret is empty because MW_WEBHOOK_SECRET")
    assert "/etc/mw-gateway/env" in only and "delete the `webhook_secret:` line" in only


@pytest.mark.parametrize("secret", ["123456789", "yes", "2024-01-01", "null", "0x1F", "~"])
def test_a_secret_that_looks_like_a_number_boolean_date_or_null_stays_that_string(secret: str) -> None:
    from gateway.web.verify import MWSignatureVerifier, Rejected

    env = _env_file(REPO / "systemd" / "env.example", MW_API_KEY="k" * 32, MW_WEBHOOK_SECRET=secret)
    config = load_config(EXAMPLE, env=env)
    assert config.http.webhook_secret is not None
    assert config.http.webhook_secret.get_secret_value() == secret
    verifier = MWSignatureVerifier((config.http.webhook_secret.get_secret_value(),))
    with pytest.raises(Rejected):  # the unsigned POST of the report is refused
        verifier.verify(None, b'{"type": "stock"}', now=0.0)


def test_an_empty_auth_token_is_an_error_and_typed_keys_still_read_numbers() -> None:
    text = BASE + "  auth_token: ${TOKEN}\n  max_body_bytes: ${BODY}\n  allow_plain_http: ${PLAIN}\n"
    (only,) = problems(text, {"KEY": "k" * 20, "TOKEN": "", "BODY": "65536", "PLAIN": "no"})
    assert only.startswith("/etc/gw/gateway.yaml:7:15: http.auth_token is empty because TOKEN is empty")
    config = load_config(
        Path("g.yaml"), text=text, env={"KEY": "k" * 20, "TOKEN": "1e3", "BODY": "65536", "PLAIN": "no"}
    )
    assert config.http.max_body_bytes == 65536 and config.http.allow_plain_http is False
    assert config.http.auth_token is not None and config.http.auth_token.get_secret_value() == "1e3"
    (literal,) = problems(BASE + "  auth_token: ''\n", {"KEY": "k" * 20})
    assert literal.startswith("/etc/gw/gateway.yaml:7:15: http.auth_token is empty: write the secret")


NETWORK = "gateway: {id: gw}\ncmms: {kind: dry_run}\nhttp:\n  listen: 0.0.0.0:8470\n  allow_plain_http: yes\n"


def test_listening_beyond_loopback_needs_a_webhook_secret_and_auth_or_an_explicit_opt_out() -> None:
    (only,) = problems(NETWORK)
    assert only.startswith("/etc/gw/gateway.yaml:4:11: http.listen 0.0.0.0:8470 reaches beyond this machine")
    assert "webhook_secret" in only and "auth_token" in only and "allow_unauthenticated: true" in only
    (no_auth,) = problems(NETWORK + "  webhook_secret: s3cret\n")
    assert "webhook_secret" not in no_auth.split("without", 1)[1] and "auth_token" in no_auth
    (no_secret,) = problems(NETWORK + "  auth_token: t0ken\n")
    assert "webhook_secret" in no_secret and "auth_token" not in no_secret.split("without", 1)[1]
    signed = load_config(Path("g.yaml"), text=NETWORK + "  webhook_secret: s\n  auth_token: t\n", env={})
    assert not signed.http.loopback
    basic = NETWORK + "  webhook_secret: s\n  auth_user: u\n  auth_password: p\n"
    assert load_config(Path("g.yaml"), text=basic, env={}).http.authenticated
    opted = load_config(Path("g.yaml"), text=NETWORK + "  allow_unauthenticated: true\n", env={})
    assert opted.http.allow_unauthenticated


def test_a_jwt_key_without_the_servicemobility_extra_is_a_clear_error_at_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = "gateway: {id: gw}\ncmms: {kind: dry_run}\nhttp:\n  servicemobility_jwt_key: k3y-of-the-site\n"
    assert load_config(Path("g.yaml"), text=text, env={}).http.servicemobility_jwt_key is not None
    monkeypatch.setitem(sys.modules, "jwt", None)  # as if PyJWT were not installed
    (only,) = problems(text)
    assert only.startswith("/etc/gw/gateway.yaml:4:3: http: servicemobility_jwt_key needs PyJWT")
    assert only.endswith("pip install 'mw-gateway[servicemobility]'")
    assert load_config(Path("g.yaml"), text="gateway: {id: gw}\ncmms: {kind: dry_run}\n", env={})
