"""The sample pipeline: one input queue -> the engine -> the store, in one task (the engine consumer).

Everything that changes the engine comes through `publish()` as an EngineInput (gateway/core/inputs.py):
samples from the sources and from stock webhooks, the periodic Tick, and verified webhooks to record. Only
`run()` takes from the queue, so the engine is changed by one task, in the order things arrived.

- Samples are batched (up to BATCH samples per engine call: the hot path).
- Firings are committed with the rule state that produced them in one transaction (group commit), then
  `FiringRecorded` is published and the dispatcher woken.
- A failed commit (disk full, read-only database) does NOT block: the firings and their rule states are held
  in memory, `/healthz` says the store fails, and the commit is retried every `retry_s` (on the Tick) while
  samples keep being processed and the task keeps beating, so the systemd watchdog keeps being fed. New
  firings queue behind the held ones, in order. Held firings are lost only if the process dies meanwhile.
- A webhook (WebhookInput) is recorded by the ledger in one transaction with the rule state its news changes:
  a TaskWasCompleted for a `rearm: on_completion` rule rearms the rule inside that transaction, so an answer
  of 200 means both the event and the rearm are on disk. If the transaction fails, the rules it touched stay
  dirty (saved with the next commit) and the sender is answered 503 and retries. If it succeeds while
  firings are held, the held copies of the rules it saved are dropped: the held commit must not write an
  older state over the rearm.
- The rule state of rules that did not fire is saved every STATE_SAVE_INTERVAL_S (SD-card wear).
- A full queue drops samples: one WARNING when it fills and one INFO with the count of dropped samples when
  it has room again, not one line per sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from gateway.core.clock import Clock
from gateway.core.errors import StoreError
from gateway.core.events import EventBus, FiringRecorded
from gateway.core.firings import Firing
from gateway.core.inputs import EngineInput, Tick, WebhookInput
from gateway.core.samples import Sample
from gateway.core.webhooks import Incoming, NonceUse, RecordResult, TaskClosed
from gateway.engine.engine import Engine
from gateway.store import Store

log = logging.getLogger("gateway.runtime.pipeline")

SAMPLE_QUEUE_SIZE = 100_000
BATCH = 1000
STATE_SAVE_INTERVAL_S = 60.0  # rule state without a firing is saved this often (SD-card wear)
STORE_RETRY_S = 5.0  # a failed firing commit (disk full) is retried this often until it succeeds


class StoreHealth(Protocol):
    """Where a failing database is reported (gateway/runtime/housekeeping.py: Housekeeping)."""

    def store_failed(self, exc: BaseException, *, doing: str) -> None: ...

    def store_ok(self) -> None: ...


class Pipeline:
    def __init__(
        self,
        engine: Engine,
        store: Store,
        *,
        clock: Clock,
        events: EventBus,
        health: StoreHealth,
        wake: Callable[[], None] = lambda: None,
        beat: Callable[[], None] = lambda: None,
        queue_size: int | None = None,
        retry_s: float | None = None,
        save_interval_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.store = store
        self.clock = clock
        self.events = events
        self.health = health
        self.wake = wake
        self.beat = beat
        self.retry_s = STORE_RETRY_S if retry_s is None else retry_s
        self.save_interval_s = STATE_SAVE_INTERVAL_S if save_interval_s is None else save_interval_s
        size = SAMPLE_QUEUE_SIZE if queue_size is None else queue_size
        self.queue: asyncio.Queue[EngineInput] = asyncio.Queue(maxsize=size)
        self.samples_in = 0
        self.firings_out = 0
        self.dropped = 0  # samples dropped in the current full-queue episode
        self.finishing = False  # run() returns after its current batch
        self.closed = False  # stopping: webhooks are refused (503) rather than queued for nobody
        self._held: list[Firing] = []
        self._held_states: dict[str, Any] = {}
        self._retry_at: float | None = None  # while a commit fails: not again before this (monotonic)
        self._monotonic = monotonic
        self._last_save = monotonic()

    # ------------------------------------------------------------------ into the queue

    def submit(self, sample: Sample) -> None:
        """Called by sources (and for cmms.stock.* signals). Never blocks; a full queue drops the sample."""
        self.publish(sample)

    def publish(self, item: EngineInput) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            if isinstance(item, WebhookInput):  # answered 503: the sender retries
                item.reply.set_exception(StoreError("the engine's input queue is full"))
                return
            if isinstance(item, Sample):
                if not self.dropped:
                    log.warning(
                        "sample queue full (%d): dropping samples until the engine catches up",
                        self.queue.maxsize,
                    )
                self.dropped += 1
            return  # a Tick is simply skipped: the engine is busy anyway
        if self.dropped:
            log.info("sample queue has room again: %d samples were dropped while it was full", self.dropped)
            self.dropped = 0

    async def record_webhook(self, incoming: Incoming, *, nonce: NonceUse | None = None) -> RecordResult:
        """The ledger writer the webhook receiver uses: recorded by the engine consumer, in order."""
        if self.closed:
            raise StoreError("the gateway is stopping")
        reply: asyncio.Future[RecordResult] = asyncio.get_running_loop().create_future()
        await self.queue.put(WebhookInput(incoming, nonce, reply))  # waits for room: never dropped
        return await reply

    # ------------------------------------------------------------------ the consumer

    @property
    def held(self) -> int:
        """Firings waiting in memory for the database to take them."""
        return len(self._held)

    async def run(self) -> None:
        """The engine consumer. Returns after `finish()`, never in the middle of a batch (a cancelled batch
        could leave a webhook's sender waiting for an answer nobody gives)."""
        while not self.finishing:
            item = await self.queue.get()
            items = [item]
            while len(items) < BATCH and not self.queue.empty():
                items.append(self.queue.get_nowait())
            await self.handle(items)
            self.beat()

    def finish(self) -> None:
        """Ask `run()` to return after the batch in hand; `drain()` then takes what is still queued."""
        self.finishing = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(Tick())  # wakes a consumer waiting on an empty queue

    async def handle(self, items: list[EngineInput]) -> None:
        """Feed items to the engine in order; commit what they produce."""
        samples: list[Sample] = []
        firings: list[Firing] = []
        for item in items:
            if isinstance(item, Sample):
                samples.append(item)
                continue
            if samples:
                firings += self._process(samples)
                samples = []
            if isinstance(item, Tick):
                firings += self.engine.tick(self.clock.now(), self.clock.monotonic())
                await self._commit(firings)
                firings = []
                await self._periodic_save()
            elif isinstance(item, WebhookInput):
                await self._commit(firings)
                firings = []
                await self._record_webhook(item)
        if samples:
            firings += self._process(samples)
        await self._commit(firings)

    def _process(self, samples: list[Sample]) -> list[Firing]:
        self.samples_in += len(samples)
        return self.engine.process_batch(samples, self.clock.now(), self.clock.monotonic())

    async def drain(self) -> None:
        """On stop: what is still queued, then the rule state; one last try for held firings."""
        items: list[EngineInput] = []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        self._retry_at = None
        await self.handle(items)
        await self.save_state()

    # ------------------------------------------------------------------ commits

    async def _commit(self, firings: list[Firing]) -> None:
        if firings:
            self._held.extend(firings)
            self._held_states.update(self.engine.take_dirty_state())
        if not self._held:
            return
        if self._retry_at is not None and self._monotonic() < self._retry_at:
            return  # the store failed a moment ago: keep holding, try again at _retry_at
        await self.commit_held()

    async def commit_held(self) -> bool:
        """Firings and the rule state that produced them, in one transaction; then wake the dispatcher."""
        firings, states = self._held, self._held_states
        try:
            results = await self.store.outbox.record_firings(firings, rule_states=states)
        except sqlite3.Error as exc:  # disk full or read-only: keep the firings, report, try again later
            self.health.store_failed(exc, doing="recording firings")
            self._retry_at = self._monotonic() + self.retry_s
            return False
        self._held, self._held_states, self._retry_at = [], {}, None
        self.health.store_ok()
        for firing, result in zip(firings, results, strict=True):
            self.firings_out += 1
            log.info(
                "rule %s fired (%s): %s -> %s%s",
                firing.rule_id,
                firing.key,
                firing.task.description[:80],
                result.status.value,
                f" (task of firing {result.suppressed_by} still open)" if result.suppressed_by else "",
            )
            self.events.publish(FiringRecorded(firing, result))
        self.wake()
        return True

    async def _periodic_save(self) -> None:
        mono = self._monotonic()
        if mono - self._last_save >= self.save_interval_s:
            self._last_save = mono
            await self.save_state()

    async def save_state(self) -> None:
        if self._held:
            await self.commit_held()  # the held firings carry the states that go with them
            if self._held:
                return
        dirty = self.engine.take_dirty_state()
        if not dirty:
            return
        try:
            await self.store.rules.save(dirty)
        except sqlite3.Error as exc:  # disk full or read-only: saved again with the next change
            self.engine.mark_dirty(dirty)
            self.health.store_failed(exc, doing="saving rule state")
            return
        self.health.store_ok()

    async def _record_webhook(self, item: WebhookInput) -> None:
        if item.reply.done():  # the caller went away
            return
        touched: list[str] = []

        def rearm(closed: tuple[TaskClosed, ...]) -> Mapping[str, Any]:
            """Inside the ledger's transaction: apply the closed tasks, return the state to save with it."""
            for c in closed:
                self.engine.task_closed(c.rule_id, c.outcome, c.at)
            states = self.engine.take_dirty_state()
            touched.extend(states)
            return states

        try:
            result = await self.store.ledger.record(item.incoming, nonce=item.nonce, on_closed=rearm)
        except asyncio.CancelledError:
            if touched:
                self.engine.mark_dirty(touched)
            item.reply.cancel()
            raise
        except Exception as exc:  # handed to the waiting receiver, which answers it (503, 401)
            if touched:
                self.engine.mark_dirty(touched)
            if not item.reply.done():
                item.reply.set_exception(exc)
            return
        for rule_id in touched:  # saved now, newer than the copy a held firing carries: keep the new one
            self._held_states.pop(rule_id, None)
        for closed in result.closed:
            self.events.publish(closed)
        if not item.reply.done():
            item.reply.set_result(result)
