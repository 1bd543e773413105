"""Subjects, streams, consumers and buckets of one fleet (all derived from `fleet.name`).

stream   <NAME>_WEBHOOKS           subjects <name>.webhooks.>
subject  <name>.webhooks.<gateway> one per gateway (the relay publishes, the gateway consumes)
consumer gw_<gateway>              durable pull consumer, filter = the gateway's subject
bucket   <name>_quota              key <network>.<YYYY-MM>: tasks reserved this month, fleet-wide
bucket   <name>_status             key <gateway>: heartbeat + status summary (JSON)
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


def token(value: str) -> str:
    """A subject token / KV key part made of safe characters only (gateway ids may hold dots or spaces)."""
    cleaned = _TOKEN.sub("_", value.strip())[:64]
    return cleaned or "_"


def stream(fleet: str) -> str:
    return f"{fleet.upper()}_WEBHOOKS"


def subject_prefix(fleet: str) -> str:
    return f"{fleet}.webhooks"


def subject(fleet: str, gateway: str) -> str:
    return f"{subject_prefix(fleet)}.{token(gateway)}"


def consumer(gateway: str) -> str:
    return f"gw_{token(gateway)}"


def quota_bucket(fleet: str) -> str:
    return f"{fleet}_quota"


def status_bucket(fleet: str) -> str:
    return f"{fleet}_status"


def quota_key(network: str, month: str) -> str:
    return f"{token(network)}.{month}"
