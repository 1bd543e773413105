"""The dispatcher against a scripted in-test backend, with a ManualClock: classification, backoff, pause,
link-down probing, Retry-After, quota guard, priorities, concurrency, crash recovery.

The end-to-end behaviour against the real Mobility Work backend and simulator is in tests/e2e/.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.config import DispatcherSection
from gateway.core.backoff import Backoff
from gateway.core.clock import ManualClock
from gateway.core.delivery import Delivery, NetworkInfo, OutboxItem, Outcome
from gateway.core.firings import Firing, Priority, TaskSpec
from gateway.runtime.dispatcher import (
    LINK_DOWN_AFTER,
    RETRY_AFTER_MAX_S,
    Dispatcher,
    DispatcherState,
    month_key,
)
from gateway.store import Store
from gateway.store.outbox import INTERRUPTED_ERROR

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z

Script = Callable[[OutboxItem], Delivery]


class FakeBackend:
    """Answers with `script(item)` (default: 201); records every call and the peak concurrency."""

    kind = "fake"
    counts_against_quota = True

    def __init__(self, script: Script | None = None) -> None:
        self.script: Script = script or (lambda item: Delivery(Outcome.DONE, 201))
        self.calls: list[str] = []  # firing keys, in the order the requests left
        self.in_flight = 0
        self.peak = 0
        self.gate: asyncio.Event | None = None  # when set, deliveries wait for it
        self.sent_at: list[float] = []

    async def start(self) -> NetworkInfo:
        return NetworkInfo()

    async def deliver(self, item: OutboxItem) -> Delivery:
        self.calls.append(item.firing.key)
        self.sent_at.append(time.monotonic())
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            return self.script(item)
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        pass


def firing(key: str, *, priority: Priority = Priority.NORMAL, at: float = T0) -> Firing:
    return Firing(
        key=key,
        rule_id=key.split(":")[0],
        fired_at=at,
        task=TaskSpec(equipment="EQ-1", description=f"task {key}", assignees=(3,)),
        priority=priority,
        while_open="create",
    )


def settings(**kw: float) -> DispatcherSection:
    base: dict[str, float] = dict(
        concurrency=1,
        rate_limit=10_000,
        retry_initial=10,
        retry_max=80,
        pause_probe_interval=300,
        idle_poll=0.05,
    )
    base.update(kw)
    return DispatcherSection(**base)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def store(tmp_path: Path, clock: ManualClock):
    s = await Store.open(tmp_path, gateway_id="gw", clock=clock)
    yield s
    await s.close()


def make(store: Store, clock: ManualClock, backend: FakeBackend, **kw: object) -> Dispatcher:
    opts: dict[str, object] = {"settings": settings(), "clock": clock, "rng": random.Random(7)}
    opts.update(kw)
    return Dispatcher(store, backend, **opts)  # type: ignore[arg-type]


async def queue(store: Store, *keys: str, high: tuple[str, ...] = ()) -> None:
    await store.outbox.record_firings(
        [firing(k, priority=Priority.HIGH if k in high else Priority.NORMAL) for k in keys]
    )


async def drain_all(d: Dispatcher, *, passes: int = 50) -> int:
    total = 0
    for _ in range(passes):
        n = await d.drain_once()
        if not n:
            break
        total += n
    return total


async def until(predicate: Callable[[], object], *, timeout_s: float = 10.0) -> None:
    """Poll `predicate` (sync or async) until it is true; fail after `timeout_s`."""
    for _ in range(int(timeout_s / 0.002)):
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition not reached")


async def delivered(store: Store, n: int) -> bool:
    return (await store.outbox.counts())["delivered"] >= n


async def row_of(store: Store, key: str):
    (row,) = [r for r in await store.outbox.list(limit=10_000) if r.firing_key == key]
    return row


# ---------------------------------------------------------------------------------------------- delivering


async def test_delivers_high_priority_first_then_oldest(store: Store, clock: ManualClock) -> None:
    await queue(store, "a:1", "b:1")
    clock.advance(1)
    await queue(store, "c:1", "d:1", high=("d:1",))
    backend = FakeBackend()
    d = make(store, clock, backend)
    assert await drain_all(d) == 4
    assert backend.calls == ["d:1", "a:1", "b:1", "c:1"]
    assert (await store.outbox.counts())["delivered"] == 4
    row = await row_of(store, "a:1")
    assert row.attempts == 1 and row.attempt_started_at is None and not row.maybe_duplicated


async def test_5xx_retries_with_capped_exponential_backoff_and_jitter(
    store: Store, clock: ManualClock
) -> None:
    await queue(store, "a:1")
    backend = FakeBackend(lambda item: Delivery(Outcome.RETRY, 503, "HTTP 503: unavailable"))
    d = make(store, clock, backend)
    waits = []
    for attempt in range(1, 7):
        assert await d.drain_once() == 1
        row = await row_of(store, "a:1")
        assert row.attempts == attempt and row.last_status_code == 503
        waits.append(row.next_attempt_at - clock.now())
        assert await d.drain_once() == 0  # nothing before the backoff is over
        clock.advance(waits[-1])
    # attempt n waits within [b/2, b] with b = min(80, 10 * 2**(n-1))
    for n, wait in enumerate(waits, start=1):
        b = min(80.0, 10.0 * 2 ** (n - 1))
        assert b / 2 <= wait <= b, (n, wait)
    assert len({round(w, 6) for w in waits}) == len(waits)  # jittered, not a fixed ladder
    backend.script = lambda item: Delivery(Outcome.DONE, 201)
    assert await d.drain_once() == 1
    assert (await row_of(store, "a:1")).status == "delivered"


def test_backoff_delay_is_capped_for_any_attempt() -> None:
    backoff = Backoff(initial_s=5, max_s=900, jitter=0.5, rng=random.Random(1))
    for attempt in (1, 2, 10, 100, 10_000):
        delay = backoff.delay(attempt)
        assert delay <= 900 and delay >= min(900, 5 * 2 ** (attempt - 1)) / 2


async def test_429_retry_after_holds_every_request(store: Store, clock: ManualClock) -> None:
    await queue(store, "a:1", "b:1")
    answers = iter([Delivery(Outcome.RETRY, 429, "HTTP 429", retry_after_s=30)])
    backend = FakeBackend(lambda item: next(answers, Delivery(Outcome.DONE, 201)))
    d = make(store, clock, backend)
    assert await d.drain_once() == 1
    row = await row_of(store, "a:1")
    assert row.next_attempt_at == pytest.approx(T0 + 30)
    assert d.status.hold_until == pytest.approx(T0 + 30)
    clock.advance(29)
    assert await d.drain_once() == 0  # b:1 was due all along, but the server asked us to wait
    assert backend.calls == ["a:1"]
    clock.advance(1)
    assert await drain_all(d) == 2
    assert backend.calls == ["a:1", "a:1", "b:1"]


async def test_400_becomes_a_dead_letter_with_the_servers_words_and_the_request(
    store: Store, clock: ManualClock
) -> None:
    await queue(store, "bad:1", "good:1")
    details = {
        "message": "The request payload is not valid.",
        "extended_message": {
            "property_errors": {"/description": [{"messageKey": "too_short", "parameters": {}}]}
        },
    }
    request = {"method": "POST", "path": "/partners/v1/tasks", "json": {"description": "x"}}

    def script(item: OutboxItem) -> Delivery:
        if item.firing.key == "bad:1":
            return Delivery(Outcome.DEAD, 400, "HTTP 400: invalid", details=details, request=request)
        return Delivery(Outcome.DONE, 201)

    backend = FakeBackend(script)
    d = make(store, clock, backend)
    assert await drain_all(d) == 2
    dead = await row_of(store, "bad:1")
    assert dead.status == "dead" and dead.dead_at == T0
    assert dead.last_details == details and dead.last_request == request
    assert (await row_of(store, "good:1")).status == "delivered"  # a dead letter blocks nothing
    clock.advance(100)
    assert await d.drain_once() == 0  # never retried on its own
    assert await store.outbox.retry(dead.id)  # the operator fixed the rule
    backend.script = lambda item: Delivery(Outcome.DONE, 201)
    assert await d.drain_once() == 1
    assert (await row_of(store, "bad:1")).status == "delivered"


# ---------------------------------------------------------------------------------------------- pausing


async def test_401_pauses_everything_probes_slowly_and_resumes(
    store: Store, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    await queue(store, "a:1", "b:1", "c:1")
    backend = FakeBackend(lambda item: Delivery(Outcome.PAUSE, 401, "HTTP 401: invalid API key"))
    d = make(store, clock, backend, settings=settings(concurrency=4, pause_probe_interval=300))
    with caplog.at_level(logging.INFO, logger="gateway.runtime"):
        await d.drain_once()
        assert d.status.state is DispatcherState.PAUSED and "401" in d.status.reason
        sent = len(backend.calls)
        for _ in range(5):  # nothing leaves between probes
            clock.advance(50)
            assert await d.drain_once() == 0
        clock.advance(50)  # 300 s after the refusal: exactly one probe
        assert await d.drain_once() == 1
        assert len(backend.calls) == sent + 1
        counts = await store.outbox.counts()
        assert counts["queued"] == 3 and counts["retrying"] == 0  # kept, and a refusal is not an attempt
        # The key is fixed and the gateway reloaded: resume() tries again at once.
        backend.script = lambda item: Delivery(Outcome.DONE, 201)
        d.resume()
        assert await drain_all(d) == 3
    assert d.status.state is DispatcherState.RUNNING
    assert (await store.outbox.counts())["delivered"] == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "paused" in errors[0].getMessage()  # one ERROR, not one per probe


async def test_a_successful_probe_resumes_without_a_reload(store: Store, clock: ManualClock) -> None:
    await queue(store, "a:1", "b:1")
    backend = FakeBackend(lambda item: Delivery(Outcome.PAUSE, 403, "HTTP 403: plan"))
    d = make(store, clock, backend, settings=settings(pause_probe_interval=60))
    await d.drain_once()
    backend.script = lambda item: Delivery(Outcome.DONE, 201)
    clock.advance(60)
    assert await drain_all(d) == 2
    assert d.status.state is DispatcherState.RUNNING


# ---------------------------------------------------------------------------------------------- outages


async def test_outage_probes_one_at_a_time_then_backlog_leaves_high_first_then_oldest(
    store: Store, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    keys = [f"n{i}:1" for i in range(14)]
    await queue(store, *keys)
    clock.advance(1)
    await queue(store, "h:1", high=("h:1",))
    down = True

    def script(item: OutboxItem) -> Delivery:
        return Delivery(Outcome.RETRY, None, "connection refused") if down else Delivery(Outcome.DONE, 201)

    backend = FakeBackend(script)
    d = make(store, clock, backend, settings=settings(concurrency=4, retry_initial=1, retry_max=30))
    with caplog.at_level(logging.INFO, logger="gateway.runtime"):
        for _ in range(6):
            await d.drain_once()
            clock.advance(2)
        assert not d.status.link_up
        calls_when_down = len(backend.calls)
        assert calls_when_down <= LINK_DOWN_AFTER + 3  # the failures that told us, then no burst
        for _ in range(40):  # a long outage: one request at a time, never more often than the backoff
            clock.advance(30)
            assert await d.drain_once() <= 1
        assert len(backend.calls) - calls_when_down <= 40
        down = False
        backend.calls.clear()
        clock.advance(30)
        await drain_all(d)
    assert d.status.link_up
    assert (await store.outbox.counts())["delivered"] == 15
    # After the probe that found the link back, the backlog leaves in order: high first, then oldest. Four
    # attempts start together (concurrency 4), so each row is within one window of its place in that order.
    expected = [k for k in ["h:1", *keys] if k != backend.calls[0]]
    assert sorted(backend.calls[1:]) == sorted(expected)
    assert all(abs(backend.calls[1:].index(k) - i) < 4 for i, k in enumerate(expected))
    assert "h:1" in backend.calls[:5]
    levels = [(r.levelname, r.getMessage()[:30]) for r in caplog.records if r.levelno >= logging.INFO]
    assert [lv for lv, _ in levels].count("ERROR") == 1  # one ERROR when the link goes down
    assert any(lv == "INFO" and "reachable again" in m for lv, m in levels)  # one INFO when it is back


async def test_random_failures_below_the_threshold_do_not_declare_the_link_down(
    store: Store, clock: ManualClock
) -> None:
    await queue(store, *[f"r{i}:1" for i in range(40)])
    flip = iter([i % 3 == 0 for i in range(1000)])  # one call in three fails

    def script(item: OutboxItem) -> Delivery:
        return Delivery(Outcome.RETRY, 502, "HTTP 502") if next(flip) else Delivery(Outcome.DONE, 201)

    d = make(store, clock, FakeBackend(script), settings=settings(retry_initial=1, retry_max=2))
    for _ in range(200):
        await d.drain_once()
        assert d.status.link_up
        clock.advance(2)
    assert (await store.outbox.counts())["delivered"] == 40


# ---------------------------------------------------------------------------------------------- duplicates


async def test_a_lost_response_is_recorded_as_maybe_committed_and_counted_in_the_quota(
    store: Store, clock: ManualClock
) -> None:
    await queue(store, "a:1")
    answers = iter([Delivery(Outcome.RETRY, None, "read timeout", maybe_committed=True)])
    backend = FakeBackend(lambda item: next(answers, Delivery(Outcome.DONE, 201)))
    d = make(store, clock, backend, quota=100)
    await d.drain_once()
    row = await row_of(store, "a:1")
    assert row.maybe_committed == 1 and row.maybe_committed_at == T0 and row.status == "queued"
    month = month_key(T0, "UTC")
    assert (await store.outbox.quota_usage(month)).uncertain == 1
    clock.advance(60)
    await d.drain_once()
    row = await row_of(store, "a:1")
    assert row.status == "delivered" and row.maybe_duplicated
    assert [r.id for r in await store.outbox.maybe_duplicated()] == [row.id]
    assert await store.outbox.quota_used(month) == 2  # conservative: the CMMS may hold two tasks
    assert d.status.maybe_committed == 1


async def test_a_request_in_flight_when_the_gateway_dies_is_flagged_at_restart(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    s = await Store.open(tmp_path, gateway_id="gw", clock=clock)
    await queue(s, "a:1", "b:1")
    backend = FakeBackend()
    backend.gate = asyncio.Event()  # the request hangs
    d = make(s, clock, backend, settings=settings(concurrency=2))
    await d._start_due()
    await until(lambda: backend.in_flight == 2)
    # "SIGKILL": the claims are on the disk, no result ever will be.
    for task in list(d._inflight.values()):
        task.cancel()
    await asyncio.gather(*d._inflight.values(), return_exceptions=True)
    await s.close()

    clock.advance(10)
    s = await Store.open(tmp_path, gateway_id="gw", clock=clock)
    backend = FakeBackend()
    d = make(s, clock, backend, quota=100)
    assert sorted(await d.recover()) == [1, 2]
    row = await row_of(s, "a:1")
    assert row.maybe_committed == 1 and row.last_error == INTERRUPTED_ERROR and row.attempt_started_at is None
    assert await s.outbox.quota_used(month_key(T0, "UTC")) == 2
    assert await drain_all(d) == 2
    assert {r.status for r in await s.outbox.maybe_duplicated()} == {"delivered"}
    await s.close()


async def test_rows_waiting_for_a_send_slot_are_not_claimed(store: Store, clock: ManualClock) -> None:
    await queue(store, "a:1", "b:1")
    backend = FakeBackend()
    backend.gate = asyncio.Event()
    d = make(store, clock, backend, settings=settings(concurrency=2, rate_limit=5))
    await d._start_due()
    await until(lambda: backend.in_flight == 1)
    claimed = [r.firing_key for r in await store.outbox.list() if r.attempt_started_at is not None]
    assert claimed == ["a:1"]  # b:1 still waits for the rate limit: a crash now would not flag it
    backend.gate.set()
    await asyncio.gather(*d._inflight.values())


# ---------------------------------------------------------------------------------------------- quota


async def test_quota_warns_keeps_the_reserve_for_high_holds_at_the_limit_and_releases_next_month(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    paris = ZoneInfo("Europe/Paris")
    clock = ManualClock(datetime(2026, 1, 31, 12, 0, tzinfo=paris).timestamp())
    store._clock = clock  # type: ignore[attr-defined]
    store.outbox._clock = clock  # type: ignore[attr-defined]
    await queue(store, *[f"n{i}:1" for i in range(12)])
    await queue(store, "h1:1", "h2:1", "h3:1", high=("h1:1", "h2:1", "h3:1"))
    backend = FakeBackend()
    d = make(store, clock, backend, quota=10, timezone="Europe/Paris", settings=settings(concurrency=4))
    # Deliver the three high first (they leave first anyway), then normal rows up to the reserve (90%).
    with caplog.at_level(logging.WARNING, logger="gateway.runtime"):
        await drain_all(d)
    # The three high rows leave before any normal one (they start together: their order among themselves
    # depends on scheduling, with concurrency 4).
    assert sorted(backend.calls[:3]) == ["h1:1", "h2:1", "h3:1"]
    assert len(backend.calls) == 9  # 3 high + 6 normal: the 10th task is kept for high priority
    assert d.status.high_only and d.status.state is DispatcherState.RUNNING
    assert any("quota used" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    await queue(store, "h4:1", "h5:1", high=("h4:1", "h5:1"))
    await drain_all(d)
    assert backend.calls[9:] == ["h4:1"]  # high may use the reserve, up to the limit, not beyond
    assert d.status.state is DispatcherState.QUOTA_HELD and d.status.quota_used == 10
    counts = await store.outbox.counts()
    assert counts["queued"] == 7 and counts["dead"] == 0 and counts["dropped"] == 0  # held, not dropped
    # 23:30 UTC on 31 January is already February in Paris: the network's month turned.
    clock.set(datetime(2026, 1, 31, 23, 30, tzinfo=ZoneInfo("UTC")).timestamp())
    await drain_all(d)
    assert d.status.state is DispatcherState.RUNNING and d.status.quota_month == "2026-02"
    assert backend.calls[10] == "h5:1"  # high first again
    assert (await store.outbox.counts())["queued"] == 0
    assert await store.outbox.quota_used("2026-01") == 10
    assert await store.outbox.quota_used("2026-02") == 7


async def test_requests_in_flight_count_against_the_quota(store: Store, clock: ManualClock) -> None:
    await queue(store, *[f"n{i}:1" for i in range(10)])
    backend = FakeBackend()
    backend.gate = asyncio.Event()
    d = make(store, clock, backend, quota=3, settings=settings(concurrency=8, high_priority_reserve_ratio=0))
    await d._start_due()
    assert len(d._inflight) == 3  # not 8: a burst can never overshoot the quota
    backend.gate.set()
    await asyncio.gather(*d._inflight.values())
    assert await d.drain_once() == 0 and d.status.state is DispatcherState.QUOTA_HELD


async def test_backends_outside_the_quota_are_never_held(store: Store, clock: ManualClock) -> None:
    await queue(store, *[f"n{i}:1" for i in range(5)])
    backend = FakeBackend()
    backend.counts_against_quota = False  # type: ignore[misc]
    d = make(store, clock, backend, quota=2)
    assert await drain_all(d) == 5


# ---------------------------------------------------------------------------------------------- limits


async def test_concurrency_limit(store: Store, clock: ManualClock) -> None:
    await queue(store, *[f"n{i}:1" for i in range(9)])
    backend = FakeBackend()

    async def slow(item: OutboxItem) -> Delivery:
        backend.in_flight += 1
        backend.peak = max(backend.peak, backend.in_flight)
        await asyncio.sleep(0.03)
        backend.in_flight -= 1
        return Delivery(Outcome.DONE, 201)

    backend.deliver = slow  # type: ignore[method-assign]
    d = make(store, clock, backend, settings=settings(concurrency=3, idle_poll=0.01))
    task = asyncio.create_task(d.run())
    try:
        await until(lambda: delivered(store, 9))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert backend.peak == 3


async def test_rate_limit_spaces_requests(store: Store, clock: ManualClock) -> None:
    await queue(store, *[f"n{i}:1" for i in range(6)])
    backend = FakeBackend()
    d = make(store, clock, backend, settings=settings(concurrency=6, rate_limit=50))
    await drain_all(d)
    gaps = [b - a for a, b in zip(backend.sent_at, backend.sent_at[1:], strict=False)]
    assert len(gaps) == 5 and min(gaps) >= 0.0199  # 1/50 s apart (a lower bound: never flaky)


async def test_run_wakes_on_new_rows_and_stops_cleanly(store: Store) -> None:
    from gateway.core.clock import SystemClock

    backend = FakeBackend()
    d = Dispatcher(store, backend, settings=settings(idle_poll=30), clock=SystemClock())
    task = asyncio.create_task(d.run())
    await queue(store, "a:1")
    d.wake()
    await until(lambda: backend.calls)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (await store.outbox.counts())["delivered"] == 1


async def test_a_backend_that_raises_is_retried_and_assumed_maybe_committed(
    store: Store, clock: ManualClock
) -> None:
    await queue(store, "a:1")

    def boom(item: OutboxItem) -> Delivery:
        raise RuntimeError("bug")

    d = make(store, clock, FakeBackend(boom))
    await d.drain_once()
    row = await row_of(store, "a:1")
    assert row.status == "queued" and row.attempts == 1 and row.maybe_committed == 1
    assert "RuntimeError" in (row.last_error or "")


# ---------------------------------------------------------------------------------------------- issue 13


async def test_a_firing_rolled_back_is_never_sent(store: Store, clock: ManualClock) -> None:
    inserted, fail = asyncio.Event(), asyncio.Event()

    async def doomed_burst() -> None:  # record_firings with a full disk on its last statement
        async with store.db.write() as conn:
            body = json.dumps(firing("ghost:1").to_json())
            await conn.execute(
                "INSERT INTO firings(key, uuid, rule_id, fired_at, priority, status, body)"
                " VALUES ('ghost:1', 'u-ghost', 'ghost', ?, 'normal', 'queued', ?)",
                (T0, body),
            )
            await conn.execute(
                "INSERT INTO outbox(firing_id, priority, status, next_attempt_at, created_at, updated_at)"
                " SELECT id, 1, 'queued', ?, ?, ? FROM firings WHERE key='ghost:1'",
                (T0, T0, T0),
            )
            inserted.set()
            await fail.wait()
            raise sqlite3.OperationalError("database or disk is full")

    backend = FakeBackend()
    d = make(store, clock, backend)
    await d.recover()  # done at start-up, long before
    writer = asyncio.create_task(doomed_burst())
    await inserted.wait()
    drain = asyncio.create_task(d.drain_once())
    for _ in range(20):
        await asyncio.sleep(0)
    fail.set()
    with pytest.raises(sqlite3.OperationalError):
        await writer
    await drain
    assert backend.calls == []
    await queue(store, "real:1")  # the id the ghost had is not taken by the next firing's result
    assert await drain_all(d) == 1 and backend.calls == ["real:1"]


async def test_a_row_dropped_between_due_and_claim_is_not_sent(store: Store, clock: ManualClock) -> None:
    await queue(store, "a:1")
    backend = FakeBackend()
    d = make(store, clock, backend)
    read_due = store.outbox.due

    async def due_then_operator_drops(**kw: Any) -> list[OutboxItem]:
        items = await read_due(**kw)
        for item in items:
            assert await store.outbox.drop(item.outbox_id)
        return items

    store.outbox.due = due_then_operator_drops  # type: ignore[method-assign]
    await d.drain_once()
    assert backend.calls == []
    assert (await row_of(store, "a:1")).status == "dropped"


class FailClaims:
    """Makes the next `n` claims fail as a full disk would."""

    def __init__(self, store: Store, n: int = 1) -> None:
        self.n, self._claim = n, store.outbox.claim
        store.outbox.claim = self  # type: ignore[method-assign]

    async def __call__(self, items: Any) -> list[OutboxItem]:
        if self.n > 0:
            self.n -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return await self._claim(items)


async def test_a_failed_claim_during_a_link_down_probe_does_not_stop_delivery(
    store: Store, clock: ManualClock
) -> None:
    await queue(store, *[f"n{i}:1" for i in range(LINK_DOWN_AFTER + 1)])
    down = True
    backend = FakeBackend(
        lambda item: Delivery(Outcome.RETRY, None, "refused") if down else Delivery(Outcome.DONE, 201)
    )
    d = make(store, clock, backend, settings=settings(concurrency=4, retry_initial=1, retry_max=4))
    for _ in range(10):
        await d.drain_once()
        clock.advance(5)
    assert not d.status.link_up
    down = False
    FailClaims(store)
    for _ in range(10):  # the probe's claim fails once; the next probes go on
        await d.drain_once()
        clock.advance(5)
    assert (await store.outbox.counts())["delivered"] == LINK_DOWN_AFTER + 1


async def test_a_failed_claim_during_a_pause_probe_does_not_stop_delivery(
    store: Store, clock: ManualClock
) -> None:
    await queue(store, "a:1", "b:1")
    backend = FakeBackend(lambda item: Delivery(Outcome.PAUSE, 401, "HTTP 401"))
    d = make(store, clock, backend, settings=settings(pause_probe_interval=60))
    await d.drain_once()
    assert d.status.state is DispatcherState.PAUSED
    backend.script = lambda item: Delivery(Outcome.DONE, 201)
    FailClaims(store)
    for _ in range(6):
        clock.advance(60)
        await drain_all(d)
    assert d.status.state is DispatcherState.RUNNING
    assert (await store.outbox.counts())["delivered"] == 2


async def test_an_infinite_retry_after_holds_an_hour_at_most_and_resume_forgets_it(
    store: Store, clock: ManualClock
) -> None:
    await queue(store, "a:1", "b:1")
    answers = iter([Delivery(Outcome.RETRY, 429, "HTTP 429", retry_after_s=float("inf"))])
    backend = FakeBackend(lambda item: next(answers, Delivery(Outcome.DONE, 201)))
    d = make(store, clock, backend)
    await d.drain_once()
    assert d.status.hold_until == pytest.approx(T0 + RETRY_AFTER_MAX_S)
    clock.advance(RETRY_AFTER_MAX_S)
    assert await drain_all(d) == 2
    # Held again by a huge value; a reload (resume) forgets the hold (the row keeps its own capped wait).
    await queue(store, "c:1")
    answers = iter([Delivery(Outcome.RETRY, 503, "HTTP 503", retry_after_s=1e300)])
    assert await d.drain_once() == 1
    await queue(store, "d:1")
    assert await d.drain_once() == 0
    d.resume()
    assert d.status.hold_until is None
    assert await drain_all(d) == 1 and backend.calls[-1] == "d:1"
    clock.advance(RETRY_AFTER_MAX_S)
    assert await drain_all(d) == 1 and backend.calls[-1] == "c:1"


async def test_a_nan_retry_after_is_ignored(store: Store, clock: ManualClock) -> None:
    await queue(store, "a:1")
    answers = iter([Delivery(Outcome.RETRY, 429, "HTTP 429", retry_after_s=float("nan"))])
    d = make(store, clock, FakeBackend(lambda item: next(answers, Delivery(Outcome.DONE, 201))))
    await d.drain_once()
    assert d.status.hold_until is None
    row = await row_of(store, "a:1")
    assert T0 + 5 <= row.next_attempt_at <= T0 + 10  # the ordinary backoff


async def test_the_quota_month_follows_the_current_timezone(store: Store) -> None:
    clock = ManualClock(datetime(2026, 1, 31, 23, 30, tzinfo=ZoneInfo("UTC")).timestamp())
    store.outbox._clock = clock  # type: ignore[attr-defined]
    tz: list[str | None] = [None]  # the CMMS was unreachable at start-up: no timezone yet
    await queue(store, "a:1", "b:1")
    d = make(store, clock, FakeBackend(), quota=100, timezone=lambda: tz[0])
    await d.drain_once()
    assert d.status.quota_month == "2026-01"
    tz[0] = "Europe/Paris"  # the network settings arrived: 00:30 on 1 February in Paris
    await d.drain_once()
    assert d.status.quota_month == "2026-02"
    assert await store.outbox.quota_used("2026-01") == 1 and await store.outbox.quota_used("2026-02") == 1


async def test_an_unknown_timezone_counts_in_utc_with_one_warning(
    store: Store, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    await queue(store, "a:1", "b:1")
    d = make(store, clock, FakeBackend(), quota=100, timezone="Mars/Olympus_Mons")
    with caplog.at_level(logging.WARNING, logger="gateway.runtime"):
        assert await d.drain_once() == 1
        assert await d.drain_once() == 1
    assert d.status.quota_month == month_key(T0, "UTC")
    warnings = [r for r in caplog.records if "Mars/Olympus_Mons" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
