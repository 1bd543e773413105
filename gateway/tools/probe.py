"""`mw-gateway probe`: connect to every configured source once, read every signal, print what came back.

The command an integrator runs before `systemctl start`: nothing is written to the state database and nothing
is sent to the CMMS (only an OPC UA source with `security:` and no certificate of its own creates its client
certificate under the state folder, as `run` would, so that the server trusts the same one later).
Exit 0 when every signal is good, 1 when any is not.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from gateway.config import Config, load_config
from gateway.core.errors import ConfigError
from gateway.sources.probe import Reading, probe_source

HEADER = ("SIGNAL", "RAW", "VALUE", "QUALITY", "ERROR")


async def probe_config(config: Config, *, source: str | None = None, seconds: float = 10.0) -> list[Reading]:
    """Every signal of every source (or of one), probed at the same time."""
    names = [source] if source is not None else list(config.sources)
    results = await asyncio.gather(
        *(
            probe_source(
                name,
                config.sources[name],
                seconds=seconds,
                state_dir=config.state_dir,
                gateway_id=config.gateway.id,
            )
            for name in names
        )
    )
    return [reading for readings in results for reading in readings]


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def format_table(readings: list[Reading]) -> str:
    rows = [HEADER]
    for r in readings:
        quality = r.quality + (" (retained)" if r.retained else "")
        rows.append((r.signal, r.raw or "-", _value(r.value), quality, r.error))
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def cmd_probe(
    path: Path, *, source: str | None = None, seconds: float = 10.0, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print("probe: fix gateway.yaml first (mw-gateway check)", file=sys.stderr)
        return 1
    if source is not None and source not in config.sources:
        known = ", ".join(sorted(config.sources)) or "none"
        print(f"probe: no source {source!r} in {path} (sources: {known})", file=sys.stderr)
        return 2
    if not config.sources:
        print(f"probe: {path} configures no sources", file=sys.stderr)
        return 1
    readings = asyncio.run(probe_config(config, source=source, seconds=seconds))
    print(format_table(readings), file=out)
    good = sum(r.good for r in readings)
    bad = sum(1 for r in readings if not r.good and not r.optional)
    print(f"\n{len(readings)} signals: {good} good, {bad} not good", file=out)
    return 0 if bad == 0 else 1
