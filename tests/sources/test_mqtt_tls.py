"""MQTT over TLS (`mqtts://`) against a real mosquitto broker with a CA, a server certificate, required client
certificates and a password file, all made by the test."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.cli import main as cli_main
from gateway.core.samples import LinkState, Quality
from gateway.sources import sparkplug_codec
from gateway.sources.mqtt import MqttConnector
from gateway.sources.registry import build_source
from gateway.sources.schema import MqttSource
from tests.pki import make_ca, make_leaf, write_cert, write_key
from tests.sources.conftest import Collector, running, until

FAST = {"reconnect_delay": 0.05, "reconnect_max_delay": 0.2, "keepalive": 5, "timeout": 3}
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
PASSWORD = "Tls-s3cret-pw"  # the test broker's password, checked never to reach the log
WRONG_PASSWORD = "Wr0ng-pw-guess"
CLOSED_IN_HANDSHAKE = "the broker closed the connection before accepting it: failed to receive on socket"


# ---------------------------------------------------------------- a small PKI


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA the broker does not know
    rogue_cert: Path  # a client certificate signed by other_ca
    rogue_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, ca_key = make_ca("mw-gateway test CA")
    server, server_key = make_leaf(
        "localhost",
        ca,
        ca_key,
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client, client_key = make_leaf("gateway", ca, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH)
    other_ca, other_ca_key = make_ca("some other CA")
    rogue, rogue_key = make_leaf("gateway", other_ca, other_ca_key, ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(
        ca=write_cert(folder / "ca.pem", ca),
        server_cert=write_cert(folder / "server.pem", server),
        server_key=write_key(folder / "server.key", server_key),
        client_cert=write_cert(folder / "client.pem", client),
        client_key=write_key(folder / "client.key", client_key),
        other_ca=write_cert(folder / "other-ca.pem", other_ca),
        rogue_cert=write_cert(folder / "rogue.pem", rogue),
        rogue_key=write_key(folder / "rogue.key", rogue_key),
    )


# ---------------------------------------------------------------- the broker


@dataclass
class TlsBroker:
    port: int
    process: asyncio.subprocess.Process


def _password_file(path: Path, users: dict[str, str]) -> Path:
    path.write_text("")
    for user, password in users.items():
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(path), user, password], check=True, capture_output=True)
    return path


@pytest.fixture
async def broker(free_port: Callable[[], int], tmp_path: Path, pki: Pki) -> AsyncIterator[TlsBroker]:
    port = free_port()
    passwords = _password_file(tmp_path / "passwd", {"gateway": PASSWORD, "publisher": PASSWORD})
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        "per_listener_settings false\n"
        "persistence false\n"
        "user root\n"  # only read when started as root: keep root so the files in tmp_path stay readable
        f"listener {port} 127.0.0.1\n"
        f"cafile {pki.ca}\n"
        f"certfile {pki.server_cert}\n"
        f"keyfile {pki.server_key}\n"
        "require_certificate true\n"
        f"password_file {passwords}\n"
        "allow_anonymous false\n"
    )
    process = await asyncio.create_subprocess_exec(
        MOSQUITTO, "-c", str(config), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        for _ in range(250):
            if process.returncode is not None:
                err = await process.stderr.read() if process.stderr else b""
                raise RuntimeError(f"mosquitto exited: {err.decode(errors='replace')}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.02)
        else:
            raise RuntimeError("mosquitto did not start")
        yield TlsBroker(port, process)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
            await process.wait()


def source(broker: TlsBroker, pki: Pki, **options: Any) -> MqttConnector:
    tls = {
        "ca": str(pki.ca),
        "certificate": str(pki.client_cert),
        "private_key": str(pki.client_key),
        "username": "gateway",
        "password": PASSWORD,
    }
    config = MqttSource.model_validate(
        {
            "protocol": "mqtt",
            "url": f"mqtts://127.0.0.1:{broker.port}",
            **FAST,
            **{k: v for k, v in {**tls, **options}.items() if v is not None},
            "signals": {
                "temp": "plant/oven/temp",
                "humidity": {"topic": "plant/oven/json", "json": "data.humidity"},
            },
        }
    )
    built = build_source("oven", config, gateway_id="test")
    assert isinstance(built, MqttConnector)
    return built


def publisher(broker: TlsBroker, pki: Pki) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier="test-publisher",
        username="publisher",
        password=PASSWORD,
        tls_params=aiomqtt.TLSParameters(
            ca_certs=str(pki.ca), certfile=str(pki.client_cert), keyfile=str(pki.client_key)
        ),
    )


# ---------------------------------------------------------------- tests


async def test_tls_with_client_certificate_and_password_delivers_samples(
    broker: TlsBroker, pki: Pki, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    src = source(broker, pki)
    async with running(src, collector):
        await until(lambda: src.stats.link is LinkState.UP, "connected over TLS")
        async with publisher(broker, pki) as pub:
            await pub.publish("plant/oven/temp", "71.5", qos=1)
            await pub.publish("plant/oven/json", '{"data": {"humidity": 40}}', qos=1)
        await collector.wait_for(
            lambda: bool(collector.good("oven.temp")) and bool(collector.good("oven.humidity")), "samples"
        )
    assert collector.good("oven.temp")[0].value == 71.5
    assert collector.good("oven.humidity")[0].value == 40
    assert src.stats.errors == 0 and src.stats.reconnects == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("case", "options", "expected"),
    [
        # the broker requires a certificate: the TLS handshake is refused
        # (the reason is the TLS alert, or an EOF when the broker's close overtakes it)
        ("no client certificate", {"certificate": None, "private_key": None}, CLOSED_IN_HANDSHAKE),
        # a client certificate the broker's CA did not sign
        ("unknown client certificate", {"certificate": "rogue"}, CLOSED_IN_HANDSHAKE),
        # the certificate is fine, the broker refuses the login in its CONNACK
        ("wrong password", {"password": WRONG_PASSWORD}, "refused the connection: [code:135] not authorized"),
        # the broker's certificate is not signed by the CA the gateway trusts
        ("untrusted broker", {"ca": "other_ca"}, "certificate verify failed"),
    ],
)
async def test_refused_connection_is_a_bad_link_with_one_clear_error_and_no_secret(
    broker: TlsBroker,
    pki: Pki,
    collector: Collector,
    caplog: pytest.LogCaptureFixture,
    case: str,
    options: dict[str, Any],
    expected: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    if options.get("ca") == "other_ca":
        options = {**options, "ca": str(pki.other_ca)}
    if options.get("certificate") == "rogue":
        options = {**options, "certificate": str(pki.rogue_cert), "private_key": str(pki.rogue_key)}
    src = source(broker, pki, **options)
    async with running(src, collector):
        await collector.wait_for(lambda: bool(collector.samples), "a bad sample")
        await until(lambda: src.stats.errors >= 3, "a few retries")  # retried, and still one ERROR line
    assert src.stats.link is LinkState.DOWN and src.stats.reconnects == 0
    assert {s.signal for s in collector.samples} == {"oven.temp", "oven.humidity"}
    assert all(s.quality is Quality.BAD and s.reason.startswith("link down") for s in collector.samples)
    # The gateway's own ERROR lines. (When the broker drops the connection during paho's connect, aiomqtt
    # sometimes also gets asyncio to log "Exception in callback ...add_writer(...)": an add_writer queued
    # from paho's connect thread runs after the socket was closed. That is aiomqtt's race, not ours.)
    errors = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("gateway")
    ]
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"mqtt source oven (mqtts://127.0.0.1:{broker.port}): link down: ")
    assert expected in errors[0].lower(), (case, errors[0])
    assert [r for r in caplog.records if r.levelno == logging.INFO and r.name.startswith("gateway")] == []
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert PASSWORD not in text and WRONG_PASSWORD not in text, (case, text)
        assert "PRIVATE KEY" not in text


async def test_sparkplug_browse_logs_in_with_the_command_line_options(
    broker: TlsBroker, pki: Pki, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`browse mqtts://... --sparkplug GROUP` connects with --ca, --certificate, --private-key and --username
    (the password from $MW_MQTT_PASSWORD); without the login the broker refuses it, said on stderr."""
    monkeypatch.setenv("MW_MQTT_PASSWORD", PASSWORD)
    tls = ["--ca", str(pki.ca), "--certificate", str(pki.client_cert), "--private-key", str(pki.client_key)]
    url = f"mqtts://127.0.0.1:{broker.port}"
    args = ["browse", url, "--sparkplug", "Plant1", "--seconds", "1.5", "--yaml", "line3", *tls]
    birth = sparkplug_codec.encode([("Temperature", 1, sparkplug_codec.DataType.DOUBLE, 21.5)], seq=0)
    browsing = asyncio.create_task(asyncio.to_thread(cli_main, [*args, "--username", "gateway"]))
    async with publisher(broker, pki) as pub:
        while not browsing.done():  # births are not retained: publish them while it listens
            await pub.publish("spBv1.0/Plant1/NBIRTH/Press1", birth, qos=1)
            await asyncio.sleep(0.05)
    assert await browsing == 0
    out = capsys.readouterr().out
    assert "  press1_temperature: {node: Press1, metric: Temperature}  # Double\n" in out
    assert "  username: gateway\n  password: ${MW_MQTT_PASSWORD}\n" in out
    assert f'  ca: "{pki.ca}"\n' in out
    assert PASSWORD not in out
    # the login is what the broker checks: without it, refused (exit 1, the reason on stderr)
    assert await asyncio.to_thread(cli_main, args) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"{url}: ") and "not authorized" in captured.err.lower(), captured.err
