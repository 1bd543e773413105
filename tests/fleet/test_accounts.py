"""The documented account set-up, on a real server over mutual TLS with per-role users: a gateway consumes
only its own subject and writes only its own status key; the relay only publishes."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import nats.errors
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from nats.js.api import ConsumerConfig

from gateway.fleet import names
from gateway.fleet.accounts import accounts_config
from gateway.fleet.bus import ensure_bucket, ensure_stream
from gateway.fleet.config import BusSection, TlsSection
from gateway.fleet.consumer import FleetConsumer
from gateway.fleet.status import Heartbeat, read_fleet
from gateway.sim.nats_cluster import NatsCluster
from tests.pki import make_ca, make_leaf, write_cert, write_key

FLEET = "acme"
DENIED = nats.errors.TimeoutError  # a request on a subject the user may not publish to is dropped
PASSWORDS = {"line1": "pw-line1", "line2": "pw-line2"}


@pytest.fixture
def secured(tmp_path: Path) -> AsyncIterator[tuple[NatsCluster, TlsSection]]:  # type: ignore[misc]
    ca, ca_key = make_ca("fleet test CA")
    server, server_key = make_leaf(
        "localhost",
        ca,
        ca_key,
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client, client_key = make_leaf("line-client", ca, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH)
    pki = tmp_path / "pki"
    pki.mkdir()
    files = {
        "ca": write_cert(pki / "ca.pem", ca),
        "cert": write_cert(pki / "server.pem", server),
        "key": write_key(pki / "server.key", server_key),
        "ccert": write_cert(pki / "client.pem", client),
        "ckey": write_key(pki / "client.key", client_key),
    }
    tls = (
        f'tls {{\n  cert_file: "{files["cert"]}"\n  key_file: "{files["key"]}"\n'
        f'  ca_file: "{files["ca"]}"\n  verify: true\n}}\n'
    )
    accounts = accounts_config(
        FLEET, gateways=PASSWORDS, relay_password="pw-relay", admin_password="pw-admin"
    )
    cluster = NatsCluster(tmp_path / "nats", nodes_count=1, accounts=accounts, extra=tls).start()
    client_tls = TlsSection(ca=str(files["ca"]), cert=str(files["ccert"]), key=str(files["ckey"]))
    try:
        yield cluster, client_tls
    finally:
        cluster.stop()


def _bus(cluster: NatsCluster, tls: TlsSection | None, user: str, password: str) -> BusSection:
    urls = tuple(u.replace("nats://", "tls://") for u in cluster.urls)
    return BusSection(nats=urls, name=FLEET, user=user, password=password, tls=tls, replicas=1)


@contextlib.asynccontextmanager
async def client(bus: BusSection, name: str) -> AsyncIterator[tuple[object, list[str]]]:
    import nats

    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    from gateway.fleet.accounts import inbox_prefix
    from gateway.fleet.bus import _tls_context

    nc = await nats.connect(
        servers=list(bus.nats),
        user=bus.user,
        password=bus.password.get_secret_value() if bus.password else None,
        tls=_tls_context(bus),
        name=name,
        inbox_prefix=inbox_prefix(name),
        error_cb=on_error,
        allow_reconnect=False,
    )
    try:
        yield nc, errors
    finally:
        await nc.close()


async def test_each_role_can_do_only_its_part(secured: tuple[NatsCluster, TlsSection]) -> None:
    cluster, tls = secured
    # No client certificate: the server refuses the TLS handshake.
    with pytest.raises((OSError, nats.errors.Error)):
        async with client(_bus(cluster, TlsSection(ca=tls.ca), "line1", "pw-line1"), "line1"):
            pass
    admin = _bus(cluster, tls, "admin", "pw-admin")
    async with client(admin, "admin") as (nc, _):
        js = nc.jetstream(timeout=2)  # type: ignore[attr-defined]
        await ensure_stream(js, admin)
        await ensure_bucket(js, admin, names.status_bucket(FLEET))
        await ensure_bucket(js, admin, names.quota_bucket(FLEET))

    relay_bus = _bus(cluster, tls, "relay", "pw-relay")
    async with client(relay_bus, "relay") as (rnc, rerrors):
        rjs = rnc.jetstream(timeout=0.5)  # type: ignore[attr-defined]
        for gw in ("line1", "line2"):
            ack = await rjs.publish(names.subject(FLEET, gw), b"{}", headers={"Nats-Msg-Id": gw})
            assert ack.seq
        # The relay may not read the webhooks back, nor manage the stream.
        await rnc.subscribe(names.subject(FLEET, "line1"))  # type: ignore[attr-defined]
        with pytest.raises(DENIED):
            await rjs.delete_stream(names.stream(FLEET))
        await asyncio.sleep(0.2)
        assert any("permissions violation" in e.lower() for e in rerrors), rerrors

    line1 = _bus(cluster, tls, "line1", "pw-line1")
    async with client(line1, "line1") as (nc1, errors1):
        js1 = nc1.jetstream(timeout=0.5)  # type: ignore[attr-defined]
        got: list[bytes] = []

        async def handle(headers: dict[str, str], body: bytes, path: str, at: float | None) -> int:
            got.append(body)
            return 200

        own = FleetConsumer(js1, line1, "line1", handle)
        await own.ensure()
        sub = await js1.pull_subscribe_bind(durable=own.durable, stream=own.stream)
        assert await own.drain_batch(sub) == 1 and got == [b"{}"]
        # line2's messages: neither through line2's consumer, nor a consumer of its own filtering them.
        other = FleetConsumer(js1, line1, "line2", handle)
        with pytest.raises(DENIED):
            await other.ensure()
        with pytest.raises(DENIED):
            await js1.add_consumer(  # its own consumer's name, line2's subject
                names.stream(FLEET),
                ConsumerConfig(
                    name="gw_line1", durable_name="gw_line1", filter_subject=names.subject(FLEET, "line2")
                ),
            )
        # Writing its own status key works; line2's is refused; the fleet's status is readable.
        status = await js1.key_value(names.status_bucket(FLEET))

        async def summary() -> dict[str, object]:
            return {"state": "running"}

        await Heartbeat(status, "line1", summary, interval=15).beat()
        with pytest.raises(DENIED):
            await status.put("line2", b"{}")
        rows = await read_fleet(status)
        assert [r["gateway"] for r in rows] == ["line1"]
        # The quota: compare-and-set works for a gateway.
        quota = await js1.key_value(names.quota_bucket(FLEET))
        await quota.update("net.2026-12", b"1", last=0)
        # Forging a webhook for line2 is refused.
        with pytest.raises(DENIED):
            await js1.publish(names.subject(FLEET, "line2"), b"{}")
        await asyncio.sleep(0.2)
        assert any("permissions violation" in e.lower() for e in errors1), errors1

    line2 = _bus(cluster, tls, "line2", "pw-line2")
    async with client(line2, "line2") as (nc2, _):
        js2 = nc2.jetstream(timeout=2)  # type: ignore[attr-defined]
        got.clear()
        mine = FleetConsumer(js2, line2, "line2", handle)
        await mine.ensure()
        sub2 = await js2.pull_subscribe_bind(durable=mine.durable, stream=mine.stream)
        assert await mine.drain_batch(sub2) == 1 and got == [b"{}"]  # still there: line1 could not take it
