"""Drains the outbox through a CMMS backend.

Dispatcher states (`status.state`; transitions in `_on_result`, `_check_quota` and `resume` only):
    RUNNING       delivering due rows, high priority first, then oldest first
    PAUSED        the CMMS refused our credentials or plan (401/403): nothing is sent, everything stays
                  queued, one probe every `pause_probe_interval`; `resume()` (on reload) tries again at once
    QUOTA_HELD    this month's task quota is used up: rows wait, nothing is dropped, until the month turns
                  or the quota is raised; from (1 - reserve) of the quota on, only `priority: high` rows leave

Independently of the state, two brakes keep a failing CMMS from being flooded:
    link down     after LINK_DOWN_AFTER transient failures in a row (network error, timeout, 5xx) with no
                  answer in between, only one request at a time goes out, spaced by the capped backoff; the
                  first success brings the link back and makes every row waiting out a backoff due again, so
                  the backlog leaves high priority first, then oldest first
    hold          a `Retry-After` (429, or a 503 that says it) holds every request until then, not only
                  the row's

Every attempt is claimed in the store (fsynced) before its request leaves; see gateway/store/outbox.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.config import DispatcherSection
from gateway.core.clock import Clock, SystemClock
from gateway.core.delivery import Delivery, OutboxItem, Outcome
from gateway.core.firings import Priority
from gateway.core.ports import Backend
from gateway.store import Store

log = logging.getLogger(__name__)

LINK_DOWN_AFTER = 10  # transient failures in a row (no answer from the CMMS in between) = the link is down
STOP_GRACE_S = 5.0  # on shutdown, in-flight requests get this long to finish before they are abandoned


class DispatcherState(enum.StrEnum):
    RUNNING = "running"  # delivering
    PAUSED = "paused"  # credentials or plan refused (401/403): everything kept queued, probing slowly
    QUOTA_HELD = "quota_held"  # monthly quota reached: tasks held until the month turns


@dataclass
class DispatcherStatus:
    state: DispatcherState = DispatcherState.RUNNING
    reason: str = ""
    quota_month: str = ""
    quota_used: int = 0  # delivered + uncertain this month
    quota_limit: int | None = None
    high_only: bool = False  # inside the reserve: only priority high leaves
    link_up: bool = True  # False after LINK_DOWN_AFTER transient failures in a row
    link_error: str = ""
    hold_until: float | None = None  # a Retry-After holds every request until then
    in_flight: int = 0
    maybe_committed: int = 0  # attempts since start whose request may have created a task unseen
    last_success_at: float | None = None
    last_attempt_at: float | None = None
    attempts: dict[str, int] = field(default_factory=dict)  # by outcome, since start

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "reason": self.reason,
            "quota_month": self.quota_month,
            "quota_used": self.quota_used,
            "quota_limit": self.quota_limit,
            "high_only": self.high_only,
            "link_up": self.link_up,
            "link_error": self.link_error,
            "hold_until": self.hold_until,
            "in_flight": self.in_flight,
            "maybe_committed": self.maybe_committed,
            "last_success_at": self.last_success_at,
            "last_attempt_at": self.last_attempt_at,
            "attempts": dict(self.attempts),
        }


def month_key(ts: float, timezone: str) -> str:
    """The quota month (YYYY-MM) of a timestamp, in the CMMS network's timezone."""
    return datetime.fromtimestamp(ts, tz=ZoneInfo(timezone) if timezone != "UTC" else UTC).strftime("%Y-%m")


def backoff_delay(attempt: int, *, initial: float, cap: float, rng: random.Random) -> float:
    """Capped exponential backoff with jitter: attempt 1 -> [initial/2, initial], doubling up to
    [cap/2, cap]."""
    base = min(cap, initial * float(2 ** min(max(0, attempt - 1), 62)))
    return base * (0.5 + rng.random() / 2)


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
        on_delivery: Callable[[OutboxItem, Delivery], None] | None = None,
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
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._unrecorded: list[tuple[OutboxItem, Delivery]] = []  # results the store failed to take
        self._next_probe_at = 0.0  # PAUSED or link down: the next single attempt not before this
        self._hold_until = 0.0  # Retry-After: nothing leaves before this
        self._failures = 0  # transient failures in a row with no answer from the CMMS in between
        self._gate_until: float | None = None  # when the last pass was blocked, when to look again
        self._last_slot_monotonic = 0.0  # rate limit: the last slot handed out
        self._last_sent_monotonic = 0.0  # rate limit: when the last request left
        self._send_lock = asyncio.Lock()
        self._warned_month = ""
        self._recovered = False
        self._store_retry_at = 0.0  # after a failed write to the state database, wait until then
        self._store_error: str | None = None
        self._on_delivery = on_delivery  # callback(item, delivery) for metrics and listeners
        self.heartbeat: Callable[[], None] = lambda: None  # called on every pass (the supervisor's watchdog)

    # ------------------------------------------------------------------ control

    def wake(self) -> None:
        """New rows were queued (or a slot freed): look at the outbox now, not at the next idle poll."""
        self._wake.set()

    def set_backend(self, backend: Backend, *, quota: int | None) -> None:
        self.backend = backend
        self.quota = quota
        self.status.quota_limit = quota

    def resume(self) -> None:
        """Leave PAUSED (the key or plan was fixed and the config reloaded); probe a down link now."""
        if self.status.state is DispatcherState.PAUSED:
            log.info("dispatcher resumed: trying the CMMS again")
            self.status.state = DispatcherState.RUNNING
            self.status.reason = ""
        self._next_probe_at = 0.0
        self.wake()

    async def recover(self) -> list[int]:
        """Once per process, before the first attempt: rows a previous run left in flight are counted as maybe
        committed (their request may have created a task). Returns their outbox ids."""
        if self._recovered:
            return []
        quota_month = self._quota_month if self.backend.counts_against_quota else None
        ids = await self.store.outbox.recover_interrupted(quota_month=quota_month)
        self._recovered = True
        if ids:
            log.warning(
                "%d outbox row(s) were in flight when the gateway stopped (ids %s): they will be sent "
                "again, and if the CMMS had already created their task it now has two; the reconciliation "
                "flags them",
                len(ids),
                ", ".join(map(str, ids[:20])) + (" …" if len(ids) > 20 else ""),
            )
        return ids

    def _quota_month(self, ts: float) -> str:
        return month_key(ts, self.timezone)

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Deliver until cancelled; then in-flight requests get STOP_GRACE_S to finish."""
        try:
            await self.recover()
            while True:
                self.heartbeat()
                try:
                    started = await self._start_due()
                except asyncio.CancelledError:
                    raise
                except Exception:  # supervisor loop: log, wait, go on
                    log.exception("dispatcher pass failed; trying again shortly")
                    started = 0
                    self._gate_until = self.clock.now() + self.settings.idle_poll
                if not started:
                    await self._idle()
        finally:
            await self._stop_inflight()

    async def drain_once(self) -> int:
        """One pass: start every attempt that is due and allowed, and wait for all of them (for tests and
        tools; `run()` does not wait). Returns the number of attempts started."""
        await self.recover()
        started = await self._start_due()
        if self._inflight:
            await asyncio.gather(*self._inflight.values())
        return started

    async def _stop_inflight(self) -> None:
        tasks = list(self._inflight.values())
        if not tasks:
            return
        with contextlib.suppress(BaseException):
            await asyncio.wait(tasks, timeout=STOP_GRACE_S)
        for task in tasks:
            task.cancel()  # their claims stay: the next start counts them as maybe committed
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _idle(self) -> None:
        now = self.clock.now()
        timeout = self.settings.idle_poll
        if self._gate_until is not None:
            timeout = min(timeout, self._gate_until - now)
        self._wake.clear()
        # A timer that sets the event, rather than asyncio.wait_for: on Python 3.11, cancelling a task parked
        # in wait_for(Event.wait()) can leave it waiting forever (seen here about once in 40 test runs).
        handle = asyncio.get_running_loop().call_later(max(timeout, 0.005), self._wake.set)
        try:
            await self._wake.wait()
        finally:
            handle.cancel()

    async def _start_due(self) -> int:
        """Start as many attempts as the slots, the state, the link and the quota allow. Sets `_gate_until`
        (when it makes sense to look again) whenever it starts nothing."""
        now = self.clock.now()
        self._gate_until = None
        if now < self._store_retry_at:
            self._gate_until = self._store_retry_at
            return 0
        if self._unrecorded and not await self._record_pending():
            self._store_retry_at = now + self.settings.idle_poll
            self._gate_until = self._store_retry_at
            return 0
        free = self.settings.concurrency - len(self._inflight)
        if free <= 0:
            return 0  # a finishing attempt wakes us
        if now < self._hold_until:
            self._gate_until = self._hold_until
            return 0
        self.status.hold_until = None
        single = self.status.state is DispatcherState.PAUSED or not self.status.link_up
        if single:
            if self._inflight:
                return 0
            if now < self._next_probe_at:
                self._gate_until = self._next_probe_at
                return 0
            free = 1
        allowed, normal_allowed, high_only = await self._check_quota(now)
        if allowed is not None:
            free = min(free, allowed)
            if free <= 0:
                self._gate_until = now + self.settings.idle_poll
                return 0
        items = await self.store.outbox.due(now=now, limit=free, high_only=high_only, exclude=self._inflight)
        if normal_allowed is not None:  # keep the reserve for high priority rows
            kept = []
            for item in items:
                if item.firing.priority is not Priority.HIGH:
                    if normal_allowed <= 0:
                        continue
                    normal_allowed -= 1
                kept.append(item)
            items = kept
        if not items:
            next_due = await self.store.outbox.next_due_at(high_only=high_only)
            self._gate_until = next_due if next_due is not None and next_due > now else now + 1e9
            if normal_allowed is not None or high_only:
                self._gate_until = min(self._gate_until, now + self.settings.idle_poll)
            return 0
        if single:
            self._next_probe_at = float("inf")  # the probe's result sets the next one
        for item in items:
            self._inflight[item.outbox_id] = asyncio.create_task(
                self._attempt(item, probe=single), name=f"deliver:{item.outbox_id}"
            )
        self.status.in_flight = len(self._inflight)
        return len(items)

    def _blocked(self) -> bool:
        """Paused, link down or held since an attempt was planned: it must not leave (unless the probe)."""
        return (
            self.status.state is DispatcherState.PAUSED
            or not self.status.link_up
            or self.clock.now() < self._hold_until
        )

    async def _attempt(self, item: OutboxItem, *, probe: bool = False) -> None:
        try:
            await self._respect_rate_limit()
            if not probe and self._blocked():
                return  # nothing claimed, nothing sent: the row is simply due again
            try:
                await self.store.outbox.claim([item])  # durable before the request leaves
            except Exception as exc:
                self._store_failed(f"could not claim outbox row {item.outbox_id}, not sending it: {exc}")
                return
            self._store_ok()
            await self._respect_rate_limit(final=True)
            delivery = await self._deliver(item)
            try:
                await self._on_result(item, delivery)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._store_failed(f"could not record the result of outbox row {item.outbox_id}: {exc}")
                self._unrecorded.append((item, delivery))
        finally:
            self._inflight.pop(item.outbox_id, None)
            self.status.in_flight = len(self._inflight)
            self._wake.set()

    def _store_failed(self, message: str) -> None:
        """The state database refused a write (disk full, I/O error): stop sending a while, say it once."""
        self._store_retry_at = self.clock.now() + self.settings.idle_poll
        if self._store_error is None:
            log.error("%s; sending stops until the state database accepts writes again", message)
        else:
            log.debug("%s", message)
        self._store_error = message

    def _store_ok(self) -> None:
        if self._store_error is not None:
            log.info("the state database accepts writes again: sending resumes")
            self._store_error = None

    async def _record_pending(self) -> bool:
        """Record results the store could not take before (disk full, …). True when none is left."""
        while self._unrecorded:
            item, delivery = self._unrecorded[0]
            try:
                await self._on_result(item, delivery, again=True)
            except Exception as exc:
                log.debug("still cannot record the result of outbox row %d: %s", item.outbox_id, exc)
                return False
            self._unrecorded.pop(0)
        self._store_ok()
        return True

    async def _deliver(self, item: OutboxItem) -> Delivery:
        self.status.last_attempt_at = self.clock.now()
        started = time.monotonic()
        try:
            delivery = await self.backend.deliver(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a backend must not raise; if it does, retry, and assume the worst
            log.exception(
                "backend %s raised while delivering outbox row %d", self.backend.kind, item.outbox_id
            )
            delivery = Delivery(
                Outcome.RETRY, error=f"backend error: {type(exc).__name__}: {exc}", maybe_committed=True
            )
        delivery.elapsed_s = delivery.elapsed_s or (time.monotonic() - started)
        return delivery

    async def _respect_rate_limit(self, *, final: bool = False) -> None:
        """Wait for this request's turn: at most `rate_limit` requests per second leave.

        Called twice per attempt: first to wait for a slot before the row is claimed (a row waiting here is
        not "in flight"), then `final` right before the request leaves, one request at a time, measured on
        the real send times (the claim's fsync and the event loop's wake-ups must not bunch requests).
        """
        spacing = 1.0 / self.settings.rate_limit
        if not final:
            now = time.monotonic()
            slot = max(now, self._last_slot_monotonic + spacing)
            self._last_slot_monotonic = slot
            if slot > now:
                await asyncio.sleep(slot - now)
            return
        async with self._send_lock:
            wait = self._last_sent_monotonic + spacing - time.monotonic()
            while wait > 0:
                await asyncio.sleep(wait)
                wait = self._last_sent_monotonic + spacing - time.monotonic()
            self._last_sent_monotonic = time.monotonic()

    # ------------------------------------------------------------------ outcomes

    async def _on_result(self, item: OutboxItem, delivery: Delivery, *, again: bool = False) -> None:
        now = self.clock.now()
        counts = self.backend.counts_against_quota
        month = month_key(now, self.timezone) if counts else None
        outcome = delivery.outcome
        if not again:
            self.status.attempts[outcome.value] = self.status.attempts.get(outcome.value, 0) + 1
            if self._on_delivery is not None:
                self._on_delivery(item, delivery)
        if outcome is Outcome.DONE:
            await self.store.outbox.mark_delivered(
                item, delivery, backend=self.backend.kind, quota_month=month
            )
            self.status.last_success_at = now
            self._credentials_accepted()
            await self._link_answered(now)
            log.debug("outbox row %d delivered (rule %s)", item.outbox_id, item.firing.rule_id)
        elif outcome is Outcome.RETRY:
            await self._on_retry(item, delivery, now, month)
        elif outcome is Outcome.DEAD:
            await self.store.outbox.mark_dead(item, delivery)
            self._credentials_accepted()  # the CMMS read the request: the key works
            await self._link_answered(now)
            log.error(
                "outbox row %d (rule %s) rejected by the CMMS: %s — see `mw-gateway outbox show %d`",
                item.outbox_id,
                item.firing.rule_id,
                delivery.error,
                item.outbox_id,
            )
        elif outcome is Outcome.PAUSE:
            self._next_probe_at = now + self.settings.pause_probe_interval
            await self.store.outbox.mark_retry(item, delivery, next_attempt_at=now, count_attempt=False)
            if self.status.state is not DispatcherState.PAUSED:
                log.error(
                    "CMMS refused the credentials or the plan (%s): sending paused, everything stays queued; "
                    "fix the key and reload (systemctl reload mw-gateway); probing every %.0f s",
                    delivery.error,
                    self.settings.pause_probe_interval,
                )
            self.status.state, self.status.reason = DispatcherState.PAUSED, delivery.error
            await self._link_answered(now)

    async def _on_retry(self, item: OutboxItem, delivery: Delivery, now: float, month: str | None) -> None:
        if delivery.maybe_committed:
            self.status.maybe_committed += 1
            log.warning(
                "outbox row %d (rule %s, firing %s): %s — the request may have reached the CMMS; the "
                "retry may make a second task, which the reconciliation will flag",
                item.outbox_id,
                item.firing.rule_id,
                item.firing_uuid,
                delivery.error,
            )
        if delivery.retry_after_s is not None:
            # The server said when: honour it for every request, not only this row.
            delay = max(delivery.retry_after_s, 0.0)
            self._hold_until = max(self._hold_until, now + delay)
            self.status.hold_until = self._hold_until
            await self._link_answered(now)
            log.debug("CMMS asks us to wait %.1f s (%s)", delay, delivery.error)
        else:
            delay = self.backoff(item.attempts + 1)
            self._failures += 1
            if self._failures >= LINK_DOWN_AFTER:
                probe_in = self.backoff(self._failures - LINK_DOWN_AFTER + 1)
                self._next_probe_at = now + probe_in
                if self.status.link_up:
                    self.status.link_up = False
                    log.error(
                        "CMMS unreachable (%s): everything stays queued; probing with one request at a time",
                        delivery.error,
                    )
                self.status.link_error = delivery.error
                log.debug("CMMS still unreachable (%s): next probe in %.1f s", delivery.error, probe_in)
            elif self.status.state is DispatcherState.PAUSED:
                self._next_probe_at = now + self.settings.pause_probe_interval
            else:
                self._next_probe_at = 0.0
        await self.store.outbox.mark_retry(
            item,
            delivery,
            next_attempt_at=now + delay,
            quota_month=month if delivery.maybe_committed else None,
        )
        log.debug("outbox row %d: %s; retry in %.1fs", item.outbox_id, delivery.error, delay)

    def _credentials_accepted(self) -> None:
        if self.status.state is DispatcherState.PAUSED:
            log.info("CMMS accepts our requests again: dispatcher resumed")
            self.status.state, self.status.reason = DispatcherState.RUNNING, ""

    async def _link_answered(self, now: float) -> None:
        """The CMMS answered: the link is up. After an outage, the backlog is due again in priority order."""
        self._failures = 0
        if not self.status.link_up:
            self.status.link_up, self.status.link_error = True, ""
            released = await self.store.outbox.release_backoff(now=now)
            log.info(
                "CMMS reachable again: delivering the backlog (%d rows waiting out a backoff now due)",
                released,
            )
        self._next_probe_at = 0.0 if self.status.state is not DispatcherState.PAUSED else self._next_probe_at

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, capped: attempt 1 -> ~retry_initial, doubling up to retry_max."""
        return backoff_delay(
            attempt, initial=self.settings.retry_initial, cap=self.settings.retry_max, rng=self.rng
        )

    # ------------------------------------------------------------------ quota

    async def _check_quota(self, now: float) -> tuple[int | None, int | None, bool]:
        """(how many tasks may leave now, how many of them may be normal priority, only high priority?).

        None = no limit. Requests in flight count as used: a burst can never overshoot the quota.
        """
        month = month_key(now, self.timezone)
        self.status.quota_month = month
        if self.quota is None or not self.backend.counts_against_quota:
            self.status.high_only = False
            if self.status.state is DispatcherState.QUOTA_HELD:
                self.status.state, self.status.reason = DispatcherState.RUNNING, ""
            return None, None, False
        used = await self.store.outbox.quota_used(month)
        self.status.quota_used = used
        limit = self.quota
        reserve_from = int(limit * (1 - self.settings.high_priority_reserve_ratio))
        if used >= limit * self.settings.quota_warn_ratio and self._warned_month != month:
            self._warned_month = month
            log.warning(
                "%d of %d tasks of this month's CMMS quota used (%s); from %d on only the tasks of "
                "priority high rules leave, at %d tasks are held until the month turns",
                used,
                limit,
                month,
                reserve_from,
                limit,
            )
        if used >= limit:
            if self.status.state is DispatcherState.RUNNING:
                log.error(
                    "monthly task quota reached (%d/%d in %s): tasks are held in the outbox until the month "
                    "turns or the quota is raised",
                    used,
                    limit,
                    month,
                )
                self.status.state = DispatcherState.QUOTA_HELD
                self.status.reason = f"monthly quota reached ({used}/{limit} in {month})"
            self.status.high_only = True
            return 0, 0, True
        if self.status.state is DispatcherState.QUOTA_HELD:
            log.info("quota available again (%d/%d in %s): delivering", used, limit, month)
            self.status.state, self.status.reason = DispatcherState.RUNNING, ""
        committed = used + len(self._inflight)
        high_only = committed >= reserve_from
        self.status.high_only = used >= reserve_from
        return max(0, limit - committed), max(0, reserve_from - committed), high_only
