"""The store: the only code that talks to SQLite (see docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

from gateway.core.clock import Clock, SystemClock
from gateway.store.db import DB_FILENAME, Database
from gateway.store.ledger import Ledger
from gateway.store.outbox import FiringStatus, Outbox, OutboxRow, OutboxStatus, Recorded
from gateway.store.rulestate import RuleStateStore

__all__ = ["DB_FILENAME", "FiringStatus", "OutboxRow", "OutboxStatus", "Recorded", "Store"]


class Store:
    """One SQLite database in the state directory, with its query groups as attributes."""

    def __init__(self, db: Database, *, clock: Clock, gateway_id: str) -> None:
        self.db = db
        self.clock = clock
        self.outbox = Outbox(db, clock, gateway_id)
        self.rules = RuleStateStore(db, clock)
        self.ledger = Ledger(db, clock)

    @classmethod
    async def open(cls, state_dir: Path, *, gateway_id: str, clock: Clock | None = None) -> Store:
        db = await Database.open(Path(state_dir) / DB_FILENAME)
        return cls(db, clock=clock or SystemClock(), gateway_id=gateway_id)

    @property
    def path(self) -> Path:
        return self.db.path

    async def close(self) -> None:
        await self.db.close()
