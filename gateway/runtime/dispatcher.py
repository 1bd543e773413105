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

Every attempt is claimed in the store (fsynced) before its request leaves, and only a row the claim took is
sent; see gateway/store/outbox.py. The brakes live beside this module: runtime/breaker.py (link down,
probes), runtime/ratelimit.py (requests per second), runtime/quota.py (the monthly quota and its month).

Over 500 lines on purpose: the drain loop and the outcome handling are one state machine whose transitions
must be read together; everything separable (brakes, status, the store's guards) lives elsewhere.

A `Retry-After` is capped at RETRY_AFTER_MAX_S (an absurd or infinite value never holds delivery for good)
and forgotten on `resume()`.

Rule modes (docs/rollout.md): rows in state `shadow` or `awaiting_approval` are never due and never claimed.
Each pass renders new shadow rows with the backend's `build_request` (what it would send; no network, no
quota) and stores the rendering on the row (`render_shadows`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

from gateway.cmms.dry_run import neutral_request
from gateway.config import DispatcherSection
from gateway.core.backoff import Backoff
from gateway.core.clock import Clock, SystemClock
from gateway.core.delivery import Delivery, OutboxItem, Outcome
from gateway.core.firings import Priority
from gateway.core.ports import Backend, SharedQuota
from gateway.runtime.breaker import LINK_DOWN_AFTER, LinkBreaker
from gateway.runtime.dispatcher_status import DispatcherState, DispatcherStatus
from gateway.runtime.quota import QuotaGuard, month_key, reserve_from
from gateway.runtime.ratelimit import RateLimiter
from gateway.store import Store

__all__ = ["LINK_DOWN_AFTER", "Dispatcher", "DispatcherState", "DispatcherStatus", "month_key"]

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0  # on shutdown, in-flight requests get this long to finish before they are abandoned
RETRY_AFTER_MAX_S = 3600.0  # a Retry-After longer than an hour (or infinite) holds for an hour, then we ask


class Dispatcher:
    def __init__(
        self,
        store: Store,
        backend: Backend,
        *,
        settings: DispatcherSection | None = None,
        quota: int | None = None,
        timezone: str | Callable[[], str | None] = "UTC",
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_delivery: Callable[[OutboxItem, Delivery], None] | None = None,
    ) -> None:
        """`timezone`: the quota month's timezone, a name or (better) a getter of the current one, read at
        every use so that network settings learned later and reloads are seen."""
        self.store = store
        self.backend = backend
        self.settings = settings or DispatcherSection()
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.status = DispatcherStatus(quota_limit=quota)
        self._timezone: Callable[[], str | None] = timezone if callable(timezone) else (lambda: timezone)
        self.quota_guard = QuotaGuard(
            store.outbox,
            limit=quota,
            timezone=lambda: self._timezone(),
            warn_ratio=lambda: self.settings.quota_warn_ratio,
            reserve_ratio=lambda: self.settings.high_priority_reserve_ratio,
        )
        self.breaker = LinkBreaker(
            initial_s=self.settings.retry_initial, max_s=self.settings.retry_max, rng=self.rng
        )
        self.rate = RateLimiter(lambda: self.settings.rate_limit)
        self._wake = asyncio.Event()
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._unrecorded: list[tuple[OutboxItem, Delivery, float]] = []  # results the store failed to take
        self._hold_until = 0.0  # Retry-After: nothing leaves before this
        self._gate_until: float | None = None  # when the last pass was blocked, when to look again
        self._recovered = False
        self._store_retry_at = 0.0  # after a failed write to the state database, wait until then
        self._store_error: str | None = None
        self._on_delivery = on_delivery  # callback(item, delivery) for metrics and listeners
        self.heartbeat: Callable[[], None] = lambda: None  # called on every pass (the supervisor's watchdog)
        # The fleet's shared quota (gateway.fleet.quota.FleetQuota), set when `fleet: {quota: shared}`:
        # reserve before a task leaves, give back on a dead letter or a request that surely never arrived;
        # a lost response keeps its reservation.
        self.fleet_quota: SharedQuota | None = None
        self._reserved: dict[int, str] = {}  # outbox id -> the month of its fleet reservation
        self._fleet_held_until = 0.0

    # ------------------------------------------------------------------ control

    @property
    def quota(self) -> int | None:
        return self.quota_guard.limit

    @property
    def timezone(self) -> str:
        return self.quota_guard.timezone

    @timezone.setter
    def timezone(self, value: str | Callable[[], str | None]) -> None:
        self._timezone = value if callable(value) else (lambda: value)

    def wake(self) -> None:
        """New rows were queued (or a slot freed): look at the outbox now, not at the next idle poll."""
        self._wake.set()

    def set_backend(self, backend: Backend, *, quota: int | None) -> None:
        self.backend = backend
        self.quota_guard.limit = quota
        self.status.quota_limit = quota

    def resume(self) -> None:
        """Leave PAUSED (the key or plan was fixed and the config reloaded); probe a down link now; forget a
        Retry-After (the configuration, maybe the CMMS, changed)."""
        if self.status.state is DispatcherState.PAUSED:
            log.info("dispatcher resumed: trying the CMMS again")
            self.status.state = DispatcherState.RUNNING
            self.status.reason = ""
        self.breaker.configure(initial_s=self.settings.retry_initial, max_s=self.settings.retry_max)
        self.breaker.next_probe_at = 0.0
        self._hold_until = 0.0
        self.status.hold_until = None
        self.wake()

    async def recover(self) -> list[int]:
        """Once per process, before the first attempt: rows a previous run left in flight are counted as maybe
        committed (their request may have created a task). Returns their outbox ids."""
        if self._recovered:
            return []
        quota_month = self.quota_guard.month if self.backend.counts_against_quota else None
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

    def backoff(self, attempt: int) -> float:
        """A row's backoff before retry `attempt`: ~retry_initial, doubling up to retry_max, jittered to
        [b/2, b] (gateway/core/backoff.py)."""
        return Backoff(
            initial_s=self.settings.retry_initial, max_s=self.settings.retry_max, jitter=0.5, rng=self.rng
        ).delay(attempt)

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Deliver until cancelled; then in-flight requests get STOP_GRACE_S to finish."""
        try:
            while True:
                self.heartbeat()
                try:
                    await self.recover()  # inside the handling: a store error here is retried, not fatal
                    await self.render_shadows()
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
        await self.render_shadows()
        started = await self._start_due()
        if self._inflight:
            await asyncio.gather(*self._inflight.values())
        return started

    async def render_shadows(self) -> int:
        """Store, for each new shadow row, the request the configured backend would send (nothing is sent,
        no quota is used). A task the backend cannot build is recorded with the reason. Returns how many."""
        done = 0
        while True:
            items = await self.store.outbox.unrendered_shadows(limit=100)
            if not items:
                return done
            for item in items:
                request, error = self._render(item)
                await self.store.outbox.render_shadow(item.outbox_id, request, error=error)
                done += 1
                log.info(
                    "shadow: firing %s of rule %s rendered, not sent (%s %s)",
                    item.firing_uuid,
                    item.firing.rule_id,
                    (request or {}).get("method") or "",
                    (request or {}).get("path") or error or "neutral rendering",
                )

    def _render(self, item: OutboxItem) -> tuple[dict[str, Any] | None, str | None]:
        builder = getattr(self.backend, "build_request", None)
        if not callable(builder):
            gateway_id = str(getattr(self.backend, "gateway_id", ""))
            return {**neutral_request(item, gateway_id=gateway_id), "backend": self.backend.kind}, None
        try:
            request = builder(item)
        except (ValueError, TypeError, KeyError) as exc:
            return None, f"{self.backend.kind} could not build the task: {exc}"
        return {**dict(request), "backend": self.backend.kind, "shadow": True}, None

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
        if now < self._fleet_held_until:  # the fleet quota refused: look again a little later
            self._gate_until = self._fleet_held_until
            return 0
        single = self.status.state is DispatcherState.PAUSED or not self.breaker.link_up
        if single:
            if self._inflight:
                return 0
            if not self.breaker.probe_due(now):
                self._gate_until = self.breaker.next_probe_at
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
            # A finite safety net: whatever becomes of this probe, the next one comes at the latest then.
            interval = (
                self.settings.pause_probe_interval
                if self.status.state is DispatcherState.PAUSED
                else self.breaker.peek_delay()
            )
            self.breaker.probe_started(now, interval_s=interval)
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
            or not self.breaker.link_up
            or self.clock.now() < self._hold_until
        )

    async def _attempt(self, item: OutboxItem, *, probe: bool = False) -> None:
        sent = False
        try:
            await self.rate.slot()
            if not probe and self._blocked():
                return  # nothing claimed, nothing sent: the row is simply due again
            if not await self._fleet_reserve(item):
                return  # the fleet's quota is used up: the row stays queued, held
            try:
                claimed = await self.store.outbox.claim([item])  # durable before the request leaves
            except Exception as exc:
                await self._fleet_release(item)
                self._store_failed(f"could not claim outbox row {item.outbox_id}, not sending it: {exc}")
                return
            self._store_ok()
            if not claimed:
                # Dropped, delivered or claimed since it was read: it is not ours to send.
                await self._fleet_release(item)
                log.debug("outbox row %d changed before its claim: not sent", item.outbox_id)
                return
            (item,) = claimed
            await self.rate.send_turn()
            sent, sent_at = True, self.clock.now()
            delivery = await self._deliver(item)
            try:
                await self._on_result(item, delivery, sent_at=sent_at)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._store_failed(f"could not record the result of outbox row {item.outbox_id}: {exc}")
                self._unrecorded.append((item, delivery, sent_at))
        finally:
            if probe and not sent:
                self.breaker.probe_unsent(self.clock.now())  # no result will move the schedule: we do
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
            item, delivery, sent_at = self._unrecorded[0]
            try:
                await self._on_result(item, delivery, sent_at=sent_at, again=True)
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

    # ------------------------------------------------------------------ outcomes

    def _not_recorded(self, item: OutboxItem, delivery: Delivery) -> None:
        log.warning(
            "outbox row %d (firing %s) changed while its request was in flight: its result (%s %s) was "
            "not recorded on it",
            item.outbox_id,
            item.firing_uuid,
            delivery.outcome.value,
            delivery.error or delivery.status_code or "",
        )

    async def _on_result(
        self, item: OutboxItem, delivery: Delivery, *, sent_at: float, again: bool = False
    ) -> None:
        """Record one attempt's result. A task counts in the quota month of its request (`sent_at`), also
        when the result is recorded later (the store refused it at first)."""
        now = self.clock.now()
        counts = self.backend.counts_against_quota
        month = self.quota_guard.month(sent_at) if counts else None
        outcome = delivery.outcome
        if not again:
            self.status.attempts[outcome.value] = self.status.attempts.get(outcome.value, 0) + 1
            if self._on_delivery is not None:
                self._on_delivery(item, delivery)
        if outcome is Outcome.DONE or (outcome is Outcome.RETRY and delivery.maybe_committed):
            self._reserved.pop(item.outbox_id, None)  # created (or maybe): the reservation is used
        else:
            await self._fleet_release(item)
        if outcome is Outcome.DONE:
            if not await self.store.outbox.mark_delivered(
                item, delivery, backend=self.backend.kind, quota_month=month
            ):
                self._not_recorded(item, delivery)
            self.status.last_success_at = now
            self._credentials_accepted()
            await self._link_answered(now)
            log.debug("outbox row %d delivered (rule %s)", item.outbox_id, item.firing.rule_id)
        elif outcome is Outcome.RETRY:
            await self._on_retry(item, delivery, now, month)
        elif outcome is Outcome.DEAD:
            if not await self.store.outbox.mark_dead(item, delivery):
                self._not_recorded(item, delivery)
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
            self.breaker.next_probe_at = now + self.settings.pause_probe_interval
            if not await self.store.outbox.mark_retry(
                item, delivery, next_attempt_at=now, count_attempt=False
            ):
                self._not_recorded(item, delivery)
            if self.status.state is not DispatcherState.PAUSED:
                log.error(
                    "CMMS refused the credentials or the plan (%s): sending paused, everything stays queued; "
                    "fix the key and reload (systemctl reload mw-gateway); probing every %.0f s",
                    delivery.error,
                    self.settings.pause_probe_interval,
                )
            self.status.state, self.status.reason = DispatcherState.PAUSED, delivery.error
            await self._link_answered(now)

    def _retry_after(self, delivery: Delivery) -> float | None:
        """The server's Retry-After, capped at RETRY_AFTER_MAX_S (inf too); None when absent or NaN."""
        value = delivery.retry_after_s
        if value is None or math.isnan(value):
            return None
        return min(max(value, 0.0), RETRY_AFTER_MAX_S)

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
        retry_after = self._retry_after(delivery)
        if retry_after is not None:
            # The server said when: honour it for every request, not only this row.
            delay = retry_after
            self._hold_until = max(self._hold_until, now + delay)
            self.status.hold_until = self._hold_until
            await self._link_answered(now)
            log.debug("CMMS asks us to wait %.1f s (%s)", delay, delivery.error)
        else:
            delay = self.backoff(item.attempts + 1)
            if self.breaker.failed(now, delivery.error):
                log.error(
                    "CMMS unreachable (%s): everything stays queued; probing with one request at a time",
                    delivery.error,
                )
            if not self.breaker.link_up:
                self.status.link_up, self.status.link_error = False, self.breaker.error
                log.debug(
                    "CMMS still unreachable (%s): next probe in %.1f s",
                    delivery.error,
                    self.breaker.next_probe_at - now,
                )
            elif self.status.state is DispatcherState.PAUSED:
                self.breaker.next_probe_at = now + self.settings.pause_probe_interval
            else:
                self.breaker.next_probe_at = 0.0
        if not await self.store.outbox.mark_retry(
            item,
            delivery,
            next_attempt_at=now + delay,
            quota_month=month if delivery.maybe_committed else None,
        ):
            self._not_recorded(item, delivery)
        log.debug("outbox row %d: %s; retry in %.1fs", item.outbox_id, delivery.error, delay)

    def _credentials_accepted(self) -> None:
        if self.status.state is DispatcherState.PAUSED:
            log.info("CMMS accepts our requests again: dispatcher resumed")
            self.status.state, self.status.reason = DispatcherState.RUNNING, ""

    async def _link_answered(self, now: float) -> None:
        """The CMMS answered: the link is up. After an outage, the backlog is due again in priority order."""
        if self.breaker.answered():
            self.status.link_up, self.status.link_error = True, ""
            released = await self.store.outbox.release_backoff(now=now)
            log.info(
                "CMMS reachable again: delivering the backlog (%d rows waiting out a backoff now due)",
                released,
            )
        if self.status.state is not DispatcherState.PAUSED:
            self.breaker.next_probe_at = 0.0

    # ------------------------------------------------------------------ quota

    async def _fleet_reserve(self, item: OutboxItem) -> bool:
        guard = self.fleet_quota
        if guard is None or not self.backend.counts_against_quota:
            return True
        if await guard.reserve(item.firing.priority):
            self._reserved[item.outbox_id] = self.quota_guard.month(self.clock.now())
            if self.status.fleet_held:
                self.status.fleet_held = False
                log.info("fleet quota available again: delivering")
            return True
        self._fleet_held_until = self.clock.now() + self.settings.idle_poll
        if not self.status.fleet_held:
            self.status.fleet_held = True
            log.warning(
                "the fleet's monthly task quota is used up for %s priority tasks: held in the outbox",
                item.firing.priority.value,
            )
        return False

    async def _fleet_release(self, item: OutboxItem) -> None:
        month = self._reserved.pop(item.outbox_id, None)
        if month is not None and self.fleet_quota is not None:
            try:
                await self.fleet_quota.release(month)
            except Exception as exc:  # the guard keeps its own count when NATS is away; never fatal here
                log.warning("fleet quota: reservation of row %d not given back: %s", item.outbox_id, exc)

    async def _check_quota(self, now: float) -> tuple[int | None, int | None, bool]:
        """(how many tasks may leave now, how many of them may be normal priority, only high priority?).

        None = no limit. Requests in flight count as used: a burst can never overshoot the quota.
        """
        decision = await self.quota_guard.check(
            now, in_flight=len(self._inflight), applies=self.backend.counts_against_quota
        )
        month = decision.month
        self.status.quota_month = month
        if decision.limit is None:
            self.status.high_only = False
            if self.status.state is DispatcherState.QUOTA_HELD:
                self.status.state, self.status.reason = DispatcherState.RUNNING, ""
            return None, None, False
        used, limit = decision.used, decision.limit
        self.status.quota_used = used
        if decision.warn:
            log.warning(
                "%d of %d tasks of this month's CMMS quota used (%s); from %d on only the tasks of "
                "priority high rules leave, at %d tasks are held until the month turns",
                used,
                limit,
                month,
                reserve_from(limit, self.settings.high_priority_reserve_ratio),
                limit,
            )
        if decision.held:
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
        self.status.high_only = decision.in_reserve
        return decision.allowed, decision.normal_allowed, decision.high_only
