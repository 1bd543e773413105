"""`fleet:` in gateway.yaml and relay.yaml: defaults, and every mistake reported as FILE:LINE:COL."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.core.errors import ConfigError
from gateway.fleet.relay import decode_headers, encode_headers, msg_id
from gateway.fleet.relay_config import load_relay_config

BASE = "gateway: {id: line1}\ncmms: {kind: dry_run}\n"


def test_fleet_section_defaults() -> None:
    config = load_config(Path("gateway.yaml"), text=BASE + "fleet:\n  nats: [nats://10.0.0.5:4222]\n", env={})
    fleet = config.fleet
    assert fleet is not None
    assert (fleet.name, fleet.quota, fleet.quota_share, fleet.webhooks, fleet.replicas) == (
        "mw",
        "shared",
        0.2,
        "relay",
        3,
    )
    assert fleet.retention == 7 * 86400 and fleet.heartbeat == 15
    assert load_config(Path("gateway.yaml"), text=BASE, env={}).fleet is None


def test_fleet_mistakes_are_located() -> None:
    text = BASE + (
        "fleet:\n"
        "  nats: [http://x:1]\n"
        "  name: 'a.b'\n"
        "  quota: everyone\n"
        "  quota_share: 2\n"
        "  retention: forever\n"
        "  webhook: relay\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(Path("/etc/gw/gateway.yaml"), text=text, env={})
    lines = [str(p) for p in err.value.problems]
    assert any(line.startswith("/etc/gw/gateway.yaml:4:") and "nats://HOST:PORT" in line for line in lines), (
        lines
    )
    assert any(line.startswith("/etc/gw/gateway.yaml:5:") and "letters, digits" in line for line in lines)
    assert any(line.startswith("/etc/gw/gateway.yaml:6:") for line in lines)
    assert any(line.startswith("/etc/gw/gateway.yaml:7:") for line in lines)
    assert any(line.startswith("/etc/gw/gateway.yaml:8:") for line in lines)
    assert any(line.startswith("/etc/gw/gateway.yaml:9:") and "webhooks" in line for line in lines), lines


RELAY = """\
listen: 127.0.0.1:8443
webhook_secret: ${SECRET}
fleet: {nats: [nats://127.0.0.1:4222], name: acme}
"""


def test_relay_yaml() -> None:
    config = load_relay_config(Path("relay.yaml"), text=RELAY, env={"SECRET": "s3"})
    assert config.secrets() == ("s3",) and config.fleet.name == "acme" and config.port == 8443
    assert config.max_body_bytes == 1_048_576


@pytest.mark.parametrize(
    ("text", "where", "needle"),
    [
        (RELAY.replace("webhook_secret: ${SECRET}\n", ""), ":1:", "webhook_secret is required"),
        (RELAY.replace("127.0.0.1:8443", "0.0.0.0:8443"), ":1:", "reaches beyond this machine"),
        (RELAY + "rate_limit: -1\n", ":4:", "rate_limit"),
        (RELAY + "gatways: [a]\n", ":4:", "did you mean"),
        (RELAY + "gateways: [press_1, press.1]\n", ":4:", "e.g. id: 'press_1'"),
    ],
)
def test_relay_yaml_mistakes(text: str, where: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_relay_config(Path("relay.yaml"), text=text, env={"SECRET": "s3"})
    lines = [str(p) for p in err.value.problems]
    assert any(line.startswith("relay.yaml" + where) and needle in line for line in lines), lines


def test_headers_round_trip_and_msg_id() -> None:
    headers = {
        "X-MW-Signature": "t=1,nonce=n,signature=" + "a" * 64,
        "Content-Type": "application/json",
        "Host": "relay",
        "Content-Length": "12",
        "X-Evil": "a\r\nb",
    }
    encoded = encode_headers(headers, "/webhooks/mobility-work", "line1:k")
    assert encoded["Nats-Msg-Id"] == "line1:k"
    original, path = decode_headers(encoded)
    assert path == "/webhooks/mobility-work"
    assert original == {"x-mw-signature": headers["X-MW-Signature"], "content-type": "application/json"}
    long = msg_id("line1", "k" * 500)
    assert len(long) < 100 and long.startswith("line1:sha256:")
    assert msg_id("line1", "k" * 500) == long


@pytest.mark.parametrize(
    ("gateway_id", "instead"), [("press.1", "press_1"), ("press 1", "press_1"), ("Presse-Nº1", "Presse-N_1")]
)
def test_a_fleet_gateway_id_must_be_its_own_subject_token(gateway_id: str, instead: str) -> None:
    """Before: `press.1` and `press_1` both became the subject token, consumer and status key `press_1`, so
    each relayed webhook reached only one of the two gateways and their heartbeats overwrote each other."""
    text = (
        f"gateway:\n  id: '{gateway_id}'\ncmms: {{kind: dry_run}}\nfleet:\n  nats: [nats://10.0.0.5:4222]\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(Path("/etc/gw/gateway.yaml"), text=text, env={})
    (problem,) = [str(p) for p in err.value.problems]
    assert problem.startswith("/etc/gw/gateway.yaml:2:7:"), problem
    assert "letters, digits, _ and -" in problem and f"'{instead}'" in problem
    # without fleet: the id only names this gateway: any text is fine
    assert load_config(Path("gateway.yaml"), text=text.split("fleet:")[0], env={}).gateway.id == gateway_id
    ok = text.replace(f"'{gateway_id}'", "press_1")
    assert load_config(Path("gateway.yaml"), text=ok, env={}).gateway.id == "press_1"
