"""What `mw-gateway check` needs from the configuration besides signal names: their declared types."""

from __future__ import annotations

import re

from gateway.config import Config

_PLACEHOLDER = re.compile(r"\{(\d+)\}")


def signal_types(config: Config) -> dict[str, str]:
    """Full signal name (or an fnmatch glob for MQTT keys with placeholders) -> number | string | bool | any,
    as the source will decode it."""
    out: dict[str, str] = {}
    for source, cfg in config.sources.items():
        protocol = getattr(cfg, "protocol", "")
        for key, spec in getattr(cfg, "signals", {}).items():
            name = f"{source}.{_PLACEHOLDER.sub('*', key)}"
            if protocol == "modbus":
                kind = spec.value_type
                out[name] = kind if kind in ("bool", "string") else "number"
            elif protocol == "opcua":
                out[name] = "any" if isinstance(spec, str) else str(spec.type)
            elif protocol == "mqtt":
                out[name] = "number" if isinstance(spec, str) else str(spec.type)
    return out
