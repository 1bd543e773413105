"""Persistent rule state: what the engine needs to resume after a restart without refiring or missing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.core.clock import Clock
from gateway.store.db import Database
from gateway.store.outbox import _save_rule_states


class RuleStateStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def load(self) -> dict[str, Any]:
        rows = await self._db.fetchall("SELECT rule_id, state FROM rule_state")
        return {r["rule_id"]: json.loads(r["state"]) for r in rows}

    async def save(self, states: Mapping[str, Any]) -> None:
        if not states:
            return
        async with self._db.write() as conn:
            await _save_rule_states(conn, states, self._clock.now())
