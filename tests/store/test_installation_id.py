"""Firing ids are unique per installation (issue 13, item 12): a lost and recreated state database, whose
counters start again, never gives a new firing the uuid of an old one."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from gateway.core.clock import ManualClock
from gateway.core.firings import Firing, TaskSpec, firing_uuid
from gateway.store import DB_FILENAME, Store
from gateway.store.db import Database
from gateway.store.schema import MIGRATIONS


def firing(key: str = "press1-lube:50000") -> Firing:
    return Firing(
        key=key, rule_id="press1-lube", fired_at=1000.0, task=TaskSpec(equipment="EQ-1", description="Lube")
    )


async def record(state_dir: Path) -> tuple[str, str]:
    store = await Store.open(state_dir, gateway_id="gw", clock=ManualClock(1000.0))
    try:
        (recorded,) = await store.outbox.record_firings([firing()])
        return recorded.uuid, await store.outbox.installation_id()
    finally:
        await store.close()


async def test_a_recreated_database_gives_the_same_key_a_new_uuid(tmp_path: Path) -> None:
    first_uuid, first_installation = await record(tmp_path / "card-1")
    second_uuid, second_installation = await record(tmp_path / "card-2")  # the replaced SD card
    assert re.fullmatch(r"[0-9a-f]{32}", first_installation)
    assert first_installation != second_installation
    assert first_uuid != second_uuid
    assert first_uuid == firing_uuid(first_installation, "gw", "press1-lube:50000")


async def test_the_installation_id_lives_as_long_as_the_database(tmp_path: Path) -> None:
    store = await Store.open(tmp_path, gateway_id="gw", clock=ManualClock(1000.0))
    before = await store.outbox.installation_id()
    await store.close()
    store = await Store.open(tmp_path, gateway_id="gw", clock=ManualClock(1000.0))
    try:
        assert await store.outbox.installation_id() == before
        (recorded,) = await store.outbox.record_firings([firing("press1-lube:100000")])
        assert recorded.uuid == firing_uuid(before, "gw", "press1-lube:100000")
    finally:
        await store.close()


async def test_a_database_from_before_gets_an_installation_id_and_keeps_its_firings(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    old = await Database.open(path, migrations=[m for m in MIGRATIONS if m[0] < 11])
    await old.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM meta WHERE key = 'installation_id'").fetchone() == (0,)
    store = await Store.open(tmp_path, gateway_id="gw", clock=ManualClock(1000.0))
    try:
        assert re.fullmatch(r"[0-9a-f]{32}", await store.outbox.installation_id())
    finally:
        await store.close()
