"""OPC UA subscriptions with asyncua, behind a small adapter: no asyncua type leaves this module.

How a source runs:

- The first connection is ours to retry (exponential backoff with jitter). Once connected, asyncua's own
  supervisor (`auto_reconnect=True`) keeps the session: it re-activates it on a new channel, or creates a new
  one and transfers or re-creates the subscription. We watch its state changes to mark the signals bad on
  loss (one ERROR) and to log the recovery (one INFO).
- One subscription per source (`publishing_interval`), monitored items grouped by sampling interval. Values
  arrive through the subscription's queue (iterator mode); when the consumer falls behind, the oldest
  notifications are dropped (DROP_OLDEST): for counters and levels, the latest value is what matters.
- Values republished after a reconnect (`replayed`) are taken only when newer than what we already emitted.
- Quality follows the status code: Good is GOOD, anything else (Uncertain, Bad) is BAD with the code's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeEvent, OpcEvent, OverflowPolicy, StatusChangeEvent
from asyncua.crypto import security_policies
from asyncua.ua.uaerrors import UaError
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from gateway.core.backoff import Backoff
from gateway.core.clock import Clock, SystemClock
from gateway.core.samples import Emit, SourceStats, Value
from gateway.sources._common import Link, Sink, quiet_library_logger
from gateway.sources.opcua_alarms import AlarmWatch
from gateway.sources.schema import OpcuaSignal, OpcuaSource

log = logging.getLogger(__name__)

_QUEUE_MAX = 10_000


class _Renumbered(Exception):
    """After asyncua's reconnect, a browse path or `nsu=` name resolves to another NodeId than the one the
    re-created subscription monitors (the server restarted with its address space numbered differently)."""


class OpcuaConnector:
    """A Source subscribed to one OPC UA server."""

    def __init__(
        self, name: str, config: OpcuaSource, *, clock: Clock | None = None, state_dir: Path | None = None
    ) -> None:
        quiet_library_logger("asyncua")
        self.name = name
        self.config = config
        self.stats = SourceStats()
        self._clock = clock or SystemClock()
        self._state_dir = state_dir or Path("./state")
        self.signals: dict[str, OpcuaSignal] = {
            f"{name}.{key}": OpcuaSignal(node=spec) if isinstance(spec, str) else spec
            for key, spec in config.signals.items()
        }
        self._what = f"opcua source {name} ({config.url})"
        self._link = Link(self._what, log, self.stats)
        self._last_ts: dict[str, float] = {}
        self._certificate_checked = False
        self._alarms = AlarmWatch(name, config.alarms, self._clock, state_dir) if config.alarms else None

    def signal_names(self) -> list[str]:
        return list(self.signals)

    # ------------------------------------------------------------ set-up

    def _certificate_paths(self) -> tuple[Path, Path, bool]:
        """(certificate, private key, generated?) for a secured connection."""
        if self.config.certificate and self.config.private_key:
            return Path(self.config.certificate), Path(self.config.private_key), False
        folder = self._state_dir / "opcua"
        return folder / f"{self.name}-cert.der", folder / f"{self.name}-key.pem", True

    async def _client(self) -> Client:
        cfg = self.config
        client = Client(
            cfg.url, timeout=cfg.timeout, auto_reconnect=True, reconnect_max_delay=cfg.reconnect_max_delay
        )
        client.application_uri = cfg.application_uri or f"urn:{socket.gethostname()}:mw-gateway:{self.name}"
        client.name = client.description = f"mw-gateway {self.name}"
        if cfg.username:
            client.set_user(cfg.username)
            client.set_password(cfg.password.get_secret_value() if cfg.password else "")
        if cfg.security and cfg.security.split(",")[0] != "None":
            policy_name, _, mode_name = cfg.security.partition(",")
            policy = getattr(security_policies, f"SecurityPolicy{policy_name.strip()}", None)
            mode = getattr(ua.MessageSecurityMode, (mode_name or "SignAndEncrypt").strip(), None)
            if policy is None or mode is None:
                raise ValueError(
                    f"unknown OPC UA security {cfg.security!r}: write e.g. Basic256Sha256,SignAndEncrypt"
                )
            cert, key, generated = self._certificate_paths()
            if generated and not self._certificate_checked:
                existed = cert.exists()
                await client.setup_self_signed_certificate(key, cert)
                self._certificate_checked = True
                if not existed:
                    log.info(
                        "%s: generated a client certificate at %s (trust it on the server)", self._what, cert
                    )
            elif not generated and cfg.application_uri is None:
                client.application_uri = _certificate_uri(cert) or client.application_uri
            await client.set_security(
                policy, str(cert), str(key), server_certificate=cfg.server_certificate, mode=mode
            )
        return client

    async def _resolve(self, client: Client, signal: OpcuaSignal) -> Node:
        if signal.node is not None:
            text = signal.node.strip()
            if text.startswith("nsu="):
                uri, _, rest = text[4:].partition(";")
                text = f"ns={await client.get_namespace_index(uri)};{rest}"
            return client.get_node(ua.NodeId.from_string(text))
        assert signal.browse_path is not None
        parts = [p for p in signal.browse_path.strip("/").split("/") if p]
        if parts and parts[0] in ("0:Objects", "Objects"):  # paths are relative to the Objects folder
            parts = parts[1:]
        return await client.nodes.objects.get_child(parts)

    # ------------------------------------------------------------ running

    async def run(self, emit: Emit) -> None:
        sink = Sink(emit, self.stats, self._clock, log, self.name)
        backoff = Backoff(initial_s=self.config.reconnect_delay, max_s=self.config.reconnect_max_delay)
        while True:
            client = await self._client()
            try:
                await client.connect()
            except (OSError, TimeoutError, ConnectionError, UaError) as exc:
                self.stats.errors += 1
                if self._link.down(_describe(exc)):
                    sink.all_bad(self.signals, f"link down: {_describe(exc)}")
                    if self._alarms:
                        self._alarms.link_down(sink, f"link down: {_describe(exc)}")
                await _disconnect(client)
                _raise_if_cancelled()
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            renumbered = False
            try:
                self._link.up()
                await self._serve(client, sink)
            except _Renumbered as changed:
                log.debug("%s: %s; subscribing again", self._what, changed)
                renumbered = True
            except (OSError, TimeoutError, ConnectionError, UaError) as exc:
                self.stats.errors += 1
                if self._link.down(_describe(exc)):
                    sink.all_bad(self.signals, f"link down: {_describe(exc)}")
                    if self._alarms:
                        self._alarms.link_down(sink, f"link down: {_describe(exc)}")
            finally:
                await _disconnect(client)
            _raise_if_cancelled()
            if not renumbered:
                await asyncio.sleep(backoff.next())

    def _by_name(self) -> dict[str, OpcuaSignal]:
        """The signals whose NodeId is looked up on the server (browse paths, `nsu=` namespace URIs)."""
        return {
            name: signal
            for name, signal in self.signals.items()
            if signal.browse_path is not None or (signal.node or "").strip().startswith("nsu=")
        }

    async def _serve(self, client: Client, sink: Sink) -> None:
        by_node: dict[Any, list[str]] = {}
        groups: dict[float, list[Node]] = {}
        resolved: dict[str, Any] = {}  # signal -> NodeId, for the signals given by name
        by_name = self._by_name()
        for name, signal in self.signals.items():
            try:
                node = await self._resolve(client, signal)
            except (UaError, ValueError, KeyError) as exc:
                sink.garbage(name, f"cannot find {signal.node or signal.browse_path}: {_describe(exc)}")
                if name in by_name:
                    resolved[name] = None
                continue
            if name in by_name:
                resolved[name] = node.nodeid
            if node.nodeid not in by_node:
                interval = signal.sampling_interval
                if interval is None:
                    interval = self.config.sampling_interval
                if interval is None:
                    interval = self.config.publishing_interval
                groups.setdefault(interval, []).append(node)
            by_node.setdefault(node.nodeid, []).append(name)
        sub = await client.create_subscription(
            self.config.publishing_interval * 1000,
            None,
            queue_maxsize=_QUEUE_MAX,
            overflow=OverflowPolicy.DROP_OLDEST,
        )
        for interval, nodes in groups.items():
            results: list[Any] = await sub.subscribe_data_change(
                nodes,
                sampling_interval=ua.Double(interval * 1000),
                queuesize=self.config.queue_size,  # type: ignore[call-overload]
            )
            for node, result in zip(nodes, results, strict=True):
                if isinstance(result, ua.StatusCode):
                    for name in by_node[node.nodeid]:
                        sink.garbage(
                            name, f"the server refused to monitor {node.nodeid.to_string()}: {result.name}"
                        )
        if self._alarms:
            await self._alarms.subscribe(
                client, sub, lambda node: self._resolve(client, OpcuaSignal(node=node))
            )
        # Not a TaskGroup: on Python 3.11 a child failing while the group is already exiting leaves our task
        # marked as cancelling (fixed in 3.12), and the exception would come wrapped in an ExceptionGroup.
        tasks = [
            asyncio.create_task(self._watch_state(client, sink, resolved)),
            asyncio.create_task(self._consume(sub, by_node, sink)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error

    async def _watch_state(self, client: Client, sink: Sink, resolved: dict[str, Any]) -> None:
        async with client.subscribe_state() as states:
            while True:
                state = await states.next_change()
                if state is UaClientState.CONNECTED:
                    recovered = self._link.up()
                    if recovered and resolved:  # asyncua reconnected: do the names still hold?
                        await self._check_names(client, resolved)
                    if recovered and self._alarms:  # alarms raised or cleared while the link was down
                        await self._alarms.refresh()
                elif self._link.is_up and state in (UaClientState.RECONNECTING, UaClientState.DISCONNECTED):
                    self.stats.errors += 1
                    if self._link.down("connection lost; asyncua is reconnecting"):
                        sink.all_bad(self.signals, "link down: connection lost")
                        if self._alarms:
                            self._alarms.link_down(sink, "link down: connection lost")
                supervisor = getattr(client, "_supervisor_task", None)
                if supervisor is not None and supervisor.done():
                    raise ConnectionError("the OPC UA client stopped reconnecting")

    async def _check_names(self, client: Client, resolved: dict[str, Any]) -> None:
        """Resolve the signals given by name again; _Renumbered when one now points elsewhere."""
        by_name = self._by_name()
        for name, before in resolved.items():
            try:
                now = (await self._resolve(client, by_name[name])).nodeid
            except (UaError, ValueError, KeyError):
                now = None
            if now != before:
                was = before.to_string() if before is not None else "nothing"
                raise _Renumbered(
                    f"{name} now resolves to {now.to_string() if now else 'nothing'}, not {was}"
                )

    async def _consume(self, sub: Any, by_node: dict[Any, list[str]], sink: Sink) -> None:
        async for event in sub:
            if isinstance(event, OpcEvent) and self._alarms:
                self._alarms.on_event(event, sink)
                continue
            if isinstance(event, StatusChangeEvent):
                log.debug("%s: subscription status %s", self._what, event.notification.Status)
                continue
            if not isinstance(event, DataChangeEvent):
                continue
            self.stats.reads += 1
            self._on_change(event, by_node.get(event.node.nodeid, []), sink)

    def _on_change(self, event: DataChangeEvent, names: list[str], sink: Sink) -> None:
        dv = event.data.monitored_item.Value
        stamp = dv.SourceTimestamp or dv.ServerTimestamp if dv is not None else None
        ts = _unix(stamp) if stamp is not None else self._clock.now()
        for name in names:
            if event.replayed and ts <= self._last_ts.get(name, -math.inf):
                continue  # a republished value older than what we have: keep ours
            self._last_ts[name] = max(ts, self._last_ts.get(name, -math.inf))
            status = dv.StatusCode if dv is not None else None
            if status is not None and not status.is_good():
                self.stats.errors += 1
                sink.garbage(name, f"status {status.name}", ts)
                continue
            value, problem = _convert(event.value)
            if not problem:
                problem = _check_type(value, self.signals[name].type)
            if problem:
                sink.garbage(name, problem, ts)
            else:
                sink.good(name, value, ts)


def _convert(value: Any) -> tuple[Value, str]:
    """(value, "") for what rules can use, else (None, why not)."""
    if isinstance(value, bool | str):
        return value, ""
    if isinstance(value, int):
        return int(value), ""
    if isinstance(value, float):
        if math.isnan(value):
            return None, "value is NaN"
        if math.isinf(value):
            return None, "value is infinite"
        return value, ""
    if isinstance(value, datetime):
        return _unix(value), ""
    if value is None:
        return None, "no value"
    return None, f"unsupported value of type {type(value).__name__}"


def _check_type(value: Value, expected: str) -> str:
    kind = "bool" if isinstance(value, bool) else "string" if isinstance(value, str) else "number"
    if expected in ("any", kind):
        return ""
    return f"expected a {expected}, got {kind} {value!r:.40}"


def _unix(stamp: datetime) -> float:
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."


def _certificate_uri(path: Path) -> str | None:
    """The application URI of a certificate (its URI SubjectAltName): the client must present the same one."""
    data = path.read_bytes()
    try:
        cert = x509.load_der_x509_certificate(data)
    except ValueError:
        cert = x509.load_pem_x509_certificate(data)
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return None
    assert isinstance(san, x509.SubjectAlternativeName)
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def _raise_if_cancelled() -> None:
    """asyncua swallows a cancellation in places: make sure ours is not lost."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _disconnect(client: Client) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), 5)
