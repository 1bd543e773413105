"""SQLite fault injection for tests and torture campaigns: fail the Nth statement, as a full disk would.

This is how SQLite tests itself (an I/O error at every point in turn). `inject(db, plan)` wraps the
database's connection so that every statement (`execute`, `executemany`, `execute_fetchall`, and the
BEGIN/COMMIT the write lock issues) asks `plan` first; when the plan says so, the statement raises
`sqlite3.OperationalError("database or disk is full")` *instead of running*. A failed COMMIT therefore leaves
nothing on the disk, like SQLite's own SQLITE_FULL. ROLLBACK is never failed (SQLite's rollback of a failed
transaction does not need new disk space). Production code never imports this module.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from gateway.store.db import Database

DISK_FULL = "database or disk is full"


class FaultPlan:
    """Which statements fail. Statements are numbered from 1 in the order they are issued.

    `fail_at`: these statement numbers fail once each. `fail_from`: every statement from this number on fails
    (a disk that stays full) until `heal()`. `rate`: any statement fails with this probability (load tests).
    `only`: count only statements whose SQL starts with one of these words (e.g. ("COMMIT",)); None counts
    them all. `fail_next`: the next statement starting with each listed word fails.
    """

    def __init__(
        self,
        *,
        fail_at: Iterable[int] = (),
        fail_from: int | None = None,
        only: tuple[str, ...] | None = None,
        rate: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.rate = rate  # besides the numbered ones, each statement fails with this probability
        self._rng = rng or random.Random(0)
        self.fail_at = set(fail_at)
        self.fail_from = fail_from
        self.only = tuple(w.upper() for w in only) if only else None
        self.count = 0
        self._hold: tuple[str, asyncio.Event, asyncio.Event] | None = None
        self.fail_next: list[str] = []  # the next statement starting with each of these words fails
        self.failed: list[str] = []  # the statements that were failed, in order

    def hold_after(self, prefix: str) -> tuple[asyncio.Event, asyncio.Event]:
        """The next statement starting with `prefix` runs, then its caller waits, transaction open, until the
        second event is set; the first is set when that happens. For interleaving other work there."""
        self._hold = (prefix.upper(), asyncio.Event(), asyncio.Event())
        return self._hold[1], self._hold[2]

    async def after(self, sql: str) -> None:
        hold = self._hold
        if hold is not None and " ".join(sql.split()).upper().startswith(hold[0]):
            self._hold = None
            hold[1].set()
            await hold[2].wait()

    def clear_hold(self) -> None:
        self._hold = None

    def heal(self) -> None:
        self.fail_at.clear()
        self.fail_next.clear()
        self.fail_from = None
        self.rate = 0.0

    def should_fail(self, sql: str) -> bool:
        head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if head == "ROLLBACK":
            return False
        if head in self.fail_next:
            self.fail_next.remove(head)
            self.failed.append(sql)
            return True
        if self.only is not None and head not in self.only:
            return False
        self.count += 1
        if (
            self.count in self.fail_at
            or (self.fail_from is not None and self.count >= self.fail_from)
            or (self.rate > 0 and self._rng.random() < self.rate)
        ):
            self.failed.append(sql)
            return True
        return False


class FaultyConnection:
    """Wraps an aiosqlite connection; everything not a statement passes through unchanged."""

    def __init__(self, conn: Any, plan: FaultPlan) -> None:
        self._conn = conn
        self.plan = plan

    def _check(self, sql: str) -> None:
        if self.plan.should_fail(sql):
            raise sqlite3.OperationalError(DISK_FULL)

    async def execute(self, sql: str, parameters: Any = None) -> Any:
        self._check(sql)
        if parameters is None:
            result = await self._conn.execute(sql)
        else:
            result = await self._conn.execute(sql, parameters)
        await self.plan.after(sql)
        return result

    async def executemany(self, sql: str, parameters: Any) -> Any:
        self._check(sql)
        result = await self._conn.executemany(sql, parameters)
        await self.plan.after(sql)
        return result

    async def execute_fetchall(self, sql: str, parameters: Any = None) -> Any:
        self._check(sql)
        if parameters is None:
            return await self._conn.execute_fetchall(sql)
        return await self._conn.execute_fetchall(sql, parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def inject(db: Database, plan: FaultPlan) -> Callable[[], None]:
    """Route `db`'s statements through `plan`. Returns a function that removes the wrapper."""
    original = db.conn
    db.conn = FaultyConnection(original, plan)  # type: ignore[assignment]

    def remove() -> None:
        db.conn = original

    return remove
