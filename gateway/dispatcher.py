"""Drains the outbox through a CMMS backend.

Dispatcher states (transitions in `_on_delivery`, `_check_quota` and `resume` only):
    RUNNING       delivering due rows, high priority first, then oldest first
    PAUSED        the CMMS refused our credentials or plan (401/403): nothing is sent, everything stays queued,
                  one probe every `pause_probe_interval`; `resume()` (on reload) tries again at once
    QUOTA_HELD    this month's task quota is used up: rows wait, nothing is dropped, until the month turns
                  or the quota is raised; from (1 - reserve) of the quota on, only `priority: high` rows leave
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.clock import Clock, SystemClock
from gateway.cmms.base import Backend, Delivery, OutboxItem, Outcome
from gateway.config import DispatcherSection
from gateway.store import Store

log = logging.getLogger(__name__)


class DispatcherState(enum.StrEnum):
    RUNNING = "running"  # delivering
    PAUSED = "paused"  # credentials or plan refused (401/403): everything kept queued, probing slowly
    QUOTA_HELD = "quota_held"  # monthly quota reached: tasks held until the month turns


@dataclass
class DispatcherStatus:
    state: DispatcherState = DispatcherState.RUNNING
    reason: str = ""
    quota_month: str = ""
    quota_used: int = 0
    quota_limit: int | None = None
    high_only: bool = False  # inside the reserve: only priority high leaves
    last_success_at: float | None = None
    last_attempt_at: float | None = None
    attempts: dict[str, int] = field(default_factory=dict)  # by outcome, since start

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value, "reason": self.reason, "quota_month": self.quota_month,
            "quota_used": self.quota_used, "quota_limit": self.quota_limit, "high_only": self.high_only,
            "last_success_at": self.last_success_at, "last_attempt_at": self.last_attempt_at,
            "attempts": dict(self.attempts),
        }


def month_key(ts: float, timezone: str) -> str:
    return datetime.fromtimestamp(ts, tz=ZoneInfo(timezone) if timezone != "UTC" else UTC).strftime("%Y-%m")


class Dispatcher:
    def __init__(
        self,
        store: Store,
        backend: Backend,
        *,
        settings: DispatcherSection | None = None,
        quota: int | None = None,
        timezone: str = "UTC",
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_delivery: Any = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.settings = settings or DispatcherSection()
        self.quota = quota
        self.timezone = timezone
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.status = DispatcherStatus(quota_limit=quota)
        self._wake = asyncio.Event()
        self._next_probe_at = 0.0
        self._last_send_monotonic = 0.0
        self._warned_month = ""
        self._on_delivery = on_delivery  # callback(item, delivery) for metrics

    # ------------------------------------------------------------------ control

    def wake(self) -> None:
        """New rows were queued: look at the outbox now rather than at the next idle poll."""
        self._wake.set()

    def set_backend(self, backend: Backend, *, quota: int | None) -> None:
        self.backend = backend
        self.quota = quota
        self.status.quota_limit = quota

    def resume(self) -> None:
        """Leave PAUSED (after the key or plan was fixed and the config reloaded)."""
        if self.status.state is DispatcherState.PAUSED:
            log.info("dispatcher resumed: trying the CMMS again")
            self.status.state = DispatcherState.RUNNING
            self.status.reason = ""
        self._next_probe_at = 0.0
        self.wake()

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        while True:
            try:
                sent = await self.drain_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # supervisor loop: log, wait, go on
                log.exception("dispatcher pass failed; trying again shortly")
                sent = 0
            if sent:
                continue
            await self._idle()

    async def _idle(self) -> None:
        timeout = self.settings.idle_poll
        next_due = await self.store.outbox.next_due_at()
        if next_due is not None:
            timeout = min(timeout, max(0.0, next_due - self.clock.now()))
        if self.status.state is DispatcherState.PAUSED:
            timeout = max(timeout, min(self.settings.idle_poll, self._next_probe_at - self.clock.now()))
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=max(timeout, 0.01))
        except TimeoutError:
            pass

    async def drain_once(self) -> int:
        """One pass: deliver what is due and allowed. Returns the number of attempts made."""
        now = self.clock.now()
        limit = self.settings.concurrency
        if self.status.state is DispatcherState.PAUSED:
            if now < self._next_probe_at:
                return 0
            limit = 1  # one probe
        allowed, high_only = await self._check_quota(now)
        if allowed is not None:
            limit = min(limit, allowed)
        if limit <= 0:
            return 0
        items = await self.store.outbox.due(now=now, limit=limit, high_only=high_only)
        if not items:
            return 0
        results = await asyncio.gather(*(self._deliver(item) for item in items))
        for item, delivery in zip(items, results, strict=True):
            await self._on_result(item, delivery)
        return len(items)

    async def _deliver(self, item: OutboxItem) -> Delivery:
        await self._respect_rate_limit()
        self.status.last_attempt_at = self.clock.now()
        started = time.monotonic()
        try:
            delivery = await self.backend.deliver(item)
        except Exception as exc:  # a backend must not raise; if it does, treat as retryable and say so
            log.exception("backend %s raised while delivering outbox row %d", self.backend.kind, item.outbox_id)
            delivery = Delivery(Outcome.RETRY, error=f"backend error: {type(exc).__name__}: {exc}")
        delivery.elapsed_s = delivery.elapsed_s or (time.monotonic() - started)
        return delivery

    async def _respect_rate_limit(self) -> None:
        spacing = 1.0 / self.settings.rate_limit
        now = time.monotonic()
        wait = self._last_send_monotonic + spacing - now
        self._last_send_monotonic = max(now, self._last_send_monotonic + spacing)
        if wait > 0:
            await asyncio.sleep(wait)

    async def _on_result(self, item: OutboxItem, delivery: Delivery) -> None:
        now = self.clock.now()
        self.status.attempts[delivery.outcome.value] = self.status.attempts.get(delivery.outcome.value, 0) + 1
        if self._on_delivery is not None:
            self._on_delivery(item, delivery)
        if delivery.outcome is Outcome.DONE:
            month = month_key(now, self.timezone) if self.backend.counts_against_quota else None
            await self.store.outbox.mark_delivered(item, delivery, backend=self.backend.kind, quota_month=month)
            self.status.last_success_at = now
            if self.status.state is DispatcherState.PAUSED:
                log.info("CMMS accepts our requests again: dispatcher resumed")
                self.status.state, self.status.reason = DispatcherState.RUNNING, ""
            log.debug("outbox row %d delivered (rule %s)", item.outbox_id, item.firing.rule_id)
        elif delivery.outcome is Outcome.RETRY:
            delay = self.backoff(item.attempts + 1)
            if delivery.retry_after_s is not None:
                delay = max(delivery.retry_after_s, 0.0)
            await self.store.outbox.mark_retry(item, delivery, next_attempt_at=now + delay)
            log.debug("outbox row %d: %s; retry in %.1fs", item.outbox_id, delivery.error, delay)
        elif delivery.outcome is Outcome.DEAD:
            await self.store.outbox.mark_dead(item, delivery)
            log.error("outbox row %d (rule %s) rejected by the CMMS: %s — see `mw-gateway outbox show %d`",
                      item.outbox_id, item.firing.rule_id, delivery.error, item.outbox_id)
        elif delivery.outcome is Outcome.PAUSE:
            self._next_probe_at = now + self.settings.pause_probe_interval
            await self.store.outbox.mark_retry(item, delivery, next_attempt_at=now, count_attempt=False)
            if self.status.state is not DispatcherState.PAUSED:
                log.error("CMMS refused the credentials or the plan (%s): sending paused, everything stays "
                          "queued; fix the key and reload (systemctl reload mw-gateway)", delivery.error)
            self.status.state, self.status.reason = DispatcherState.PAUSED, delivery.error

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, capped: attempt 1 -> ~retry_initial, doubling up to retry_max."""
        base = min(self.settings.retry_max, self.settings.retry_initial * (2 ** max(0, attempt - 1)))
        return base * (0.5 + self.rng.random() / 2)

    async def _check_quota(self, now: float) -> tuple[int | None, bool]:
        """How many tasks may leave now (None = no limit) and whether only high priority may."""
        month = month_key(now, self.timezone)
        self.status.quota_month = month
        if self.quota is None or not self.backend.counts_against_quota:
            self.status.high_only = False
            if self.status.state is DispatcherState.QUOTA_HELD:
                self.status.state, self.status.reason = DispatcherState.RUNNING, ""
            return None, False
        used = await self.store.outbox.quota_used(month)
        self.status.quota_used = used
        limit = self.quota
        reserve_from = int(limit * (1 - self.settings.high_priority_reserve_ratio))
        if used >= limit * self.settings.quota_warn_ratio and self._warned_month != month:
            self._warned_month = month
            log.warning("%d of %d tasks of this month's CMMS quota used (%s)", used, limit, month)
        if used >= limit:
            if self.status.state is DispatcherState.RUNNING:
                log.error("monthly task quota reached (%d/%d): tasks are held in the outbox until the month "
                          "turns or the quota is raised", used, limit)
                self.status.state = DispatcherState.QUOTA_HELD
                self.status.reason = f"monthly quota reached ({used}/{limit})"
            return 0, True
        if self.status.state is DispatcherState.QUOTA_HELD:
            log.info("quota available again (%d/%d in %s): delivering", used, limit, month)
            self.status.state, self.status.reason = DispatcherState.RUNNING, ""
        high_only = used >= reserve_from
        self.status.high_only = high_only
        return limit - used, high_only
