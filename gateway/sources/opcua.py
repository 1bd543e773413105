"""OPC UA subscriptions with asyncua, behind a small adapter: no asyncua type leaves this module.

Just over 500 lines: keeping every asyncua call in this one module is the point of the adapter (alarms,
browse and probe live beside it and reach asyncua only through it).

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
- Silence is not staleness: a subscription sends only changes, so an unchanged value is confirmed instead.
  The subscription asks for a keep-alive every `keepalive` seconds; each time a publish response (data or
  keep-alive) has arrived since the last check, every GOOD signal that has not had a sample for `keepalive`
  is emitted again with its value and the time of the confirmation. When the server stops answering or
  drops the subscription, the confirmations stop and a `stale` rule fires.
- After asyncua recovered the connection (a transferred subscription sends no initial values), every
  monitored value is read once, so the signals marked bad on the loss are good again.
- A node that cannot be found or monitored is BAD, and looked for again with backoff (up to
  `reconnect_max_delay`) until it exists: a server restarted with a new program adds it.
- Browse paths name namespaces by index (`2:Press`) or by an alias of the source's `namespaces:` mapping
  (`press:Press`), resolved to the index on every (re)connection.
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
from asyncua.ua.attribute_ids import AttributeIds
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


class _Namespaces:
    """The server's namespace array, read once per pass over the signals (at connect, when checking the names
    after a reconnect, on each look for missing nodes) when a name first needs it: `nsu=` ids and namespace
    aliases resolve from it, not with one Read each."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._uris: list[str] | None = None

    async def index(self, uri: str) -> int:
        """The index the server gives `uri` now; ValueError when it has no such namespace."""
        if self._uris is None:
            self._uris = list(await self._client.get_namespace_array())
        return self._uris.index(uri)


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
        # signal -> (value, loop time of its last sample) while its last sample was GOOD: what a keep-alive
        # confirms
        self._good: dict[str, tuple[Value, float]] = {}

    def signal_names(self) -> list[str]:
        """The configured signals, and with `alarms:` the glob of the alarms' signals (named as they come)."""
        names = list(self.signals)
        if self._alarms:
            names.append(f"{self.name}.alarm.*")
        return names

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

    async def _resolve(self, client: Client, signal: OpcuaSignal, namespaces: _Namespaces) -> Node:
        if signal.node is not None:
            text = signal.node.strip()
            if text.startswith("nsu="):
                uri, _, rest = text[4:].partition(";")
                text = f"ns={await namespaces.index(uri)};{rest}"
            return client.get_node(ua.NodeId.from_string(text))
        assert signal.browse_path is not None
        parts = [p for p in signal.browse_path.strip("/").split("/") if p]
        if parts and parts[0] in ("0:Objects", "Objects"):  # paths are relative to the Objects folder
            parts = parts[1:]
        resolved: list[str] = []
        for part in parts:
            prefix, colon, rest = part.partition(":")
            if colon and prefix in self.config.namespaces:  # an alias: the index the server gives it now
                part = f"{await namespaces.index(self.config.namespaces[prefix])}:{rest}"
            resolved.append(part)
        return await client.nodes.objects.get_child(resolved)

    # ------------------------------------------------------------ running

    async def run(self, emit: Emit) -> None:
        sink = Sink(emit, self.stats, self._clock, log, self.name)
        backoff = Backoff(initial_s=self.config.reconnect_delay, max_s=self.config.reconnect_max_delay)
        while True:
            client = await self._client()
            try:
                await client.connect()
            except (OSError, TimeoutError, ConnectionError, UaError, AssertionError) as exc:
                self.stats.errors += 1
                self._mark_down(sink, self._connect_failure(exc))
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
                self._mark_down(sink, _describe(exc))
            finally:
                await _disconnect(client)
            _raise_if_cancelled()
            if not renumbered:
                await asyncio.sleep(backoff.next())

    def _mark_down(self, sink: Sink, reason: str, short: str | None = None) -> None:
        """The link is down for `reason`: when it just went down, every signal and alarm is BAD ("link down:
        " and `short`, or the reason) and no value is confirmed any more."""
        if not self._link.down(reason):
            return
        why = f"link down: {short or reason}"
        sink.all_bad(self.signals, why)
        if self._alarms:
            self._alarms.link_down(sink, why)
        self._good.clear()

    def _connect_failure(self, exc: BaseException) -> str:
        """Why the connection failed, in words a person can act on. A secured handshake that the server
        refuses (asyncua: an AssertionError or a BadCertificate... status; node-opcua just closes the channel
        after an error message) most often means the server does not trust our certificate: the reason names
        the file to trust (the link logs it once, at ERROR)."""
        text = _describe(exc)
        security = self.config.security or "None"
        if security.split(",")[0].strip() == "None":
            return text
        cert, _key, _generated = self._certificate_paths()
        trust = f"our certificate {cert}: trust it on the server (its rejected folder)"
        if isinstance(exc, AssertionError) or "BadCertificate" in text or "BadSecurityChecksFailed" in text:
            return f"the server rejected {trust}"
        if type(exc) is ConnectionError:  # closed by the server during the handshake (not refused, not reset)
            return (
                f"the server closed the connection during the secured handshake: most likely it rejected "
                f"{trust}, or it does not offer {security}"
            )
        return text

    def _by_name(self) -> dict[str, OpcuaSignal]:
        """The signals whose NodeId is looked up on the server (browse paths, `nsu=` namespace URIs)."""
        return {
            name: signal
            for name, signal in self.signals.items()
            if signal.browse_path is not None or (signal.node or "").strip().startswith("nsu=")
        }

    async def _serve(self, client: Client, sink: Sink) -> None:
        by_node: dict[Any, list[str]] = {}
        resolved: dict[str, Any] = {}  # signal -> NodeId, for the signals given by name
        missing: dict[str, OpcuaSignal] = {}  # signals not found or not monitored: looked for again
        pi = self.config.publishing_interval
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = pi * 1000
        params.RequestedMaxKeepAliveCount = max(1, math.ceil(self.config.keepalive / max(pi, 0.001)))
        params.RequestedLifetimeCount = max(10_000, 3 * params.RequestedMaxKeepAliveCount)
        params.MaxNotificationsPerPublish = 10_000
        params.PublishingEnabled = True
        params.Priority = 0
        sub = await client.create_subscription(
            params, None, queue_maxsize=_QUEUE_MAX, overflow=OverflowPolicy.DROP_OLDEST
        )
        await self._monitor(client, sub, dict(self.signals), by_node, resolved, missing, sink)
        if self._alarms:
            namespaces = _Namespaces(client)
            await self._alarms.subscribe(
                client, sub, lambda n: self._resolve(client, OpcuaSignal(node=n), namespaces)
            )
        # Not a TaskGroup: on Python 3.11 a child failing while the group is already exiting leaves our task
        # marked as cancelling (fixed in 3.12), and the exception would come wrapped in an ExceptionGroup.
        tasks = [
            asyncio.create_task(self._watch_state(client, sink, resolved, by_node)),
            asyncio.create_task(self._consume(sub, by_node, sink)),
            asyncio.create_task(self._confirm(sub, sink)),
            asyncio.create_task(self._look_again(client, sub, by_node, resolved, missing, sink)),
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

    async def _monitor(
        self,
        client: Client,
        sub: Any,
        signals: dict[str, OpcuaSignal],
        by_node: dict[Any, list[str]],
        resolved: dict[str, Any],
        missing: dict[str, OpcuaSignal],
        sink: Sink,
        *,
        retry: bool = False,
    ) -> None:
        """Resolve `signals` and add monitored items for them; what fails goes to `missing` (a BAD sample and
        one WARNING per reason the first time; nothing on a retry)."""
        by_name = self._by_name()
        namespaces = _Namespaces(client)
        groups: dict[float, list[Node]] = {}
        pending: dict[Any, list[str]] = {}
        for name, signal in signals.items():
            try:
                node = await self._resolve(client, signal, namespaces)
            except (UaError, ValueError, KeyError) as exc:
                missing[name] = signal
                if not retry:
                    sink.garbage(name, f"cannot find {signal.node or signal.browse_path}: {_describe(exc)}")
                    if name in by_name:
                        resolved[name] = None
                continue
            if name in by_name:
                resolved[name] = node.nodeid
            if node.nodeid in by_node:  # already monitored for another signal
                by_node[node.nodeid].append(name)
                missing.pop(name, None)
                continue
            if node.nodeid not in pending:
                interval = signal.sampling_interval
                if interval is None:
                    interval = self.config.sampling_interval
                if interval is None:
                    interval = self.config.publishing_interval
                groups.setdefault(interval, []).append(node)
            pending.setdefault(node.nodeid, []).append(name)
        for interval, nodes in groups.items():
            for node in nodes:  # before the items exist: their first values may come at once
                by_node[node.nodeid] = pending[node.nodeid]
            results: list[Any] = await sub.subscribe_data_change(
                nodes,
                sampling_interval=ua.Double(interval * 1000),
                queuesize=self.config.queue_size,  # type: ignore[call-overload]
            )
            for node, result in zip(nodes, results, strict=True):
                names = pending[node.nodeid]
                if isinstance(result, ua.StatusCode):
                    del by_node[node.nodeid]
                    for name in names:
                        missing[name] = signals[name]
                        if not retry:
                            sink.garbage(
                                name,
                                f"the server refused to monitor {node.nodeid.to_string()}: {result.name}",
                            )
                    continue
                for name in names:
                    if missing.pop(name, None) is not None and retry:
                        log.info("%s: %s found on the server, now monitored", self._what, name)

    async def _look_again(
        self,
        client: Client,
        sub: Any,
        by_node: dict[Any, list[str]],
        resolved: dict[str, Any],
        missing: dict[str, OpcuaSignal],
        sink: Sink,
    ) -> None:
        """Look for the missing nodes again, with backoff, while connected."""
        backoff = Backoff(initial_s=self.config.reconnect_delay, max_s=self.config.reconnect_max_delay)
        while True:
            await asyncio.sleep(backoff.next())
            if not missing or not self._link.is_up:
                continue
            try:
                await self._monitor(client, sub, dict(missing), by_node, resolved, missing, sink, retry=True)
            except (OSError, TimeoutError, ConnectionError, UaError) as exc:
                log.debug("%s: looking for missing nodes: %s", self._what, _describe(exc))

    async def _confirm(self, sub: Any, sink: Sink) -> None:
        """Every `keepalive`: when the subscription answered since the last check (data or keep-alive), the
        GOOD signals without a sample for `keepalive` are emitted again (their value is confirmed)."""
        loop = asyncio.get_running_loop()
        period = self.config.keepalive
        seen = sub.last_publish_at
        while True:
            await asyncio.sleep(period)
            last = sub.last_publish_at
            if last is None or last == seen or not self._link.is_up:
                continue
            seen = last
            now = loop.time()
            for name, (value, at) in list(self._good.items()):
                if now - at >= period * 0.9:
                    self._good[name] = (value, now)
                    sink.good(name, value)

    async def _refresh(self, client: Client, by_node: dict[Any, list[str]], sink: Sink) -> None:
        """Read every monitored value once (after a recovery: a transferred subscription sends no initial
        values, so the unchanged signals would stay BAD)."""
        node_ids = list(by_node)
        for at in range(0, len(node_ids), 500):
            chunk = node_ids[at : at + 500]
            values = await client.read_attributes([client.get_node(n) for n in chunk], AttributeIds.Value)
            for node_id, dv in zip(chunk, values, strict=True):
                value = dv.Value.Value if dv.Value is not None else None
                self._emit(dv, value, by_node.get(node_id, []), sink, replayed=False)

    async def _watch_state(
        self, client: Client, sink: Sink, resolved: dict[str, Any], by_node: dict[Any, list[str]]
    ) -> None:
        async with client.subscribe_state() as states:
            while True:
                state = await states.next_change()
                if state is UaClientState.CONNECTED:
                    if self._link.up():  # asyncua reconnected
                        if resolved:  # do the names still hold?
                            await self._check_names(client, resolved)
                        await self._refresh(client, by_node, sink)
                        if self._alarms:  # alarms raised or cleared while the link was down
                            await self._alarms.refresh()
                elif self._link.is_up and state in (UaClientState.RECONNECTING, UaClientState.DISCONNECTED):
                    self.stats.errors += 1
                    self._mark_down(sink, "connection lost; asyncua is reconnecting", "connection lost")
                supervisor = getattr(client, "_supervisor_task", None)
                if supervisor is not None and supervisor.done():
                    raise ConnectionError("the OPC UA client stopped reconnecting")

    async def _check_names(self, client: Client, resolved: dict[str, Any]) -> None:
        """Resolve the signals given by name again; _Renumbered when one now points elsewhere."""
        by_name = self._by_name()
        namespaces = _Namespaces(client)
        for name, before in resolved.items():
            try:
                now = (await self._resolve(client, by_name[name], namespaces)).nodeid
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
        self._emit(event.data.monitored_item.Value, event.value, names, sink, replayed=event.replayed)

    def _emit(self, dv: Any, raw: Any, names: list[str], sink: Sink, *, replayed: bool) -> None:
        stamp = dv.SourceTimestamp or dv.ServerTimestamp if dv is not None else None
        ts = _unix(stamp) if stamp is not None else self._clock.now()
        now = asyncio.get_running_loop().time()
        for name in names:
            if replayed and ts <= self._last_ts.get(name, -math.inf):
                continue  # a republished value older than what we have: keep ours
            self._last_ts[name] = max(ts, self._last_ts.get(name, -math.inf))
            status = dv.StatusCode if dv is not None else None
            if status is not None and not status.is_good():
                self.stats.errors += 1
                self._good.pop(name, None)
                sink.garbage(name, f"status {status.name}", ts)
                continue
            value, problem = _convert(raw)
            if not problem:
                problem = _check_type(value, self.signals[name].type)
            if problem:
                self._good.pop(name, None)
                sink.garbage(name, problem, ts)
            else:
                self._good[name] = (value, now)
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
