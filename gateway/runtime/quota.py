"""The monthly quota guard: how many tasks may leave now, and which month they count in.

The month is the calendar month in the CMMS network's timezone, read through a late-bound getter at every
use: the timezone the network settings bring later (the CMMS was unreachable at start-up) or a reload
changes is seen at once. A timezone missing from the tz database (the `tzdata` package ships one) counts in
UTC, with one WARNING per unknown name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.store.outbox import Outbox

log = logging.getLogger(__name__)

_unknown_zones: set[str] = set()  # warned once per process


def zone(name: str | None) -> tzinfo:
    """The tzinfo of a timezone name; UTC for none or an unknown one (one WARNING per unknown name)."""
    if not name or name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        if name not in _unknown_zones:
            _unknown_zones.add(name)
            log.warning(
                "timezone %r is not in the tz database (%s): the monthly quota counts in UTC", name, exc
            )
        return UTC


def month_key(ts: float, timezone: str | None) -> str:
    """The quota month (YYYY-MM) of a timestamp, in the CMMS network's timezone (UTC if unknown)."""
    return datetime.fromtimestamp(ts, tz=zone(timezone)).strftime("%Y-%m")


def reserve_from(limit: int, reserve_ratio: float) -> int:
    """The month's count from which only high-priority tasks leave: the quota less its reserve share."""
    return int(limit * (1 - reserve_ratio))


@dataclass(frozen=True)
class QuotaDecision:
    month: str
    used: int = 0  # delivered + uncertain this month
    limit: int | None = None  # None: no quota applies
    allowed: int | None = None  # how many may leave now (None: no limit)
    normal_allowed: int | None = None  # how many of them may be normal priority
    high_only: bool = False  # the next attempts may only be high priority
    in_reserve: bool = False  # the month's use reached the reserve kept for high priority
    held: bool = False  # the quota is used up: nothing leaves
    warn: bool = False  # the warning threshold was crossed this month for the first time


class QuotaGuard:
    def __init__(
        self,
        outbox: Outbox,
        *,
        limit: int | None,
        timezone: Callable[[], str | None],
        warn_ratio: Callable[[], float],
        reserve_ratio: Callable[[], float],
    ) -> None:
        self._outbox = outbox
        self.limit = limit
        self._timezone = timezone
        self._warn_ratio = warn_ratio
        self._reserve_ratio = reserve_ratio
        self._warned_month = ""

    @property
    def timezone(self) -> str:
        return self._timezone() or "UTC"

    def month(self, ts: float) -> str:
        return month_key(ts, self._timezone())

    async def check(self, now: float, *, in_flight: int, applies: bool) -> QuotaDecision:
        """Requests in flight count as used: a burst can never overshoot the quota."""
        month = self.month(now)
        if self.limit is None or not applies:
            return QuotaDecision(month)
        limit = self.limit
        used = await self._outbox.quota_used(month)
        normal_cap = reserve_from(limit, self._reserve_ratio())
        warn = used >= limit * self._warn_ratio() and self._warned_month != month
        if warn:
            self._warned_month = month
        if used >= limit:
            return QuotaDecision(
                month, used, limit, 0, 0, high_only=True, in_reserve=True, held=True, warn=warn
            )
        committed = used + in_flight
        return QuotaDecision(
            month,
            used,
            limit,
            allowed=max(0, limit - committed),
            normal_allowed=max(0, normal_cap - committed),
            high_only=committed >= normal_cap,
            in_reserve=used >= normal_cap,
            warn=warn,
        )
