"""Discovery for Sparkplug B: which edge nodes, devices and metrics a group has, from the births seen on the
broker within a few seconds, and a ready `signals:` block for gateway.yaml.

Births are not retained: an edge node is listed with its metrics only if it publishes a birth while we
listen (when it starts, or when a host asks for a rebirth; `rebirth=True` asks every node that is heard
from without a birth, once, which every subscriber of that node then receives too). Nodes heard from only
by DATA are listed without metrics, so a quiet listing says why it is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

import aiomqtt

from gateway.sources import sparkplug_codec as codec
from gateway.sources.sparkplug import NAMESPACE, parse_topic

PASSWORD_ENV = "MW_MQTT_PASSWORD"
_CONTROL = ("Node Control/", "Device Control/")
_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")


@dataclass(frozen=True, slots=True)
class SeenMetric:
    name: str
    datatype: str  # the specification's name: Int32, Double, ...
    supported: bool  # False for arrays, DataSet, Template, File: a signal would only be BAD


@dataclass
class SeenScope:
    """An edge node (device None) or one of its devices."""

    node: str
    device: str | None
    birth_seen: bool = False
    metrics: dict[str, SeenMetric] = field(default_factory=dict)


@dataclass
class Listing:
    group: str
    seconds: float
    scopes: dict[tuple[str, str | None], SeenScope] = field(default_factory=dict)

    def add_birth(self, node: str, device: str | None, payload: codec.Payload) -> None:
        scope = self.scopes.setdefault((node, device), SeenScope(node, device))
        scope.birth_seen = True
        for metric in payload.metrics:
            if metric.name is None or metric.name == codec.BDSEQ_METRIC or metric.name.startswith(_CONTROL):
                continue
            scope.metrics[metric.name] = SeenMetric(
                metric.name, codec.type_name(metric.datatype), codec.is_supported(metric.datatype)
            )

    def add_heard(self, node: str, device: str | None) -> None:
        self.scopes.setdefault((node, device), SeenScope(node, device))


async def list_sparkplug(
    url: str,
    group: str,
    seconds: float = 10.0,
    *,
    username: str | None = None,
    password: str | None = None,
    ca: str | None = None,
    certificate: str | None = None,
    private_key: str | None = None,
    rebirth: bool = False,
) -> Listing:
    """Listen to spBv1.0/<group>/# for `seconds` and return what the births said. Raises aiomqtt.MqttError
    when the broker cannot be reached."""
    parsed = urlparse(url)
    tls = parsed.scheme == "mqtts"
    tls_params = (
        aiomqtt.TLSParameters(ca_certs=ca, certfile=certificate, keyfile=private_key) if tls else None
    )
    listing = Listing(group, seconds)
    asked: set[str] = set()
    async with aiomqtt.Client(
        parsed.hostname or "localhost",
        parsed.port or (8883 if tls else 1883),
        username=username,
        password=password,
        tls_params=tls_params,
    ) as client:
        await client.subscribe(f"{NAMESPACE}/{group}/#", qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for message in client.messages:
                    topic = parse_topic(str(message.topic), group)
                    if topic is None or not isinstance(message.payload, bytes | bytearray):
                        continue
                    kind, node, device = topic
                    try:
                        payload = codec.decode(bytes(message.payload))
                    except codec.PayloadError:
                        listing.add_heard(node, device)
                        continue
                    if kind in ("NBIRTH", "DBIRTH"):
                        listing.add_birth(node, device, payload)
                    elif kind in ("NDATA", "DDATA"):
                        listing.add_heard(node, device)
                        born = listing.scopes.get((node, None), _NO).birth_seen
                        if rebirth and node not in asked and not born:
                            asked.add(node)
                            stamp = int(time.time() * 1000)
                            await client.publish(
                                f"{NAMESPACE}/{group}/NCMD/{node}", codec.rebirth_request(stamp), qos=0
                            )
    return listing


_NO = SeenScope("", None)


def _key(scope: SeenScope, metric: str, taken: set[str]) -> str:
    base = _UNSAFE.sub("_", f"{scope.device or scope.node}_{metric}").strip("_").lower() or "metric"
    if not base[0].isalpha() and base[0] != "_":
        base = f"m_{base}"
    key, n = base, 2
    while key in taken:
        key, n = f"{base}_{n}", n + 1
    taken.add(key)
    return key


def _quote(text: str) -> str:
    """A YAML flow scalar: plain when safe, else double-quoted."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_ ./-]*", text) and not text.endswith(" "):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def signals_block(
    listing: Listing,
    *,
    source: str | None = None,
    url: str = "mqtt://HOST:1883",
    connection: Mapping[str, str] | None = None,
) -> str:
    """YAML for gateway.yaml: a `signals:` block (with the whole source entry around it when `source` is
    given, with the `connection` keys and their YAML values: username, ca...). Unsupported metrics are listed
    as comments with their datatype."""
    lines: list[str] = []
    indent = ""
    if source is not None:
        lines += [
            f"{source}:",
            "  protocol: sparkplug",
            f"  url: {url}",
            f"  group: {_quote(listing.group)}",
            "  host_id: CHANGE-ME  # this gateway's own host id; never a SCADA host's",
        ]
        lines += [f"  {key}: {value}" for key, value in (connection or {}).items()]
        indent = "  "
    lines.append(f"{indent}signals:")
    taken: set[str] = set()
    for (_node, _device), scope in sorted(listing.scopes.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        where = f"node {scope.node}" + (f", device {scope.device}" if scope.device else "")
        if not scope.birth_seen:
            lines.append(f"{indent}  # {where}: no birth seen in {listing.seconds:g}s (ask for a rebirth)")
            continue
        lines.append(f"{indent}  # {where}")
        for metric in sorted(scope.metrics.values(), key=lambda m: m.name):
            device = f", device: {_quote(scope.device)}" if scope.device else ""
            spec = f"{{node: {_quote(scope.node)}{device}, metric: {_quote(metric.name)}}}"
            if metric.supported:
                lines.append(f"{indent}  {_key(scope, metric.name, taken)}: {spec}  # {metric.datatype}")
            else:
                lines.append(f"{indent}  # {metric.name}: {metric.datatype} is not supported")
    if not listing.scopes:
        lines.append(f"{indent}  # no edge node of group {listing.group} was heard in {listing.seconds:g}s")
    return "\n".join(lines) + "\n"


def format_listing(listing: Listing) -> str:
    """A human-readable table: one line per node or device, then its metrics."""
    if not listing.scopes:
        return f"no edge node of group {listing.group} was heard in {listing.seconds:g}s\n"
    lines = []
    for (node, device), scope in sorted(listing.scopes.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        where = node if device is None else f"{node}/{device}"
        if not scope.birth_seen:
            lines.append(f"{where}: heard, but no birth within {listing.seconds:g}s")
            continue
        lines.append(f"{where}: {len(scope.metrics)} metrics")
        for metric in sorted(scope.metrics.values(), key=lambda m: m.name):
            note = "" if metric.supported else "  (not supported)"
            lines.append(f"  {metric.name}  {metric.datatype}{note}")
    return "\n".join(lines) + "\n"


def cmd_browse(
    url: str,
    group: str,
    *,
    seconds: float,
    yaml_source: str | None,
    rebirth: bool,
    username: str | None = None,
    ca: str | None = None,
    certificate: str | None = None,
    private_key: str | None = None,
) -> int:
    """`mw-gateway browse mqtt://HOST:PORT --sparkplug GROUP`: 0 when at least one birth was seen. The
    password of `username` is read from $MW_MQTT_PASSWORD (never on the command line)."""
    password = os.environ.get(PASSWORD_ENV, "") if username else None
    try:
        listing = asyncio.run(
            list_sparkplug(
                url,
                group,
                seconds,
                username=username,
                password=password,
                ca=ca,
                certificate=certificate,
                private_key=private_key,
                rebirth=rebirth,
            )
        )
    except aiomqtt.MqttError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    if yaml_source is not None:
        connection = {"ca": ca, "certificate": certificate, "private_key": private_key, "username": username}
        settings = {key: _quote(value) for key, value in connection.items() if value is not None}
        if username:
            settings["password"] = f"${{{PASSWORD_ENV}}}"
        print(signals_block(listing, source=yaml_source, url=url, connection=settings), end="")
    else:
        print(format_listing(listing), end="")
    return 0 if any(scope.birth_seen for scope in listing.scopes.values()) else 1
