"""Which CAs the CMMS client trusts: the system's trust store by default (read on demand when it is a hashed
directory), `ca:` alone when given, certifi only without any system store. Each case against a real TLS
server on loopback whose certificate is signed by a plant CA made here (not in certifi's bundle)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import certifi
import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.cmms.http import make_client
from gateway.cmms.schema import HttpClientOptions
from gateway.cmms.trust import system_trust
from tests.pki import make_ca, make_leaf, write_cert, write_key

OPENSSL_CAFILE, OPENSSL_CAPATH = "/nonexistent/openssl/cert.pem", "/nonexistent/openssl/certs"
CERTIFI = Path(certifi.where()).read_text()
END = "-----END CERTIFICATE-----\n"


@dataclass(frozen=True)
class Plant:
    ca: Path  # the plant CA's certificate (PEM)
    server: ssl.SSLContext  # a server certificate for 127.0.0.1 signed by it


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Plant:
    folder = tmp_path_factory.mktemp("plant-pki")
    ca, ca_key = make_ca("mw-gateway test plant CA")
    leaf, key = make_leaf(
        "cmms.plant.test",
        ca,
        ca_key,
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(write_cert(folder / "server.pem", leaf), write_key(folder / "server.key", key))
    return Plant(write_cert(folder / "ca.pem", ca), server)


def _hashed_dir(folder: Path, *certs: Path) -> Path:
    """A certificate directory as update-ca-certificates leaves it: PEM files plus <hash>.0 links."""
    folder.mkdir()
    for cert in certs:
        (folder / cert.name).write_bytes(cert.read_bytes())
    subprocess.run(["openssl", "rehash", str(folder)], check=True, capture_output=True)
    return folder


def _paths(cafile: str | None, capath: str | None) -> ssl.DefaultVerifyPaths:
    """ssl.get_default_verify_paths() on a system whose OpenSSL defaults are these (None: absent)."""
    return ssl.DefaultVerifyPaths(
        cafile, capath, "SSL_CERT_FILE", cafile or OPENSSL_CAFILE, "SSL_CERT_DIR", capath or OPENSSL_CAPATH
    )


@pytest.fixture
async def server(plant: Plant) -> AsyncIterator[str]:
    """An HTTPS server on a free loopback port answering every request `200 ok`; yields its URL."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass  # a client that refused our certificate
        finally:
            writer.close()

    srv = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=plant.server)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        srv.close()
        await srv.wait_closed()


async def _get(url: str, verify: ssl.SSLContext | bool) -> str:
    async with httpx.AsyncClient(verify=verify, timeout=5) as client:
        return (await client.get(url + "/")).text


async def test_the_system_store_steered_by_ssl_cert_file_verifies_a_plant_ca(
    plant: Plant,
    server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(plant.ca))
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "empty"))
    with caplog.at_level(logging.INFO, logger="gateway.cmms.http"):
        client = make_client(HttpClientOptions(), base_url=server)
    async with client:
        assert (await client.get("/")).text == "ok"
    assert caplog.messages == [
        f"{server}: TLS certificates verified with the system trust store ({plant.ca})"
    ]


async def test_the_system_store_steered_by_ssl_cert_dir_verifies_a_plant_ca(
    plant: Plant, server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_DIR", str(_hashed_dir(tmp_path / "certs", plant.ca)))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-bundle.pem"))
    async with make_client(HttpClientOptions(), base_url=server) as client:
        assert (await client.get("/")).text == "ok"


async def test_a_store_without_the_plant_ca_refuses_the_server(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())  # a store, just not with the plant CA
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    async with make_client(HttpClientOptions(), base_url=server) as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get("/")


async def test_ca_trusts_that_file_only(
    plant: Plant, server: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())  # the system store does not know the plant CA
    with caplog.at_level(logging.INFO, logger="gateway.cmms.http"):
        client = make_client(HttpClientOptions(ca=str(plant.ca)), base_url=server)
    async with client:
        assert (await client.get("/")).text == "ok"
    assert caplog.messages == [f"{server}: TLS certificates verified with the CA file {plant.ca} (ca:)"]


async def test_verify_tls_false_verifies_nothing(server: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.cmms.http"):
        client = make_client(HttpClientOptions(verify_tls=False), base_url=server)
    async with client:
        assert (await client.get("/")).text == "ok"
    assert caplog.messages == [
        f"{server}: TLS certificates verified with nothing: certificates are NOT verified (verify_tls: false)"
    ]


async def test_openssl_default_directory_is_read_on_demand(plant: Plant, server: str, tmp_path: Path) -> None:
    """Debian's layout: the bundle and the hashed directory hold the same CAs. Nothing is loaded at start;
    the plant CA is read from the directory at the handshake."""
    certs = _hashed_dir(tmp_path / "certs", plant.ca)
    trust = system_trust(_paths(str(plant.ca), str(certs)))
    assert trust.description == f"the system trust store ({certs}, read on demand)"
    assert isinstance(trust.verify, ssl.SSLContext)
    assert trust.verify.cert_store_stats()["x509_ca"] == 0
    assert await _get(server, trust.verify) == "ok"
    assert trust.verify.cert_store_stats()["x509_ca"] == 1


async def test_a_ca_appended_to_the_bundle_by_hand_is_still_trusted(
    plant: Plant, server: str, tmp_path: Path
) -> None:
    """The bundle holds more certificates than the directory: the bundle is loaded, as OpenSSL would."""
    other = tmp_path / "other.pem"
    other.write_text(CERTIFI[: CERTIFI.index(END) + len(END)])  # one public CA: directory and bundle
    certs = _hashed_dir(tmp_path / "certs", other)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(other.read_bytes() + plant.ca.read_bytes())
    trust = system_trust(_paths(str(bundle), str(certs)))
    assert trust.description == f"the system trust store ({bundle} and {certs})"
    assert isinstance(trust.verify, ssl.SSLContext)
    assert trust.verify.cert_store_stats()["x509_ca"] == 2
    assert await _get(server, trust.verify) == "ok"


async def test_certifi_only_when_the_system_has_no_store(server: str, tmp_path: Path) -> None:
    """No bundle, and a certificate directory without certificates (a container without ca-certificates)."""
    (tmp_path / "certs").mkdir()
    trust = system_trust(_paths(None, str(tmp_path / "certs")))
    assert trust.description == (
        f"certifi's CA bundle (no system trust store: neither {OPENSSL_CAFILE} nor {tmp_path / 'certs'}"
        " holds certificates; install ca-certificates)"
    )
    assert isinstance(trust.verify, ssl.SSLContext)
    assert trust.verify.cert_store_stats()["x509_ca"] == CERTIFI.count("-----BEGIN CERTIFICATE-----")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await _get(server, trust.verify)
