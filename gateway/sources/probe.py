"""Read every signal of one configured source once, exactly as `run` reads it (for `mw-gateway probe`).

The source is the real one (the same connection options, read plans, decoding, quality rules): it runs with
an emit that collects, until every signal has had its first sample or the time is up. What the device sent
(the raw registers, the OPC UA variant, the MQTT payload) is noted by a thin subclass of each connector at
the one place a reading arrives, before the source's own decoding, so the table can show both.

Before the source runs, one plain TCP connection to its host and port tells a refused connection, a timeout
and an unknown host apart, in words; the source is then not run at all.

Probing next to a running gateway must not disturb it:
- an MQTT source connects with its own client id and a clean session: the gateway's id would make the broker
  drop the gateway's connection, and its persistent session would hand the probe the gateway's messages;
- a Sparkplug B source only listens (its own client id, no will, no STATE, no rebirth request): the
  gateway's host id announced offline by a probe would make edge nodes stop publishing. A late listener
  sees values when an edge node publishes a birth; DATA before it cannot be decoded (aliases).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from gateway.core.ports import Source
from gateway.core.samples import Quality, Sample, Value

RAW_MAX = 60  # characters of a raw value shown


@dataclass
class Reading:
    """What probing one signal found. quality "none": no sample came within the time."""

    signal: str
    quality: str  # good | bad | none
    value: Value = None
    raw: str = ""
    error: str = ""
    retained: bool = False  # an MQTT retained message: the last known value, not a fresh observation
    optional: bool = False  # a glob that may rightly match nothing (no OPC UA alarm active): not a failure

    @property
    def good(self) -> bool:
        return self.quality == Quality.GOOD.value


def _short(text: str) -> str:
    return text if len(text) <= RAW_MAX else text[: RAW_MAX - 3] + "..."


def endpoint(config: Any) -> tuple[str, int] | None:
    """(host, port) of a TCP source, None for a serial line."""
    host = getattr(config, "host", None)
    if host is not None:
        return str(host), int(config.port)
    url = getattr(config, "url", None)
    if not isinstance(url, str):
        return None
    parsed = urlparse(url)
    defaults = {"opc.tcp": 4840, "mqtt": 1883, "mqtts": 8883}
    try:
        port = parsed.port
    except ValueError:
        port = None
    return parsed.hostname or "localhost", port or defaults.get(parsed.scheme, 0)


async def reach(host: str, port: int, wait_s: float) -> str:
    """'' when a TCP connection to host:port opens, else why not, in words a person can act on."""
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), wait_s)
    except ConnectionRefusedError:
        return (
            f"connection refused by {host}:{port} (nothing listens there: wrong port, or the server is down)"
        )
    except TimeoutError:
        return f"timeout: no answer from {host}:{port} within {wait_s:g}s (wrong address, or a firewall)"
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r}: {exc.strerror or exc}"
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ""


def probe_client_id(name: str) -> str:
    return f"mw-gateway-probe-{os.getpid()}-{name}"


def _probing_source(
    name: str, config: Any, raw: dict[str, str], *, state_dir: Path | None, gateway_id: str
) -> Source:
    """The source as `run` builds it, noting raw readings in `raw` (signal -> text) where the kind allows."""
    protocol = getattr(config, "protocol", "")
    if protocol == "mqtt":
        config = config.model_copy(update={"client_id": probe_client_id(name), "clean_session": True})
    if protocol == "modbus":
        from gateway.sources.modbus import ModbusConnector

        class ModbusProbe(ModbusConnector):
            def _emit_block(self, block: Any, response: Any, sink: Any) -> None:
                if block.table in ("coil", "discrete"):
                    bits = list(getattr(response, "bits", []))
                    for p in block.points:
                        at = p.address - block.start
                        if at < len(bits):
                            raw.setdefault(p.name, str(int(bool(bits[at]))))
                else:
                    regs = list(getattr(response, "registers", []))
                    for p in block.points:
                        at = p.address - block.start
                        part = regs[at : at + p.count]
                        if part:
                            raw.setdefault(p.name, " ".join(f"0x{r:04X}" for r in part))
                super()._emit_block(block, response, sink)

        return ModbusProbe(name, config)
    if protocol == "opcua":
        from gateway.sources.opcua import OpcuaConnector

        class OpcuaProbe(OpcuaConnector):
            def _on_change(self, event: Any, names: list[str], sink: Any) -> None:
                dv = event.data.monitored_item.Value
                variant = getattr(dv, "Value", None)
                kind = getattr(getattr(variant, "VariantType", None), "name", "")
                text = f"{kind} {event.value!r}".strip()
                status = getattr(dv, "StatusCode", None)
                if status is not None and not status.is_good():
                    text += f" ({status.name})"
                for n in names:
                    raw.setdefault(n, _short(text))
                super()._on_change(event, names, sink)

        return OpcuaProbe(name, config, state_dir=state_dir)
    if protocol == "mqtt":
        from gateway.sources.mqtt import MqttConnector, match_topic, signal_name

        class MqttProbe(MqttConnector):
            def _on_message(self, topic: str, payload: Any, sink: Any, *args: Any, **kwargs: Any) -> None:
                text = bytes(payload).decode("utf-8", errors="backslashreplace")
                for key, spec in self.signals.items():
                    captured = match_topic(spec.topic, topic)
                    if captured is not None:
                        raw.setdefault(f"{self.name}.{signal_name(key, captured)}", _short(repr(text)))
                super()._on_message(topic, payload, sink, *args, **kwargs)

        return MqttProbe(name, config, gateway_id=gateway_id)
    from gateway.sources.registry import build_source

    return build_source(name, config, state_dir=state_dir, gateway_id=gateway_id)


def _silence_reason(config: Any, signal: str, seconds: float) -> str:
    protocol = getattr(config, "protocol", "")
    if protocol == "sparkplug":
        spec = getattr(config, "signals", {}).get(signal.split(".", 1)[1])
        where = (
            f"{spec.node}/{spec.device}" if spec is not None and spec.device else getattr(spec, "node", "")
        )
        metric = getattr(spec, "metric", "")
        return (
            f"no birth or data from {where} with metric {metric!r} in {seconds:g}s (values come with a birth:"
            " raise --seconds, or have the edge node rebirth)"
        )
    if protocol == "mqtt":
        key = signal.split(".", 1)[1]
        signals = getattr(config, "signals", {})
        spec = signals.get(key)
        topic = spec if isinstance(spec, str) else getattr(spec, "topic", None)
        where = f" on topic {topic!r}" if topic else ""
        return f"no message{where} in {seconds:g}s"
    if protocol == "opcua" and signal.endswith(".alarm.*"):
        return f"no active or unacknowledged alarm reported (ConditionRefresh) in {seconds:g}s"
    if protocol == "opcua":
        return f"no value from the server in {seconds:g}s"
    return f"no answer in {seconds:g}s"


async def probe_source(
    name: str,
    config: Any,
    *,
    seconds: float = 10.0,
    state_dir: Path | None = None,
    gateway_id: str = "mw-gateway",
) -> list[Reading]:
    """Read every signal of one source once. Never raises for a device or network problem."""
    raw: dict[str, str] = {}
    source = _probing_source(name, config, raw, state_dir=state_dir, gateway_id=gateway_id)
    expected = source.signal_names()
    exact = [s for s in expected if not any(c in s for c in "*?[")]
    patterns = [s for s in expected if s not in exact]
    where = endpoint(config)
    if where is not None:
        problem = await reach(*where, wait_s=min(seconds, float(getattr(config, "timeout", seconds))))
        if problem:
            return [Reading(s, "bad", error=problem) for s in expected]

    first: dict[str, Sample] = {}
    changed = asyncio.Event()

    def collect(sample: Sample) -> None:
        if sample.signal not in first:
            first[sample.signal] = sample
            changed.set()

    async def all_answered() -> None:
        # a wildcard signal can match any number of topics: listen for the whole time
        while patterns or not all(s in first for s in exact):
            changed.clear()
            await changed.wait()

    logger = logging.getLogger("gateway.sources")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)  # the table says it all; the link's ERROR lines would repeat it
    sparkplug = getattr(config, "protocol", "") == "sparkplug"
    task = asyncio.create_task(
        _listen_sparkplug(source, config, collect) if sparkplug else source.run(collect)
    )
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_answered(), seconds)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        logger.setLevel(level)
    if task.done() and not task.cancelled() and task.exception() is not None:
        error = f"the source stopped: {task.exception()}"
        return [Reading(s, "bad", error=error) for s in expected]

    readings: list[Reading] = []
    for signal in exact:
        readings.append(_reading(signal, first.get(signal), raw, config, seconds))
    for pattern in patterns:
        matched = sorted(s for s in first if s not in exact and fnmatch.fnmatchcase(s, pattern))
        if not matched:
            silent = _reading(pattern, None, raw, config, seconds)
            if pattern.endswith(".alarm.*"):
                silent = replace(silent, optional=True)  # no alarm active: the usual state
            readings.append(silent)
        readings.extend(_reading(s, first[s], raw, config, seconds) for s in matched)
    return readings


async def _listen_sparkplug(source: Any, config: Any, emit: Any) -> None:
    """Feed the group's messages to the Sparkplug source without acting as a host application."""
    import aiomqtt

    source.bind(emit)
    url = urlparse(config.url)
    tls = url.scheme == "mqtts"
    params = None
    if tls:
        params = aiomqtt.TLSParameters(
            ca_certs=config.ca, certfile=config.certificate, keyfile=config.private_key
        )
    async with aiomqtt.Client(
        url.hostname or "localhost",
        url.port or (8883 if tls else 1883),
        identifier=probe_client_id(source.name),
        clean_session=True,
        username=config.username,
        password=config.password.get_secret_value() if config.password else None,
        tls_params=params,
        timeout=config.timeout,
    ) as client:
        await client.subscribe(f"spBv1.0/{config.group}/#", qos=0)
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
            await source.on_message(str(message.topic), bytes(payload))


def _reading(signal: str, sample: Sample | None, raw: dict[str, str], config: Any, seconds: float) -> Reading:
    if sample is None:
        return Reading(signal, "none", error=_silence_reason(config, signal, seconds))
    return Reading(
        signal,
        sample.quality.value,
        value=sample.value,
        raw=raw.get(signal, ""),
        error=sample.reason,
        retained=sample.retained,
    )
