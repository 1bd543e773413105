"""`mw-gateway fleet` (read_fleet) over a real NATS key-value bucket: an entry that is not a readable JSON
object is shown as unreadable, never an error."""

from __future__ import annotations

import uuid

import nats

from gateway.fleet.status import read_fleet
from gateway.sim.nats_cluster import NatsCluster


async def test_unreadable_status_entries_are_shown_as_such(nats_cluster: NatsCluster) -> None:
    """Before: an entry of 100,000 nested JSON arrays raised RecursionError out of read_fleet."""
    nc = await nats.connect(servers=nats_cluster.urls)
    try:
        js = nc.jetstream(timeout=5)
        kv = await js.create_key_value(bucket=f"status_{uuid.uuid4().hex[:8]}")
        await kv.put("deep", b"[" * 100_000 + b"]" * 100_000)
        await kv.put("list", b"[1, 2]")
        await kv.put("text", b"not json")
        await kv.put("fine", b'{"state": "running"}')
        rows = {row["gateway"]: row for row in await read_fleet(kv, now=0.0)}
    finally:
        await nc.close()
    assert {name: row["state"] for name, row in rows.items()} == {
        "deep": "unreadable",
        "fine": "running",
        "list": "unreadable",
        "text": "unreadable",
    }
