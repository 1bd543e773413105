"""The one SQLite connection: pragmas, migrations, and the write lock.

Every write goes through `async with db.write() as conn:` — one asyncio lock and one IMMEDIATE transaction,
committed at the end of the block (rolled back on error). aiosqlite runs every operation of a connection on
one thread, in order; the lock keeps our own transactions from interleaving at await points.

Reads (`fetchall`, `fetchone`) take the same lock: on the one shared connection, a read between two
statements of an open write transaction would see rows that transaction has not committed (and may roll
back). Under the lock a read runs only between transactions, so it sees committed data only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.core.errors import StoreError
from gateway.store.schema import MIGRATIONS

log = logging.getLogger(__name__)

DB_FILENAME = "gateway.sqlite3"

# WAL + synchronous=FULL: a transaction is on the disk when COMMIT returns (the WAL is fsynced at every
# commit), and readers (the CLI, the status page) never block the writer. busy_timeout lets
# `mw-gateway outbox retry` write while the service runs.
PRAGMAS: tuple[tuple[str, str], ...] = (
    ("journal_mode", "WAL"),
    ("synchronous", "FULL"),
    ("foreign_keys", "ON"),
    ("busy_timeout", "5000"),
)


def describe_sqlite_error(exc: BaseException) -> str:
    text = str(exc)
    if "disk is full" in text or "database or disk is full" in text:
        return "the disk holding the state directory is full: free some space; queued work is kept"
    if "readonly" in text or "read-only" in text:
        return "the state database is read-only: check the permissions of the state directory"
    return f"SQLite error: {text}"


class Database:
    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, *, migrations: Iterable[tuple[int, str]] = MIGRATIONS) -> Database:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {path}: {describe_sqlite_error(exc)}") from exc
        conn.row_factory = aiosqlite.Row
        db = cls(conn, path)
        try:
            for pragma, value in PRAGMAS:
                await conn.execute(f"PRAGMA {pragma}={value}")
            mode = await conn.execute_fetchall("PRAGMA journal_mode")
            if str(next(iter(mode))[0]).lower() != "wal":
                log.warning("%s: SQLite refused WAL mode (journal_mode=%s): writes are slower", path, mode)
            await db._migrate(migrations)
        except sqlite3.Error as exc:
            await conn.close()
            raise StoreError(f"cannot use {path}: {describe_sqlite_error(exc)}") from exc
        return db

    async def _migrate(self, migrations: Iterable[tuple[int, str]]) -> None:
        await self.conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
        rows = await self.conn.execute_fetchall("SELECT version FROM schema_version")
        applied = {int(r[0]) for r in rows}
        for version, sql in sorted(migrations):
            if version in applied:
                continue
            async with self.write() as conn:
                for statement in _split_sql(sql):
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version(version) VALUES (?)", (version,))
            log.info("state database migrated to schema version %d", version)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._settle("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                if self.conn.in_transaction:  # SQLite may have rolled back already (e.g. after SQLITE_FULL)
                    await self._settle("ROLLBACK")
                raise
            try:
                await self._settle("COMMIT")
            except sqlite3.Error:
                # A failed COMMIT (disk full, I/O error) can leave the transaction open: end it, so the next
                # write starts clean. Nothing of this transaction is on the disk.
                if self.conn.in_transaction:
                    await self._settle("ROLLBACK")
                raise

    async def _settle(self, sql: str) -> None:
        """Run a transaction-control statement to its end even if the caller is cancelled meanwhile.

        aiosqlite runs statements on its own thread: a cancelled await does not stop the statement, so the
        connection's transaction state would be unknown when the lock is released. Waiting for it keeps every
        write() starting from "no transaction"; a cancellation is re-raised afterwards (a COMMIT that was
        cancelled has still committed).
        """
        fut = asyncio.ensure_future(self.conn.execute(sql))
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await fut
            raise

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """Committed rows only: waits for a write transaction in progress to end (see the module doc)."""
        async with self._lock:
            return list(await self.conn.execute_fetchall(sql, tuple(params)))

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        for row in await self.fetchall(sql, params):
            return row
        return None

    async def close(self) -> None:
        await self.conn.close()


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (no triggers with inner semicolons in our migrations)."""
    statements, current = [], []
    for line in script.splitlines():
        stripped = line.split("--", 1)[0]
        current.append(stripped)
        if stripped.rstrip().endswith(";"):
            statement = "\n".join(current).strip()
            if statement.strip(";").strip():
                statements.append(statement)
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return statements
