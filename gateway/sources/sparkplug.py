"""A Sparkplug B host application (Sparkplug 3.0) over MQTT with aiomqtt.

How a source runs:

- One client per source with a clean session and a will: our retained `spBv1.0/STATE/<host_id>` says
  `{"online": false, "timestamp": T}` if we vanish. After subscribing to `spBv1.0/<group>/#` and to our own
  STATE topic we publish `{"online": true, "timestamp": T}` there (QoS 1, retained, the same T), and the
  offline form again when the source is stopped.
- Every NBIRTH/DBIRTH is cached per edge node and device as alias -> (name, datatype), and its values are
  the metrics' initial values. NDATA/DDATA are decoded by alias (or by name when an edge node sends no
  aliases), with the datatype of the birth.
- NDEATH whose bdSeq matches the NBIRTH's marks every signal of that node and its devices BAD; DDEATH does
  the same for one device; our own link dropping does it for every signal. Only signals that were not BAD
  already get a BAD sample, so a death costs one sample per signal and never a burst. A new birth makes them
  GOOD again.
- `seq` (0..255) is tracked per edge node. A gap, a DATA for a node or device without a birth, or an unknown
  alias is logged once and, with `rebirth: true`, answered by an NCMD `Node Control/Rebirth` = true, at most
  once per node per `rebirth_interval`.
- Metrics flagged `is_historical` are dropped: they are back-filled old values, and a rule must only see
  live ones.
- A payload that does not decode marks the signals of its node (NBIRTH/NDATA) or device (DBIRTH/DDATA) BAD,
  with one WARNING per node until that node sends a good payload again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlparse

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from gateway.core.backoff import Backoff
from gateway.core.clock import Clock, SystemClock
from gateway.core.samples import Emit, SourceStats
from gateway.sources import sparkplug_codec as codec
from gateway.sources._common import Link, Sink, quiet_library_logger
from gateway.sources.schema import SparkplugSource

log = logging.getLogger(__name__)
_PAHO_LOG = "gateway.sources.sparkplug.paho"
NAMESPACE = "spBv1.0"

Scope = tuple[str, str | None]  # (edge node id, device id or None for the node itself)


@dataclass
class _Birth:
    """What one NBIRTH or DBIRTH told us."""

    aliases: dict[int, tuple[str, int | None]] = field(default_factory=dict)  # alias -> (name, datatype)
    types: dict[str, int | None] = field(default_factory=dict)  # name -> datatype


@dataclass
class _Node:
    births: dict[str | None, _Birth] = field(default_factory=dict)  # None: the node's own; else devices
    bdseq: int | None = None  # from the NBIRTH; an NDEATH must carry the same
    seq: int | None = None  # the last seq seen; None: unknown (no birth yet, or our link dropped)
    online: bool = False
    garbled: bool = False  # a payload did not decode; WARNING logged, cleared by the next good one
    rebirth_asked_at: float | None = None


def state_topic(host_id: str) -> str:
    return f"{NAMESPACE}/STATE/{host_id}"


def state_payload(*, online: bool, timestamp_ms: int) -> bytes:
    """Sparkplug 3.0 STATE: {"online": bool, "timestamp": ms}."""
    return json.dumps({"online": online, "timestamp": timestamp_ms}, separators=(",", ":")).encode()


def parse_topic(topic: str, group: str) -> tuple[str, str, str | None] | None:
    """(message type, edge node id, device id or None) of a topic of our group, or None."""
    levels = topic.split("/")
    if len(levels) not in (4, 5) or levels[0] != NAMESPACE or levels[1] != group:
        return None
    kind = levels[2]
    if len(levels) == 4 and kind in ("NBIRTH", "NDEATH", "NDATA", "NCMD"):
        return kind, levels[3], None
    if len(levels) == 5 and kind in ("DBIRTH", "DDEATH", "DDATA", "DCMD"):
        return kind, levels[3], levels[4]
    return None


class SparkplugConnector:
    """A Source reading configured metrics of one Sparkplug group as a host application."""

    def __init__(
        self,
        name: str,
        config: SparkplugSource,
        *,
        clock: Clock | None = None,
        gateway_id: str = "mw-gateway",
    ) -> None:
        quiet_library_logger(_PAHO_LOG)
        self.name = name
        self.config = config
        self.stats = SourceStats()
        self._clock = clock or SystemClock()
        url = urlparse(config.url)
        self._tls = url.scheme == "mqtts"
        self._host = url.hostname or "localhost"
        self._port = url.port or (8883 if self._tls else 1883)
        self.client_id = config.client_id or f"mw-gateway-{gateway_id}-{name}"
        self._what = (
            f"sparkplug source {name} ({url.scheme}://{self._host}:{self._port}, group {config.group})"
        )
        self._link = Link(self._what, log, self.stats)
        # (node, device, metric name) -> full signal names
        self._wanted: dict[tuple[str, str | None, str], list[str]] = {}
        self._by_scope: dict[Scope, list[str]] = {}
        for key, spec in config.signals.items():
            full = f"{name}.{key}"
            self._wanted.setdefault((spec.node, spec.device, spec.metric), []).append(full)
            self._by_scope.setdefault((spec.node, spec.device), []).append(full)
        self._nodes: dict[str, _Node] = {}
        self._sink: Sink | None = None
        self._client: aiomqtt.Client | None = None
        self.rebirth_requests = 0  # NCMD rebirths published (for tests and /metrics-like views)
        self.historical_dropped = 0
        self._state_echoed = False

    def signal_names(self) -> list[str]:
        return [f"{self.name}.{key}" for key in self.config.signals]

    # ------------------------------------------------------------ connection

    def _make_client(self, stamp_ms: int) -> aiomqtt.Client:
        cfg = self.config
        tls = None
        if self._tls:
            tls = aiomqtt.TLSParameters(ca_certs=cfg.ca, certfile=cfg.certificate, keyfile=cfg.private_key)
        will = aiomqtt.Will(
            state_topic(cfg.host_id), state_payload(online=False, timestamp_ms=stamp_ms), qos=1, retain=True
        )
        return aiomqtt.Client(
            self._host,
            self._port,
            identifier=self.client_id,
            clean_session=True,  # Sparkplug 3.0 host applications connect with a clean session
            username=cfg.username,
            password=cfg.password.get_secret_value() if cfg.password else None,
            tls_params=tls,
            keepalive=max(int(cfg.keepalive), 1),
            timeout=cfg.timeout,
            will=will,
            logger=logging.getLogger(_PAHO_LOG),
        )

    def bind(self, emit: Emit) -> Sink:
        """Where samples go; run() calls it, and a caller driving on_message() itself (tests, the bench)."""
        self._sink = Sink(emit, self.stats, self._clock, log, self.name)
        return self._sink

    async def run(self, emit: Emit) -> None:
        sink = self.bind(emit)
        backoff = Backoff(initial_s=self.config.reconnect_delay, max_s=self.config.reconnect_max_delay)
        own_state = state_topic(self.config.host_id)
        while True:
            stamp_ms = int(self._clock.now() * 1000)
            online = state_payload(online=True, timestamp_ms=stamp_ms)
            self._state_echoed = False
            try:
                async with self._make_client(stamp_ms) as client:
                    self._client = client
                    await client.subscribe(own_state, qos=1)
                    await client.subscribe(f"{NAMESPACE}/{self.config.group}/#", qos=1)
                    await client.publish(own_state, online, qos=1, retain=True)
                    self._link.up()
                    backoff.reset()
                    try:
                        async for message in client.messages:
                            self.stats.reads += 1
                            payload = (
                                bytes(message.payload)
                                if isinstance(message.payload, bytes | bytearray)
                                else b""
                            )
                            topic = str(message.topic)
                            if topic == own_state:
                                self._on_state(payload, online)
                            else:
                                await self.on_message(topic, payload)
                    except asyncio.CancelledError:
                        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                            offline = state_payload(online=False, timestamp_ms=stamp_ms)
                            await asyncio.wait_for(
                                client.publish(own_state, offline, qos=1, retain=True), 1.0
                            )
                        raise
            except MqttConnectError as exc:
                reason = f"the broker refused the connection: {exc}"
            except aiomqtt.MqttError as exc:
                reason = str(exc) or type(exc).__name__
            except OSError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                reason = "the broker closed the connection"
            finally:
                self._client = None
            self.stats.errors += 1
            if self._link.down(reason):
                for node in self._nodes.values():
                    node.seq = None  # we missed messages: the next one cannot be checked
                self._mark_bad(self._all_signals(), f"link down: {reason}", sink)
            await asyncio.sleep(backoff.next())

    def _on_state(self, payload: bytes, ours: bytes) -> None:
        """Our own STATE topic: after our online STATE came back to us, anyone else's online STATE there means
        a second host application uses our host_id (a retained one from before is overwritten by ours)."""
        if payload == ours:
            self._state_echoed = True
            return
        if not self._state_echoed:
            return
        try:
            state = json.loads(payload)
        except (ValueError, RecursionError):  # not JSON, or absurdly nested
            return
        if isinstance(state, dict) and state.get("online") is True:
            log.error(
                "%s: another host application publishes STATE as %r: host_id must be this gateway's own",
                self._what,
                self.config.host_id,
            )

    # ------------------------------------------------------------ messages

    async def on_message(self, topic: str, payload: bytes) -> None:
        """Handle one message of the group (public so tests and the bench can drive it without a broker)."""
        parsed = parse_topic(topic, self.config.group)
        if parsed is None:
            return
        kind, node_id, device = parsed
        if kind in ("NCMD", "DCMD"):
            return
        node = self._nodes.setdefault(node_id, _Node())
        sink = self._sink
        if sink is None:
            raise RuntimeError("call bind() or run() before on_message()")
        try:
            decoded = codec.decode(payload)
        except codec.PayloadError as exc:
            self.stats.errors += 1
            if not node.garbled:
                log.warning("%s: edge node %s: %s on %s", self._what, node_id, exc, topic)
                node.garbled = True
            self._mark_bad(self._scope_signals(node_id, device), f"malformed payload on {topic}", sink)
            if kind in ("NBIRTH", "DBIRTH", "NDATA", "DDATA"):
                await self._ask_rebirth(node_id, node, f"a malformed {kind}")
            return
        node.garbled = False
        if kind == "NDEATH":
            self._on_ndeath(node_id, node, decoded, sink)
            return
        if kind == "NBIRTH":
            node.seq = decoded.seq
            node.births = {}
            node.online = True
            node.bdseq = _bdseq(decoded)
            self._on_birth(node_id, None, node, decoded, sink)
            return
        gap = self._check_seq(node, decoded.seq)
        unborn = not node.online if device is None else kind != "DBIRTH" and device not in node.births
        if unborn:  # we joined after its birth, or missed it: its aliases are unknown
            scope = self._scope_text(node_id, device)
            await self._ask_rebirth(node_id, node, f"{kind} from {scope} before its birth")
            return
        if gap:
            await self._ask_rebirth(node_id, node, gap)
        if kind == "DBIRTH":
            self._on_birth(node_id, device, node, decoded, sink)
        elif kind == "DDEATH":
            node.births.pop(device, None)
            reason = f"device {node_id}/{device} is offline (DDEATH)"
            log.info("%s: %s", self._what, reason)
            self._mark_bad(self._scope_signals(node_id, device), reason, sink)
        else:  # NDATA, DDATA
            unknown = self._on_data(node_id, device, node, decoded, sink)
            if unknown:
                await self._ask_rebirth(node_id, node, f"unknown metric {unknown} in {kind}")

    def _check_seq(self, node: _Node, seq: int | None) -> str:
        """'' when seq follows the last one, else why not; remembers seq either way."""
        previous, node.seq = node.seq, seq
        if seq is None:
            return "a message without seq"
        if previous is None:
            return "" if not node.online else "the first message after our reconnect (messages may be lost)"
        expected = (previous + 1) % 256
        return "" if seq == expected else f"seq {seq} where {expected} was expected"

    def _on_ndeath(self, node_id: str, node: _Node, decoded: codec.Payload, sink: Sink) -> None:
        bdseq = _bdseq(decoded)
        if node.bdseq is not None and bdseq is not None and bdseq != node.bdseq:
            log.debug("%s: stale NDEATH of %s (bdSeq %s, not %s)", self._what, node_id, bdseq, node.bdseq)
            return
        was_online = node.online
        node.online = False
        node.seq = None
        node.births = {}
        reason = f"edge node {node_id} is offline (NDEATH)"
        if was_online:
            log.info("%s: %s", self._what, reason)
        signals = [s for (n, _d), names in self._by_scope.items() if n == node_id for s in names]
        self._mark_bad(signals, reason, sink)

    def _on_birth(
        self, node_id: str, device: str | None, node: _Node, decoded: codec.Payload, sink: Sink
    ) -> None:
        birth = _Birth()
        for metric in decoded.metrics:
            if metric.name is None:
                continue
            birth.types[metric.name] = metric.datatype
            if metric.alias is not None:
                birth.aliases[metric.alias] = (metric.name, metric.datatype)
        node.births[device] = birth
        seen = set()
        for metric in decoded.metrics:
            if metric.name is not None:
                seen.add(metric.name)
                self._emit(node_id, device, metric.name, metric, metric.datatype, decoded, sink)
        scope = self._scope_text(node_id, device)
        for (n, d, name), signals in self._wanted.items():
            if n == node_id and d == device and name not in seen:
                if not all(sink.is_bad(signal) for signal in signals):
                    log.warning("%s: %s has no metric %r in its birth", self._what, scope, name)
                self._mark_bad(signals, f"no metric {name!r} in the birth of {scope}", sink)

    def _on_data(
        self, node_id: str, device: str | None, node: _Node, decoded: codec.Payload, sink: Sink
    ) -> str:
        """Emit the configured metrics of one NDATA/DDATA; returns an unknown alias or name, or ''."""
        birth = node.births.get(device)
        if birth is None:
            return f"(no birth for {self._scope_text(node_id, device)})"
        unknown = ""
        for metric in decoded.metrics:
            if metric.alias is not None and metric.alias in birth.aliases:
                name, datatype = birth.aliases[metric.alias]
            elif metric.alias is None and metric.name is not None and metric.name in birth.types:
                name, datatype = metric.name, birth.types[metric.name]
            else:
                unknown = unknown or (
                    f"alias {metric.alias}" if metric.alias is not None else repr(metric.name)
                )
                continue
            self._emit(node_id, device, name, metric, metric.datatype or datatype, decoded, sink)
        return unknown

    def _emit(
        self,
        node_id: str,
        device: str | None,
        name: str,
        metric: codec.Metric,
        datatype: int | None,
        decoded: codec.Payload,
        sink: Sink,
    ) -> None:
        signals = self._wanted.get((node_id, device, name))
        if not signals:
            return
        if metric.is_historical:
            self.historical_dropped += 1
            return
        stamp_ms = metric.timestamp_ms if metric.timestamp_ms is not None else decoded.timestamp_ms
        ts = stamp_ms / 1000.0 if stamp_ms is not None else None
        try:
            value = codec.value_of(metric, datatype)
        except codec.ValueProblem as exc:
            for signal in signals:
                sink.garbage(signal, f"{exc} ({self._scope_text(node_id, device)} metric {name!r})", ts)
            return
        for signal in signals:
            sink.good(signal, value, ts)

    # ------------------------------------------------------------ helpers

    async def _ask_rebirth(self, node_id: str, node: _Node, why: str) -> None:
        now = self._clock.now()
        recent = (
            node.rebirth_asked_at is not None and now - node.rebirth_asked_at < self.config.rebirth_interval
        )
        if not self.config.rebirth:
            log.debug("%s: edge node %s: %s (rebirth requests are off)", self._what, node_id, why)
            return
        if recent or self._client is None:
            log.debug("%s: edge node %s: %s (rebirth asked recently)", self._what, node_id, why)
            return
        node.rebirth_asked_at = now
        log.info("%s: edge node %s: %s: requesting a rebirth", self._what, node_id, why)
        topic = f"{NAMESPACE}/{self.config.group}/NCMD/{node_id}"
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.publish(topic, codec.rebirth_request(int(now * 1000)), qos=0)
            self.rebirth_requests += 1

    def _mark_bad(self, signals: Iterable[str], reason: str, sink: Sink) -> None:
        """A BAD sample for each of `signals` whose last sample was not BAD already."""
        sink.all_bad([s for s in signals if not sink.is_bad(s)], reason)

    def _all_signals(self) -> list[str]:
        return [s for names in self._by_scope.values() for s in names]

    def _scope_signals(self, node_id: str, device: str | None) -> list[str]:
        return list(self._by_scope.get((node_id, device), []))

    @staticmethod
    def _scope_text(node_id: str, device: str | None) -> str:
        return f"edge node {node_id}" if device is None else f"device {node_id}/{device}"


def _bdseq(decoded: codec.Payload) -> int | None:
    for metric in decoded.metrics:
        if metric.name == codec.BDSEQ_METRIC:
            try:
                value = codec.value_of(metric, metric.datatype or codec.DataType.UINT64)
            except codec.ValueProblem:
                return None
            return int(value) if isinstance(value, int | float) else None
    return None
