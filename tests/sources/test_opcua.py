"""OPC UA source against a real asyncua server (gateway.sim.plc) on loopback."""

from __future__ import annotations

import datetime as dt
import logging
import math
from pathlib import Path
from typing import Any

import pytest
from asyncua.client.client import Client
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.core.samples import LinkState, Quality
from gateway.sim.plc import NAMESPACE_URI, run_opcua_press
from gateway.sources.opcua import OpcuaConnector
from gateway.sources.registry import build_source
from gateway.sources.schema import OpcuaSource
from tests.sources.conftest import Collector, running

FAST = {"publishing_interval": 0.05, "reconnect_delay": 0.05, "reconnect_max_delay": 0.5, "timeout": 2}


def source(url: str, signals: dict[str, Any], tmp_path: Path, **options: Any) -> OpcuaConnector:
    config = OpcuaSource.model_validate(
        {"protocol": "opcua", "url": url, **FAST, **options, "signals": signals}
    )
    built = build_source("press", config, state_dir=tmp_path)
    assert isinstance(built, OpcuaConnector)
    return built


def _value(collector: Collector, signal: str, value: Any) -> bool:
    return any(s.value == value for s in collector.good(signal))


async def test_node_ids_in_every_form_and_browse_paths(collector: Collector, tmp_path: Path) -> None:
    async with run_opcua_press(simulate=False) as plc:
        await plc.write("StrokeCounter", 1234)
        src = source(
            plc.url,
            {
                "strokes": "ns=2;s=Press1.StrokeCounter",
                "strokes_nsu": f"nsu={NAMESPACE_URI};s=Press1.StrokeCounter",
                "strokes_path": {
                    "browse_path": "0:Objects/2:Press1/2:StrokeCounter",
                    "sampling_interval": "20ms",
                },
                "running": {"browse_path": "2:Press1/2:Running"},
                "server_state": "i=2259",  # numeric id, namespace 0: Server_ServerStatus_State (an enum: int)
                "missing": "ns=2;s=Press1.NoSuchThing",
            },
            tmp_path,
        )
        async with running(src, collector):
            await collector.wait_for(lambda: _value(collector, "press.strokes_path", 1234), "first values")
            await plc.write("StrokeCounter", 1235)
            for name in ("strokes", "strokes_nsu", "strokes_path"):
                await collector.wait_for(
                    lambda n=name: _value(collector, f"press.{n}", 1235), f"{name} change"
                )
            await collector.wait_for(lambda: bool(collector.good("press.server_state")), "server state")
    assert collector.good("press.strokes")[0].value == 1234
    assert collector.good("press.running")[0].value is True
    assert collector.good("press.server_state")[0].value == 0  # Running
    missing = collector.of("press.missing")
    assert missing and all(s.quality is Quality.BAD for s in missing)
    assert "BadNodeIdUnknown" in missing[0].reason
    assert src.stats.link is LinkState.UP and src.stats.reads >= 4


async def test_server_restart_subscription_comes_back_by_itself(
    collector: Collector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.sources")
    async with run_opcua_press(simulate=False) as plc:
        await plc.write("StrokeCounter", 10)
        src = source(plc.url, {"strokes": "ns=2;s=Press1.StrokeCounter"}, tmp_path)
        async with running(src, collector):
            await collector.wait_for(lambda: _value(collector, "press.strokes", 10), "first value")
            await plc.stop()
            await collector.wait_for(
                lambda: (s := collector.last("press.strokes")) is not None and s.quality is Quality.BAD,
                "marked bad",
            )
            assert src.stats.link is LinkState.DOWN
            await plc.start()
            await plc.write("StrokeCounter", 11)
            await collector.wait_for(lambda: _value(collector, "press.strokes", 11), "value after restart")
            await plc.write("StrokeCounter", 12)
            await collector.wait_for(
                lambda: _value(collector, "press.strokes", 12), "next change after restart"
            )
    assert src.stats.link is LinkState.UP and src.stats.reconnects == 1
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("gateway.sources")]
    assert [lvl for lvl, _ in lines if lvl >= logging.INFO] == [logging.ERROR, logging.INFO], lines
    # nothing GOOD between the loss and the recovery: rules never see a stale value as fresh
    bad_at = next(i for i, s in enumerate(collector.samples) if s.quality is Quality.BAD)
    assert collector.samples[bad_at + 1].value in (10, 11)  # first after recovery: the server's current value


async def test_garbage_values_are_bad_with_a_reason(
    collector: Collector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.sources")
    async with run_opcua_press(simulate=False) as plc:
        signals = {
            "temp": {"node": "ns=2;s=Press1.Temperature", "type": "number"},
            "faults": "ns=2;s=Press1.FaultWord",
            "recipe_as_number": {
                "node": "ns=2;s=Press1.Recipe",
                "type": "number",
            },  # a string where a number was expected
            "recipe": "ns=2;s=Press1.Recipe",
        }
        src = source(plc.url, signals, tmp_path)
        async with running(src, collector):
            await collector.wait_for(lambda: bool(collector.good("press.temp")), "first value")
            await plc.write("Temperature", math.nan)
            await collector.wait_for(
                lambda: any(s.reason == "value is NaN" for s in collector.of("press.temp")), "NaN"
            )
            await plc.write("Temperature", [1.0, 2.0], variant_type="Double")  # an array
            await collector.wait_for(
                lambda: any("list" in s.reason for s in collector.of("press.temp")), "array"
            )
            await plc.write("FaultWord", 3, status="BadSensorFailure")
            await collector.wait_for(
                lambda: any("BadSensorFailure" in s.reason for s in collector.of("press.faults")), "status"
            )
            await plc.write("Temperature", 71.0)
            await collector.wait_for(lambda: _value(collector, "press.temp", 71.0), "good again")
    assert collector.of("press.recipe_as_number")[0].reason == "expected a number, got string 'PART-A'"
    assert collector.good("press.recipe")[0].value == "PART-A"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("press.temp" in w and "NaN" in w for w in warnings)
    assert any("press.faults" in w and "BadSensorFailure" in w for w in warnings)
    assert src.stats.link is LinkState.UP


def _make_certificate(folder: Path, name: str, uri: str) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.der", folder / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_encrypted_endpoint_with_certificates_made_by_the_test(
    collector: Collector, tmp_path: Path
) -> None:
    server_cert, server_key = _make_certificate(tmp_path, "server", "urn:freeopcua:python:server")
    client_cert, client_key = _make_certificate(tmp_path, "client", "urn:test:mw-gateway-client")
    async with run_opcua_press(
        simulate=False, certificate=server_cert, private_key=server_key, users={"op": "s3cret"}
    ) as plc:
        await plc.write("StrokeCounter", 777)
        src = source(
            plc.url,
            {"strokes": "ns=2;s=Press1.StrokeCounter"},
            tmp_path,
            security="Basic256Sha256,SignAndEncrypt",
            certificate=str(client_cert),
            private_key=str(client_key),
            server_certificate=str(server_cert),
            username="op",
            password="s3cret",
        )
        async with running(src, collector):
            await collector.wait_for(
                lambda: _value(collector, "press.strokes", 777), "a value over the encrypted channel"
            )


async def test_generated_client_certificate_and_rejected_password(
    collector: Collector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.sources")
    server_cert, server_key = _make_certificate(tmp_path, "server", "urn:freeopcua:python:server")
    async with run_opcua_press(
        simulate=False, certificate=server_cert, private_key=server_key, users={"op": "s3cret"}
    ) as plc:
        await plc.write("StrokeCounter", 5)
        good = source(
            plc.url,
            {"strokes": "ns=2;s=Press1.StrokeCounter"},
            tmp_path,
            security="Basic256Sha256,SignAndEncrypt",
            username="op",
            password="s3cret",
        )
        async with running(good, collector):
            await collector.wait_for(
                lambda: _value(collector, "press.strokes", 5), "value with a generated certificate"
            )
        generated = tmp_path / "opcua" / "press-cert.der"
        assert generated.exists()
        assert any(str(generated) in r.getMessage() for r in caplog.records), caplog.records
        wrong = Collector()
        bad = source(
            plc.url,
            {"strokes": "ns=2;s=Press1.StrokeCounter"},
            tmp_path,
            security="Basic256Sha256,SignAndEncrypt",
            username="op",
            password="wrong-password",
        )
        async with running(bad, wrong):
            await wrong.wait_for(lambda: bool(wrong.samples), "a bad sample")
        assert wrong.samples[0].quality is Quality.BAD and "link down" in wrong.samples[0].reason
    assert all(
        "wrong-password" not in r.getMessage() and "s3cret" not in r.getMessage() for r in caplog.records
    )


async def test_namespace_array_is_read_once_per_pass(
    collector: Collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`nsu=` ids and namespace aliases resolve from one Read of the server's namespace array at connect, not
    one Read per signal and per path part."""
    reads = 0
    read_array = Client.get_namespace_array

    async def counted(client: Client) -> list[str]:
        nonlocal reads
        reads += 1
        return await read_array(client)

    monkeypatch.setattr(Client, "get_namespace_array", counted)
    async with run_opcua_press(simulate=False) as plc:
        await plc.write("StrokeCounter", 1234)
        src = source(
            plc.url,
            {
                "strokes": f"nsu={NAMESPACE_URI};s=Press1.StrokeCounter",
                "running": {"browse_path": "sim:Press1/sim:Running"},
                "strokes_path": {"browse_path": "sim:Press1/sim:StrokeCounter"},
            },
            tmp_path,
            namespaces={"sim": NAMESPACE_URI},
        )
        async with running(src, collector):
            await collector.wait_for(
                lambda: all(collector.good(f"press.{n}") for n in ("strokes", "running", "strokes_path")),
                "every signal",
            )
    assert collector.good("press.strokes")[0].value == 1234
    assert collector.good("press.strokes_path")[0].value == 1234
    assert collector.good("press.running")[0].value is True
    assert reads == 1
