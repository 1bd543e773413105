"""Connecting to NATS and making sure the fleet's stream and buckets exist (idempotent)."""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any

from gateway.fleet import names
from gateway.fleet.accounts import inbox_prefix
from gateway.fleet.config import BusSection

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue

log = logging.getLogger(__name__)


def _tls_context(bus: BusSection) -> ssl.SSLContext | None:
    if bus.tls is None and not any(u.startswith(("tls://", "wss://")) for u in bus.nats):
        return None
    ctx = ssl.create_default_context(cafile=bus.tls.ca if bus.tls and bus.tls.ca else None)
    if bus.tls and bus.tls.cert and bus.tls.key:
        ctx.load_cert_chain(bus.tls.cert, bus.tls.key)
    return ctx


async def connect(bus: BusSection, *, name: str, reconnect: bool = True) -> Client:
    """An outbound connection to the cluster; it reconnects by itself (forever) when `reconnect`."""
    import nats

    async def _error(exc: Exception) -> None:
        log.debug("nats: %s", exc)

    client: list[Client] = []

    async def _disconnected() -> None:
        if client and not client[0].is_closed:  # not our own close()
            log.warning("fleet: connection to NATS lost; reconnecting")

    async def _reconnected() -> None:
        log.info("fleet: connected to NATS again")

    options: dict[str, Any] = {
        "servers": list(bus.nats),
        "name": name,
        "inbox_prefix": inbox_prefix(name),  # own replies only: the accounts allow no other inbox
        "connect_timeout": bus.connect_timeout,
        "allow_reconnect": reconnect,
        "max_reconnect_attempts": -1 if reconnect else 0,
        "reconnect_time_wait": 0.5,
        "error_cb": _error,
        "disconnected_cb": _disconnected,
        "reconnected_cb": _reconnected,
    }
    tls = _tls_context(bus)
    if tls is not None:
        options["tls"] = tls
    if bus.credentials:
        options["user_credentials"] = bus.credentials
    if bus.user is not None and bus.password is not None:
        options["user"], options["password"] = bus.user, bus.password.get_secret_value()
    nc = await nats.connect(**options)
    client.append(nc)
    return nc


async def ensure_stream(js: JetStreamContext, bus: BusSection) -> None:
    """The webhook stream: limits retention (every gateway's consumer keeps its own position), max age =
    `retention`, de-duplication by Nats-Msg-Id over `dedupe_window`, file storage, `replicas` copies."""
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    config = StreamConfig(
        name=names.stream(bus.name),
        subjects=[names.subject_prefix(bus.name) + ".>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=bus.replicas,
        max_age=bus.retention,
        duplicate_window=bus.dedupe_window,
        discard=DiscardPolicy.OLD,
    )
    try:
        await js.stream_info(config.name or "")
    except NotFoundError:
        await js.add_stream(config)
        log.info("fleet: stream %s created (%d replicas)", config.name, bus.replicas)


async def ensure_bucket(js: JetStreamContext, bus: BusSection, bucket: str, *, history: int = 1) -> KeyValue:
    """The bucket, created when missing (two gateways creating it at once: the loser opens the winner's)."""
    from nats.js.api import KeyValueConfig, StorageType
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        pass
    try:
        return await js.create_key_value(
            KeyValueConfig(bucket=bucket, history=history, replicas=bus.replicas, storage=StorageType.FILE)
        )
    except Exception as exc:
        try:
            return await js.key_value(bucket)  # created meanwhile by another member
        except BucketNotFoundError:
            raise exc from None
