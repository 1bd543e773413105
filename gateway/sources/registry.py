"""Build a Source from its `sources:` entry, importing only the protocol library that entry needs."""

from __future__ import annotations

from pathlib import Path

from gateway.core.clock import Clock
from gateway.core.errors import GatewayError
from gateway.core.ports import Source
from gateway.sources.schema import ModbusSource, MqttSource, OpcuaSource, SparkplugSource


def build_source(
    name: str,
    config: ModbusSource | OpcuaSource | MqttSource | SparkplugSource,
    *,
    clock: Clock | None = None,
    state_dir: Path | None = None,
    gateway_id: str = "mw-gateway",
) -> Source:
    """The running form of one configured source. state_dir holds generated OPC UA client certificates;
    gateway_id names the default MQTT client id (persistent sessions need a stable one)."""
    if isinstance(config, ModbusSource):
        from gateway.sources.modbus import ModbusConnector

        return ModbusConnector(name, config, clock=clock)
    if isinstance(config, OpcuaSource):
        from gateway.sources.opcua import OpcuaConnector

        return OpcuaConnector(name, config, clock=clock, state_dir=state_dir)
    if isinstance(config, MqttSource):
        from gateway.sources.mqtt import MqttConnector

        return MqttConnector(name, config, clock=clock, gateway_id=gateway_id)
    if isinstance(config, SparkplugSource):
        try:
            from gateway.sources.sparkplug import SparkplugConnector  # imports protobuf (the sparkplug extra)
        except ImportError as exc:
            raise GatewayError(
                f"source {name}: protocol: sparkplug needs the protobuf package ({exc}): "
                "pip install 'mw-gateway[sparkplug]'"
            ) from None

        return SparkplugConnector(name, config, clock=clock, gateway_id=gateway_id)
    raise TypeError(f"unknown source config {type(config).__name__}")
