"""One monthly task quota for the whole fleet, in the `<name>_quota` key-value bucket.

Key `<network>.<YYYY-MM>` (the month in the CMMS network's timezone) holds the number of tasks reserved this
month by every gateway together. Before a task leaves, `reserve(priority)` increments it with compare-and-set
(`update(key, n + 1, last=revision)`; a concurrent writer makes it read again and retry):

- a normal task may raise it up to `reserve_from = int(limit × (1 − high_priority_reserve_ratio))`, a high
  priority one up to `limit`: the high-priority reserve applies fleet-wide;
- `release()` gives one back (a dead letter, or a request that surely never reached the CMMS);
  a lost response (maybe created) keeps its reservation.

When NATS cannot be reached (not connected, or no answer within `timeout`), the gateway falls back to its
local share: it may reserve while ITS OWN count for the month (tasks it reserved through the fleet before,
plus those reserved offline) stays below `int(limit × quota_share)` (normal tasks: `× (1 − ratio)` of that),
never the whole plan. Offline reservations are added to the fleet's key on the next successful contact.

`gateway.core.ports.SharedQuota` is the narrow interface the dispatcher uses; `FleetQuota` implements it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar
from zoneinfo import ZoneInfo

from gateway.core.firings import Priority
from gateway.fleet import names
from gateway.runtime.quota import reserve_from

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

MAX_CAS_ROUNDS = 50
_T = TypeVar("_T")


def month_of(ts: float, timezone: str) -> str:
    return datetime.fromtimestamp(ts, tz=ZoneInfo(timezone) if timezone != "UTC" else UTC).strftime("%Y-%m")


class Unreachable(Exception):
    pass


class FleetQuota:
    def __init__(
        self,
        kv: Callable[[], Awaitable[KeyValue]],
        *,
        network: str,
        limit: int,
        reserve_ratio: float = 0.1,
        share: float = 0.2,
        timezone: str = "UTC",
        connected: Callable[[], bool] = lambda: True,
        local_used: Callable[[str], Awaitable[int]] | None = None,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._kv = kv
        self.network = network
        self.limit = limit
        self.reserve_ratio = reserve_ratio
        self.share = share
        self.timezone = timezone
        self.connected = connected
        self.local_used = local_used
        self.timeout = timeout
        self.clock = clock
        self.own: dict[str, int] = {}  # this gateway's reservations per month (fleet + offline - released)
        self.unsynced: dict[str, int] = {}  # offline reservations (and releases) not yet in the fleet key
        self.fleet_used: int | None = None  # the fleet's count at the last contact
        self.offline = False
        self.latencies: list[float] = []

    # ------------------------------------------------------------------ the guard

    def month(self) -> str:
        return month_of(self.clock(), self.timezone)

    async def reserve(self, priority: Priority) -> bool:
        month = self.month()
        await self._own_init(month)
        started = time.perf_counter()
        try:
            ok = await self._fleet_reserve(month, priority)
        except Unreachable as exc:
            return self._local_reserve(month, priority, exc)
        self.latencies.append(time.perf_counter() - started)
        del self.latencies[:-10000]
        if ok:
            self.own[month] = self.own.get(month, 0) + 1
        return ok

    async def release(self, month: str | None = None) -> None:
        month = month or self.month()
        self.own[month] = max(0, self.own.get(month, 0) - 1)
        try:
            await self._fleet_add(month, -1)
        except Unreachable:
            self.unsynced[month] = self.unsynced.get(month, 0) - 1

    # ------------------------------------------------------------------ the fleet key

    async def _call(self, aw: Awaitable[_T]) -> _T:
        try:
            return await asyncio.wait_for(aw, self.timeout)
        except (TimeoutError, OSError) as exc:
            raise Unreachable(str(exc) or type(exc).__name__) from None
        except Exception as exc:
            import nats.errors
            import nats.js.errors

            if isinstance(exc, nats.js.errors.KeyWrongLastSequenceError | nats.js.errors.NotFoundError):
                raise
            if isinstance(exc, nats.errors.Error | nats.js.errors.Error):
                raise Unreachable(f"{type(exc).__name__}: {exc}") from None
            raise

    async def _read(self, kv: KeyValue, key: str) -> tuple[int, int]:
        from nats.js.errors import NotFoundError

        try:
            entry = await self._call(kv.get(key))
        except NotFoundError:
            return 0, 0
        try:
            return int(entry.value or b"0"), int(entry.revision or 0)
        except ValueError:
            log.error("fleet quota key %s holds %r, not a number: counting it as full", key, entry.value)
            return self.limit, int(entry.revision or 0)

    async def _kv_or_unreachable(self) -> KeyValue:
        if not self.connected():
            raise Unreachable("not connected to NATS")
        return await self._call(self._kv())

    async def _sync(self, kv: KeyValue) -> None:
        """Push offline reservations/releases into the fleet keys (first contact after an outage)."""
        for month, delta in list(self.unsynced.items()):
            if delta:
                await self._add(kv, month, delta)
            del self.unsynced[month]
        if self.offline:
            self.offline = False
            log.info("fleet quota: NATS reachable again; offline reservations added to the fleet count")

    async def _add(self, kv: KeyValue, month: str, delta: int) -> int:
        from nats.js.errors import KeyWrongLastSequenceError

        key = names.quota_key(self.network, month)
        for _ in range(MAX_CAS_ROUNDS):
            used, rev = await self._read(kv, key)
            try:
                await self._call(kv.update(key, str(max(0, used + delta)).encode(), last=rev))
                return max(0, used + delta)
            except KeyWrongLastSequenceError:
                continue
        raise Unreachable("fleet quota key too contended")

    async def _fleet_add(self, month: str, delta: int) -> None:
        kv = await self._kv_or_unreachable()
        await self._sync(kv)
        self.fleet_used = await self._add(kv, month, delta)

    async def _fleet_reserve(self, month: str, priority: Priority) -> bool:
        from nats.js.errors import KeyWrongLastSequenceError

        kv = await self._kv_or_unreachable()
        await self._sync(kv)
        key = names.quota_key(self.network, month)
        cap = self.limit if priority is Priority.HIGH else reserve_from(self.limit, self.reserve_ratio)
        for _ in range(MAX_CAS_ROUNDS):
            used, rev = await self._read(kv, key)
            self.fleet_used = used
            if used >= cap:
                return False
            try:
                await self._call(kv.update(key, str(used + 1).encode(), last=rev))
            except KeyWrongLastSequenceError:
                continue  # another gateway got there first: read again
            self.fleet_used = used + 1
            return True
        raise Unreachable("fleet quota key too contended")

    # ------------------------------------------------------------------ offline: the local share

    async def _own_init(self, month: str) -> None:
        if month not in self.own:
            self.own[month] = await self.local_used(month) if self.local_used is not None else 0

    def share_limit(self, priority: Priority) -> int:
        share = int(self.limit * self.share)
        return share if priority is Priority.HIGH else reserve_from(share, self.reserve_ratio)

    def _local_reserve(self, month: str, priority: Priority, exc: Exception) -> bool:
        if not self.offline:
            self.offline = True
            log.warning(
                "fleet quota: NATS unreachable (%s); using this gateway's local share: %d of %d tasks",
                exc,
                int(self.limit * self.share),
                self.limit,
            )
        if self.own.get(month, 0) >= self.share_limit(priority):
            return False
        self.own[month] = self.own.get(month, 0) + 1
        self.unsynced[month] = self.unsynced.get(month, 0) + 1
        return True
