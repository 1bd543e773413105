"""MQTT subscriptions with aiomqtt (over paho-mqtt).

How a source runs:

- One client per source, built inside the running loop; on any connection error the client is dropped and a
  new `async with` is entered after a backoff with jitter. The client id is fixed (default
  `mw-gateway-<gateway id>-<source>`) and the session persistent (`clean_session: false`), so the broker keeps
  our subscriptions and queues QoS 1 messages while we are away, as long as the broker itself keeps running.
- A signal's key may name the levels a wildcard matched: `"{1}_temp": {topic: plant/+/temp}` gives the
  signal `oven.line1_temp` for a message on plant/line1/temp. `{1}`, `{2}`... are the wildcards of the filter
  in order; a `#` placeholder is the rest of the topic with its levels joined by dots.
- A payload is a number, a string or a boolean as text, or JSON with a dotted path (`json: data.temp`,
  `json: values.0`); `timestamp:` is a dotted path to the sample's time (ISO 8601, or Unix seconds,
  milliseconds, microseconds or nanoseconds, told apart by magnitude). A `type: string` payload that is a
  JSON string (`"running"`) is that string, without the quotes. Anything that does not decode as configured
  (including a number too long for Python, or JSON nested too deep) is a BAD sample with the reason, logged
  once; nothing a publisher sends can stop the source.
- A retained message (the broker's copy of the last message on the topic, handed over on every subscribe)
  is the last known value, not a new observation: its sample has `retained=True` (the engine shows it but
  feeds it to no trigger, so it fires no threshold at start-up and does not keep a `stale` rule quiet). With
  `max_age` and a payload `timestamp:`, a retained message at most that old counts as an observation, and an
  older one is a BAD sample (the device has been silent since).
- A refused subscription (SUBACK 0x80: an ACL, a denied topic) is one ERROR naming the topic, and the
  signals of the topic are BAD. A broker that keeps closing the connection right after accepting it (another
  client connected with the same client id) is one ERROR saying so, and the reconnect backoff grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from gateway.core.backoff import Backoff
from gateway.core.clock import Clock, SystemClock
from gateway.core.samples import Emit, SourceStats, Value
from gateway.sources._common import Link, Sink, quiet_library_logger
from gateway.sources.schema import MqttSignal, MqttSource

log = logging.getLogger(__name__)
_PAHO_LOG = "gateway.sources.mqtt.paho"  # paho logs every socket error at ERROR: DEBUG material for us

_PLACEHOLDER = re.compile(r"\{(\d+)\}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_SHORT_SESSION_S = 5.0  # a connection closed sooner after being accepted counts as short
_TAKEOVER_AFTER = 3  # short connections in a row before saying "another client with the same id?"
_TRUE = {"true", "1", "on", "yes"}
_FALSE = {"false", "0", "off", "no"}


class _PahoLog(logging.Logger):
    """paho's logger for one connection attempt, a child of gateway.sources.mqtt.paho (quiet by default).

    It remembers paho's first error: when the broker drops the connection before its CONNACK (a TLS broker
    refusing a missing or unknown client certificate does so after the handshake), paho only logs why and
    aiomqtt would wait for its timeout and report "Operation timed out"."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(_PAHO_LOG)
        self.parent = logging.getLogger(_PAHO_LOG)
        self.first_error = ""
        self.failed = asyncio.Event()
        self._loop = loop

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level >= logging.ERROR and not self.first_error:
            self.first_error = str(msg) % args if args else str(msg)
            self._loop.call_soon_threadsafe(self.failed.set)  # paho may log from its connect thread
        super().log(level, msg, *args, **kwargs)


class _Garbage(ValueError):
    """The payload does not hold what the signal is configured for."""


def match_topic(topic_filter: str, topic: str) -> list[str] | None:
    """The levels the wildcards of topic_filter matched in topic (a `#` gives the rest, joined by '/'), or
    None when the topic does not match."""
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    captured: list[str] = []
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return None  # $SYS and friends are not matched by a leading wildcard
    for i, level in enumerate(f_levels):
        if level == "#":
            captured.append("/".join(t_levels[i:]))
            return captured
        if i >= len(t_levels):
            return None
        if level == "+":
            captured.append(t_levels[i])
        elif level != t_levels[i]:
            return None
    return captured if len(f_levels) == len(t_levels) else None


def signal_name(key: str, captured: list[str]) -> str:
    """The signal key with its {n} placeholders replaced by the matched levels (made safe for rule names)."""

    def fill(m: re.Match[str]) -> str:
        level = captured[int(m.group(1)) - 1]
        return _UNSAFE.sub("_", level.replace("/", "."))

    return _PLACEHOLDER.sub(fill, key)


def _walk(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.lstrip("-").isdigit() and -len(data) <= int(part) < len(data):
            data = data[int(part)]
        else:
            raise _Garbage(f"no {path!r} in the payload")
    return data


def _as_type(value: Any, kind: str) -> Value:
    if kind == "string":
        if isinstance(value, dict | list):
            raise _Garbage(f"expected a string, got {type(value).__name__}")
        return value if isinstance(value, str) else json.dumps(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise _Garbage(f"expected a boolean, got {str(value)[:40]!r}")
    # number
    if isinstance(value, bool):
        raise _Garbage(f"expected a number, got {str(value).lower()}")
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            raise _Garbage(f"expected a number, got {text[:40]!r}") from None
    raise _Garbage(f"expected a number, got {type(value).__name__}")


_LAST_TS = 253402300799.0  # 9999-12-31T23:59:59Z: datetime's limit


def _timestamp(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        # Unix time in s, ms, us or ns, told apart by magnitude: seconds up to 1e11 (year 5138), milliseconds
        # up to 1e14 (year 5138), microseconds up to 1e17, nanoseconds beyond.
        magnitude = abs(value)
        divisor = 1.0 if magnitude < 1e11 else 1e3 if magnitude < 1e14 else 1e6 if magnitude < 1e17 else 1e9
        seconds = float(value) / divisor
        if not 0 <= seconds <= _LAST_TS:
            raise _Garbage(f"timestamp {str(value)[:40]!r} is before 1970 or after 9999")
        return seconds
    if isinstance(value, str):
        try:
            stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            try:
                return _timestamp(float(value))
            except ValueError:
                pass
        else:
            return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
    raise _Garbage(f"timestamp {str(value)[:40]!r} is neither Unix time nor ISO 8601")


def decode_payload(payload: bytes, signal: MqttSignal) -> tuple[Value, float | None]:
    """(value, timestamp or None). Raises _Garbage with a reason a person can act on, whatever the payload."""
    try:
        return _decode(payload, signal)
    except _Garbage:
        raise
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits (Python's int/str limit)
        raise _Garbage(f"the payload does not decode: {str(exc)[:80]}") from None
    except RecursionError:
        raise _Garbage("the payload's JSON is nested too deep") from None


def _decode(payload: bytes, signal: MqttSignal) -> tuple[Value, float | None]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise _Garbage("the payload is not UTF-8 text") from None
    stamp: float | None = None
    if signal.json_path is not None or signal.timestamp is not None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise _Garbage(f"the payload is not JSON: {text[:40]!r}") from None
        raw = _walk(data, signal.json_path) if signal.json_path is not None else data
        if signal.timestamp is not None:
            stamp = _timestamp(_walk(data, signal.timestamp))
    elif (
        signal.type == "string" and len(text) >= 2 and text.lstrip()[:1] == '"' and text.rstrip()[-1:] == '"'
    ):
        try:
            raw = json.loads(text)  # a JSON string: "running" is running
        except json.JSONDecodeError:
            raw = text
    else:
        raw = text
    return _as_type(raw, signal.type), stamp


class MqttConnector:
    """A Source subscribed to topics of one MQTT broker."""

    def __init__(
        self, name: str, config: MqttSource, *, clock: Clock | None = None, gateway_id: str = "mw-gateway"
    ) -> None:
        quiet_library_logger(_PAHO_LOG)
        self.name = name
        self.config = config
        self.stats = SourceStats()
        self._clock = clock or SystemClock()
        self.signals: dict[str, MqttSignal] = {
            key: MqttSignal(topic=spec) if isinstance(spec, str) else spec
            for key, spec in config.signals.items()
        }
        url = urlparse(config.url)
        self._tls = url.scheme == "mqtts"
        self._host = url.hostname or "localhost"
        self._port = url.port or (8883 if self._tls else 1883)
        self.client_id = config.client_id or f"mw-gateway-{gateway_id}-{name}"
        self._what = f"mqtt source {name} ({url.scheme}://{self._host}:{self._port})"
        self._link = Link(self._what, log, self.stats)
        self._seen: set[str] = {f"{name}.{key}" for key in self.signals if not _PLACEHOLDER.search(key)}
        self._refused: dict[str, str] = {}  # topic -> why the broker refused its subscription
        self._short_sessions = 0  # connections in a row the broker closed right after accepting them
        self._takeover_logged = False

    def signal_names(self) -> list[str]:
        """Full names; a key with placeholders is given as an fnmatch glob (`oven.*_temp`)."""
        return [f"{self.name}.{_PLACEHOLDER.sub('*', key)}" for key in self.signals]

    def _subscriptions(self) -> dict[str, int]:
        subs: dict[str, int] = {}
        for spec in self.signals.values():
            qos = self.config.qos if spec.qos is None else spec.qos
            subs[spec.topic] = max(qos, subs.get(spec.topic, 0))
        return subs

    def _client(self, paho_log: logging.Logger) -> aiomqtt.Client:
        cfg = self.config
        tls = None
        if self._tls:
            tls = aiomqtt.TLSParameters(ca_certs=cfg.ca, certfile=cfg.certificate, keyfile=cfg.private_key)
        return aiomqtt.Client(
            self._host,
            self._port,
            identifier=self.client_id,
            clean_session=cfg.clean_session,
            username=cfg.username,
            password=cfg.password.get_secret_value() if cfg.password else None,
            tls_params=tls,
            keepalive=max(int(cfg.keepalive), 1),
            timeout=cfg.timeout,
            logger=paho_log,
        )

    async def _connect(self, stack: contextlib.AsyncExitStack) -> aiomqtt.Client:
        """A connected client whose exit is on the stack. Fails as soon as paho reports the connection lost
        before the broker accepted it, with paho's reason instead of aiomqtt's timeout."""
        paho_log = _PahoLog(asyncio.get_running_loop())
        client = self._client(paho_log)
        entering = asyncio.ensure_future(stack.enter_async_context(client))
        failed = asyncio.ensure_future(paho_log.failed.wait())
        try:
            await asyncio.wait((entering, failed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
            if not entering.done():
                entering.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await entering
        if entering.cancelled():
            reason = paho_log.first_error
            raise aiomqtt.MqttError(f"the broker closed the connection before accepting it: {reason}")
        return entering.result()

    async def run(self, emit: Emit) -> None:
        sink = Sink(emit, self.stats, self._clock, log, self.name)
        backoff = Backoff(initial_s=self.config.reconnect_delay, max_s=self.config.reconnect_max_delay)
        subscriptions = self._subscriptions()
        loop = asyncio.get_running_loop()
        while True:
            accepted_at: float | None = None
            try:
                async with contextlib.AsyncExitStack() as stack:
                    client = await self._connect(stack)
                    accepted_at = loop.time()
                    for topic, qos in subscriptions.items():
                        granted = await client.subscribe(topic, qos=qos)
                        self._subscribed(topic, granted, sink)
                    self._link.up()
                    async for message in client.messages:
                        self.stats.reads += 1
                        self._on_message(
                            str(message.topic), bytes(message.payload or b""), sink, retained=message.retain
                        )
            except MqttConnectError as exc:  # a CONNACK refusing us: bad login, client id not allowed, ...
                reason = f"the broker refused the connection: {exc}"
            except aiomqtt.MqttError as exc:
                reason = str(exc) or type(exc).__name__
            except OSError as exc:  # TLS files unreadable, DNS, ...
                reason = f"{type(exc).__name__}: {exc}"
            else:
                reason = "the broker closed the connection"
            if accepted_at is not None:
                if loop.time() - accepted_at >= _SHORT_SESSION_S:
                    backoff.reset()  # a session that lasted: the next attempt starts from the first delay
                    self._short_sessions = 0
                    self._takeover_logged = False
                else:  # accepted, then dropped at once: the backoff keeps growing
                    self._short_sessions += 1
                    if self._short_sessions >= _TAKEOVER_AFTER and not self._takeover_logged:
                        self._takeover_logged = True
                        log.error(
                            "%s: the broker closed the connection right after accepting it %d times in a "
                            "row: is another client connected with the same client id %r? A broker drops "
                            "the older of two connections with one client id (give each gateway its own "
                            "client_id or gateway id); retrying with a growing backoff",
                            self._what,
                            self._short_sessions,
                            self.client_id,
                        )
                        reason = f"connection taken over? {reason}"
            self.stats.errors += 1
            if self._link.down(reason):
                sink.all_bad(sorted(self._seen), f"link down: {reason}")
            await asyncio.sleep(backoff.next())

    def _subscribed(self, topic: str, granted: Any, sink: Sink) -> None:
        """Check the broker's SUBACK: a refused topic (0x80) is one ERROR, and its signals are BAD."""
        codes = list(granted) if isinstance(granted, list | tuple) else []
        refused = [c for c in codes if (c.is_failure if hasattr(c, "is_failure") else int(c) >= 0x80)]
        if not refused:
            if self._refused.pop(topic, None) is not None:
                log.info("%s: the broker accepts the subscription to %r again", self._what, topic)
            return
        code = refused[0]
        what = f"0x{int(getattr(code, 'value', code)):02X} {getattr(code, 'getName', lambda: '')()}".strip()
        reason = f"the broker refused the subscription to {topic!r} ({what})"
        self.stats.errors += 1
        self.stats.last_error = reason
        if self._refused.get(topic) != reason:
            log.error(
                "%s: %s: check the broker's access rules (ACL) for user %r and client id %r; "
                "its signals are marked bad",
                self._what,
                reason,
                self.config.username or "(anonymous)",
                self.client_id,
            )
        self._refused[topic] = reason
        names = [f"{self.name}.{key}" for key, spec in self.signals.items() if spec.topic == topic]
        sink.all_bad([n for n in names if not _PLACEHOLDER.search(n)], reason)

    def _on_message(
        self, topic: str, payload: bytes | bytearray, sink: Sink, *, retained: bool = False
    ) -> None:
        if isinstance(payload, bytearray):
            payload = bytes(payload)
        for key, spec in self.signals.items():
            captured = match_topic(spec.topic, topic)
            if captured is None:
                continue
            name = f"{self.name}.{signal_name(key, captured)}"
            self._seen.add(name)
            try:
                value, stamp = decode_payload(payload, spec)
            except _Garbage as exc:
                sink.garbage(name, f"{exc} (topic {topic})")
                continue
            if not retained:
                sink.good(name, value, stamp)
                continue
            max_age = spec.max_age if spec.max_age is not None else self.config.max_age
            if max_age is None or stamp is None:  # the last known value, of unknown or unchecked age
                sink.good(name, value, stamp, retained=True)
            elif self._clock.now() - stamp <= max_age:  # recent enough: an observation
                sink.good(name, value, stamp)
            else:
                when = datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")
                sink.bad(
                    name,
                    f"retained value {value!r:.40} from {when}, older than max_age {max_age:g}s: "
                    "the device has been silent since",
                    stamp,
                )
