"""`mw-gateway relay [-c relay.yaml]` and `mw-gateway fleet [-c gateway.yaml] [--format table|json]`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from gateway.core.errors import ConfigError
from gateway.fleet import names
from gateway.fleet.config import DEFAULT_RELAY_CONFIG, RELAY_CONFIG_ENV, BusSection
from gateway.fleet.relay_config import load_relay_config


def require_nats() -> None:
    try:
        import nats  # noqa: F401
    except ImportError:
        print(
            "the fleet needs the NATS client: pip install 'mw-gateway[fleet]' (nats-py)",
            file=sys.stderr,
        )
        raise SystemExit(1) from None


def resolve_relay_path(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    if Path(DEFAULT_RELAY_CONFIG).exists() or not os.environ.get(RELAY_CONFIG_ENV):
        return Path(DEFAULT_RELAY_CONFIG)
    return Path(os.environ[RELAY_CONFIG_ENV])


def cmd_relay(path: Path) -> int:
    try:
        config = load_relay_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    require_nats()
    from gateway.fleet.relay import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 1
    return 0


async def fleet_rows(bus: BusSection, *, name: str) -> list[dict[str, object]]:
    from gateway.fleet.bus import connect
    from gateway.fleet.status import read_fleet

    nc = await connect(bus, name=name, reconnect=False)
    try:
        kv = await nc.jetstream(timeout=bus.request_timeout).key_value(names.status_bucket(bus.name))
        return list(await read_fleet(kv))
    finally:
        await nc.close()


def cmd_fleet(bus: BusSection | None, gateway_id: str, fmt: str) -> int:
    if bus is None:
        print("this gateway.yaml has no fleet: section (docs/fleet.md)", file=sys.stderr)
        return 1
    require_nats()
    from gateway.fleet.status import render_table

    try:
        rows = asyncio.run(fleet_rows(bus, name=gateway_id))
    except Exception as exc:
        print(
            f"fleet {bus.name}: NATS not reachable or no status bucket ({type(exc).__name__}: {exc})",
            file=sys.stderr,
        )
        return 1
    if fmt == "json":
        print(json.dumps({"fleet": bus.name, "gateways": rows}, indent=2, sort_keys=True))
    else:
        sys.stdout.write(render_table(rows))
    return 0
