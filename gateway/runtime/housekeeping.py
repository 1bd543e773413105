"""Retention: delivered outbox rows and old webhook events are pruned after `dispatcher.delivered_retention`,
spare-part consumptions and reported activities (with their events) after `dispatcher.history_retention`.

Firings themselves are kept (they are the history the reconciliation reads); only the delivery bookkeeping of
delivered rows and the raw webhook events go. Dead, queued and dropped rows are never pruned: they need a
person; nor the row of a firing whose task is still open (suppression, issue 18.12). Deleted pages are reused
by SQLite; nothing is vacuumed (a VACUUM rewrites the whole file: SD wear).

Pruning runs in short transactions of PRUNE_BATCH rows, as a background task of its own started by the
periodic tick: the tick (which feeds the systemd watchdog) never waits for it, and the engine and the
webhooks get the database between two batches (issue 18.11: one 69 s transaction got the service killed by
the watchdog, rolled back, and started again at the next start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.core.clock import Clock
from gateway.core.errors import StoreError
from gateway.core.units import human_bytes
from gateway.runtime.disk import DISK_CHECK_INTERVAL_S, DiskStatus, check_disk
from gateway.store import Store
from gateway.store.db import describe_sqlite_error

log = logging.getLogger(__name__)

RETENTION_INTERVAL_S = 3600.0  # how often the gateway prunes


@dataclass(frozen=True)
class Pruned:
    outbox_rows: int = 0
    webhook_events: int = 0

    @property
    def total(self) -> int:
        return self.outbox_rows + self.webhook_events


async def prune(
    store: Store, *, now: float, retention_s: float, history_s: float | None = None, batch: int | None = None
) -> Pruned:
    """Delete what is older than `now - retention_s` (consumptions and activities: `now - history_s`; None
    keeps them). Returns how many rows went."""
    cutoff = now - retention_s
    history = None if history_s is None else now - history_s
    extra = {} if batch is None else {"batch": batch}
    rows = await store.outbox.prune_delivered(older_than=cutoff, **extra)
    events = await store.ledger.prune_events(older_than=cutoff, history_older_than=history, **extra)
    result = Pruned(outbox_rows=rows, webhook_events=events)
    if result.total:
        log.info(
            "retention: pruned %d delivered outbox rows and %d webhook events older than %.0f days",
            rows,
            events,
            retention_s / 86400,
        )
    return result


class Housekeeping:
    """The gateway's periodic disk check and pruning; `tick(mono)` is called from the gateway's periodic loop.

    Logs once when the disk becomes nearly full or unwritable (ERROR) and once when it recovers (INFO).
    `disk` is the last measurement, `store_error` the last failure to write the database (None when fine).
    `state_dir` and `retention_s` are asked on every use, so a reload is seen.
    """

    def __init__(
        self,
        store: Store,
        *,
        state_dir: Callable[[], Path],
        retention_s: Callable[[], float],
        clock: Clock,
        history_s: Callable[[], float | None] = lambda: None,
        disk_interval_s: float = DISK_CHECK_INTERVAL_S,
        retention_interval_s: float = RETENTION_INTERVAL_S,
    ) -> None:
        self.store = store
        self.state_dir = state_dir
        self.retention_s = retention_s
        self.history_s = history_s
        self.clock = clock
        self.disk_interval_s = disk_interval_s
        self.retention_interval_s = retention_interval_s
        self.disk: DiskStatus | None = None
        self.store_error: str | None = None
        self._disk_at: float | None = None
        self._prune_at: float | None = None
        self._pruning: asyncio.Task[Pruned | None] | None = None

    @property
    def disk_fresh(self) -> bool:
        return self.disk is not None and self.disk.ok  # a problem is re-measured on every look

    def current_disk(self) -> DiskStatus:
        """The last measurement while it was healthy; a problem is measured again (it may have cleared)."""
        if self.disk is not None and self.disk_fresh:
            return self.disk
        return check_disk(self.state_dir())

    def check_disk(self) -> DiskStatus:
        status = check_disk(self.state_dir())
        before = self.disk
        if status.problem and (before is None or not before.problem):
            log.error("%s", status.problem)
        elif not status.problem and before is not None and before.problem:
            log.info("state directory healthy again: %s free", human_bytes(status.free_bytes))
        self.disk = status
        return status

    async def tick(self, mono: float) -> None:
        if self._disk_at is None or mono - self._disk_at >= self.disk_interval_s:
            self._disk_at = mono
            self.check_disk()
        if self._prune_at is None or mono - self._prune_at >= self.retention_interval_s:
            self._prune_at = mono
            self.start_prune()

    def start_prune(self) -> asyncio.Task[Pruned | None] | None:
        """Prune in a task of its own (never awaited by the tick); at most one at a time."""
        if self._pruning is not None and not self._pruning.done():
            return None
        self._pruning = asyncio.create_task(self.prune(), name="retention")
        return self._pruning

    async def aclose(self) -> None:
        """Stop a prune in progress (its current batch rolls back; the next start does the rest)."""
        task, self._pruning = self._pruning, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def store_failed(self, exc: BaseException, *, doing: str) -> None:
        """A write to the state database failed (disk full, read-only): report it once, on /healthz too."""
        message = describe_sqlite_error(exc)
        if self.store_error is None:
            log.error("cannot write the state database while %s: %s; retrying", doing, message)
        self.store_error = message
        self.check_disk()

    def store_ok(self) -> None:
        if self.store_error is not None:
            log.info("state database writable again")
            self.store_error = None

    async def prune(self) -> Pruned | None:
        try:
            result = await prune(
                self.store, now=self.clock.now(), retention_s=self.retention_s(), history_s=self.history_s()
            )
        except (sqlite3.Error, StoreError) as exc:
            self.store_failed(exc, doing="pruning")
            return None
        self.store_ok()
        return result
