"""NATS permissions of each fleet role (docs/fleet.md, "Accounts"): printed for operators, used by the tests.

- a gateway may consume ONLY its own durable consumer (whose filter is pinned to its own subject in the
  create subject), acknowledge its own messages, write ONLY its own status key, read the fleet's status,
  and read/compare-and-set the quota keys; replies come to its own inbox prefix `_INBOX_<gateway>`;
- the relay may ONLY publish webhooks into the stream (and read the status bucket for its status page);
- the admin (the operator, once) creates the stream and the buckets.
Nobody but the admin may create, change or delete streams or buckets.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.fleet import names


def inbox_prefix(role: str) -> str:
    return f"_INBOX_{names.token(role)}"


def _status_read(fleet: str) -> list[str]:
    kv = f"KV_{names.status_bucket(fleet)}"
    return [
        f"$JS.API.STREAM.INFO.{kv}",
        f"$JS.API.DIRECT.GET.{kv}.>",
        f"$JS.API.STREAM.MSG.GET.{kv}",
        f"$JS.API.CONSUMER.CREATE.{kv}",  # keys(): an ephemeral ordered consumer over the bucket
        f"$JS.API.CONSUMER.CREATE.{kv}.>",
        f"$JS.API.CONSUMER.INFO.{kv}.>",
        f"$JS.API.CONSUMER.DELETE.{kv}.>",
        f"$JS.FC.{kv}.>",
    ]


def gateway_permissions(fleet: str, gateway: str) -> dict[str, Any]:
    stream, consumer = names.stream(fleet), names.consumer(gateway)
    quota = f"KV_{names.quota_bucket(fleet)}"
    return {
        "publish": {
            "allow": [
                f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
                f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}.{names.subject(fleet, gateway)}",
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                f"$JS.ACK.{stream}.{consumer}.>",
                f"$KV.{names.status_bucket(fleet)}.{names.token(gateway)}",
                *_status_read(fleet),
                f"$KV.{names.quota_bucket(fleet)}.>",
                f"$JS.API.STREAM.INFO.{quota}",
                f"$JS.API.DIRECT.GET.{quota}.>",
                f"$JS.API.STREAM.MSG.GET.{quota}",
            ]
        },
        "subscribe": {"allow": [f"{inbox_prefix(gateway)}.>"]},
    }


def relay_permissions(fleet: str, role: str = "relay") -> dict[str, Any]:
    return {
        "publish": {
            "allow": [
                f"{names.subject_prefix(fleet)}.>",
                f"$JS.API.STREAM.INFO.{names.stream(fleet)}",
                *_status_read(fleet),
            ]
        },
        "subscribe": {"allow": [f"{inbox_prefix(role)}.>"]},
    }


def accounts_config(
    fleet: str,
    *,
    gateways: dict[str, str],
    relay_password: str,
    admin_password: str,
    account: str = "FLEET",
) -> str:
    """An `accounts { ... }` block (nats-server accepts JSON syntax) with users and passwords. In production
    prefer nkeys or JWT credentials; the permissions are the same."""
    users: list[dict[str, Any]] = [
        {"user": "admin", "password": admin_password},
        {"user": "relay", "password": relay_password, "permissions": relay_permissions(fleet)},
    ]
    for gateway, password in gateways.items():
        users.append(
            {"user": gateway, "password": password, "permissions": gateway_permissions(fleet, gateway)}
        )
    block = {account: {"jetstream": "enabled", "users": users}}
    return "accounts: " + json.dumps(block, indent=2) + "\n"
