"""The sample pipeline (gateway/runtime/pipeline.py): one way into the engine, the webhook's rearm committed
with the webhook event, a failing disk that does not block, a full queue that logs once per episode."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.config import HttpSection
from gateway.core.clock import ManualClock
from gateway.core.events import EventBus, FiringRecorded
from gateway.core.inputs import Tick
from gateway.core.samples import Sample
from gateway.core.webhooks import TaskClosed
from gateway.runtime.pipeline import Pipeline
from gateway.runtime.views import PipelineLedger
from gateway.store import Store
from gateway.web.receiver import WebhookReceiver
from tests.e2e.helpers import wait_for
from tests.engine.helpers import engine

RULE = """
- id: press1-lubrication
  when: {counter: press1.strokes, every: 1000, rearm: on_completion}
  task: {equipment: EQ-PRESS-01, description: "Lubricate press 1"}
"""


@dataclass
class Health:
    failures: list[str] = field(default_factory=list)
    ok: int = 0

    def store_failed(self, exc: BaseException, *, doing: str) -> None:
        self.failures.append(doing)

    def store_ok(self) -> None:
        self.ok += 1


@dataclass
class Running:
    pipeline: Pipeline
    store: Store
    events: EventBus
    health: Health
    clock: ManualClock
    task: asyncio.Task[None]
    beats: list[int]


@asynccontextmanager
async def running_pipeline(tmp_path: Path, rules: str = RULE, **kwargs: Any) -> AsyncIterator[Running]:
    clock = ManualClock()
    store = await Store.open(tmp_path / "state", gateway_id="test-gw", clock=clock)
    events, health, beats = EventBus(), Health(), [0]

    def beat() -> None:
        beats[0] += 1

    eng = engine(tmp_path, rules, state=await store.rules.load())
    pipeline = Pipeline(eng, store, clock=clock, events=events, health=health, beat=beat, **kwargs)
    task = asyncio.create_task(pipeline.run())
    try:
        yield Running(pipeline, store, events, health, clock, task, beats)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


def strokes(value: int, clock: ManualClock) -> Sample:
    return Sample("press1.strokes", value, clock.now())


def completed_webhook(firing_uuid: str) -> bytes:
    return json.dumps(
        {
            "_event": "TaskWasCompleted",
            "_idempotencyKey": "evt-1",
            "id": "4711",
            "doneAt": "2026-01-01T00:10:00+00:00",
            "metadata": {"firing": firing_uuid, "rule": "press1-lubrication", "gateway": "test-gw"},
        }
    ).encode()


async def test_the_rearm_of_an_answered_webhook_survives_a_crash(tmp_path):
    """TaskWasCompleted on a `rearm: on_completion` counter: once the webhook is answered 200, the rearmed
    threshold is on disk, even if the process dies before any periodic save (here: the pipeline is cancelled
    and the database closed with no drain and no save, then opened again)."""
    async with running_pipeline(tmp_path, save_interval_s=3600.0) as run:
        recorded: list[FiringRecorded] = []
        closed: list[TaskClosed] = []
        run.events.subscribe(FiringRecorded, recorded.append)
        run.events.subscribe(TaskClosed, closed.append)
        run.pipeline.publish(strokes(0, run.clock))
        run.pipeline.publish(strokes(1200, run.clock))
        await wait_for(lambda: len(recorded) == 1, what="the counter to fire at 1000")
        assert (await run.store.rules.load())["press1-lubrication"]["next"] == 2000

        receiver = WebhookReceiver(PipelineLedger(run.pipeline), HttpSection(), clock=run.clock)
        reply = await receiver.receive_mobility_work({}, completed_webhook(recorded[0].result.uuid))
        assert reply.status == 200 and reply.body["status"] == "stored"
        assert [c.rule_id for c in closed] == ["press1-lubrication"]
        run.task.cancel()  # the crash: no drain, no save_state
        await asyncio.gather(run.task, return_exceptions=True)
        state_path = run.store.path

    store = await Store.open(state_path.parent, gateway_id="test-gw", clock=ManualClock())
    try:
        state = (await store.rules.load())["press1-lubrication"]
        assert state["next"] == 2200  # rearmed: the meter at completion (1200) + every
        assert await store.ledger.event_count() == 1
    finally:
        await store.close()


async def test_a_webhook_the_store_cannot_take_is_503_and_the_rearm_stays_to_be_saved(tmp_path):
    async with running_pipeline(tmp_path, save_interval_s=3600.0) as run:
        recorded: list[FiringRecorded] = []
        run.events.subscribe(FiringRecorded, recorded.append)
        run.pipeline.publish(strokes(0, run.clock))
        run.pipeline.publish(strokes(1200, run.clock))
        await wait_for(lambda: len(recorded) == 1, what="the counter to fire")
        receiver = WebhookReceiver(PipelineLedger(run.pipeline), HttpSection(), clock=run.clock)
        await run.store.db.conn.execute("PRAGMA query_only = ON")
        reply = await receiver.receive_mobility_work({}, completed_webhook(recorded[0].result.uuid))
        assert reply.status == 503
        await run.store.db.conn.execute("PRAGMA query_only = OFF")
        reply = await receiver.receive_mobility_work(
            {}, completed_webhook(recorded[0].result.uuid)
        )  # retried
        assert reply.status == 200 and reply.body["status"] == "stored"
        assert (await run.store.rules.load())["press1-lubrication"]["next"] == 2200


async def test_a_failing_disk_holds_the_firings_without_blocking_the_consumer(tmp_path):
    """Disk full: the consumer keeps taking samples and beating (the watchdog stays fed), the firings wait in
    memory in order, and are committed once the database takes writes again."""
    async with running_pipeline(tmp_path, retry_s=0.05) as run:
        recorded: list[FiringRecorded] = []
        run.events.subscribe(FiringRecorded, recorded.append)
        run.pipeline.publish(strokes(0, run.clock))
        await wait_for(lambda: run.pipeline.samples_in == 1, what="the first sample")
        await run.store.db.conn.execute("PRAGMA query_only = ON")  # every write now fails

        run.pipeline.publish(strokes(1000, run.clock))
        await wait_for(lambda: run.pipeline.held == 1, what="the firing to be held")
        beats = run.beats[0]
        for value in (2000, 3000):
            run.pipeline.publish(strokes(value, run.clock))
            run.pipeline.publish(Tick())
        await wait_for(lambda: run.pipeline.samples_in == 4, what="later samples to be processed")
        await wait_for(lambda: run.beats[0] > beats, what="the consumer to keep beating")
        assert run.pipeline.held == 3 and recorded == []
        assert run.health.failures and set(run.health.failures) == {"recording firings"}

        await run.store.db.conn.execute("PRAGMA query_only = OFF")

        def committed_on_a_later_tick() -> bool:
            run.pipeline.publish(Tick())  # the periodic task's tick; the retry comes with one past retry_s
            return len(recorded) == 3

        await wait_for(committed_on_a_later_tick, what="the held firings to be committed")
        assert [r.firing.key for r in recorded] == [
            "press1-lubrication:1000",
            "press1-lubrication:2000",
            "press1-lubrication:3000",
        ]
        assert run.pipeline.held == 0
        assert (await run.store.rules.load())["press1-lubrication"]["next"] == 4000


async def test_a_held_firing_does_not_undo_a_rearm_answered_meanwhile(tmp_path):
    """While a firing is held (the disk failed), a webhook rearms another rule and is answered 200: its own
    transaction saved the new state. The held firing's later commit must not write back the older state it
    took with it (a restart would lose the rearm)."""
    check = """
- id: press1-check
  when: {counter: press1.strokes, every: 1300}
  task: {equipment: EQ-PRESS-01, description: "Check press 1"}
"""
    async with running_pipeline(tmp_path, rules=RULE + check, save_interval_s=3600.0, retry_s=3600.0) as run:
        recorded: list[FiringRecorded] = []
        run.events.subscribe(FiringRecorded, recorded.append)
        run.pipeline.publish(strokes(0, run.clock))
        run.pipeline.publish(strokes(1200, run.clock))
        await wait_for(lambda: len(recorded) == 1, what="the lubrication to fire at 1000")
        await run.store.db.conn.execute("PRAGMA query_only = ON")
        run.pipeline.publish(strokes(1350, run.clock))  # press1-check fires: held with both rules' state
        await wait_for(lambda: run.pipeline.held == 1, what="the firing to be held")
        await run.store.db.conn.execute("PRAGMA query_only = OFF")

        receiver = WebhookReceiver(PipelineLedger(run.pipeline), HttpSection(), clock=run.clock)
        reply = await receiver.receive_mobility_work({}, completed_webhook(recorded[0].result.uuid))
        assert reply.status == 200
        assert (await run.store.rules.load())["press1-lubrication"]["next"] == 2350  # 1350 + every
        assert await run.pipeline.commit_held()
        assert run.pipeline.held == 0 and recorded[-1].firing.rule_id == "press1-check"
        rules = await run.store.rules.load()
        assert rules["press1-lubrication"]["next"] == 2350
        assert rules["press1-check"]["next"] == 2600


async def test_a_full_queue_logs_one_warning_per_episode_with_the_count(tmp_path, caplog):
    clock = ManualClock()
    store = await Store.open(tmp_path / "state", gateway_id="test-gw", clock=clock)
    try:
        eng = engine(tmp_path, RULE)
        pipeline = Pipeline(eng, store, clock=clock, events=EventBus(), health=Health(), queue_size=3)
        caplog.set_level(logging.INFO, logger="gateway.runtime.pipeline")
        for value in range(10):  # nobody consumes: 3 fit, 7 are dropped
            pipeline.publish(strokes(value, clock))
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "sample queue full (3)" in warnings[0].getMessage()
        assert pipeline.dropped == 7

        await pipeline.handle([pipeline.queue.get_nowait() for _ in range(3)])
        pipeline.publish(strokes(11, clock))
        infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert "sample queue has room again: 7 samples were dropped while it was full" in infos
        assert pipeline.dropped == 0
        for value in range(20, 30):  # a second episode: one more warning
            pipeline.publish(strokes(value, clock))
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    finally:
        await store.close()


@pytest.mark.parametrize("queued", [0, 5])
async def test_drain_commits_what_is_queued_and_the_state(tmp_path, queued):
    clock = ManualClock()
    store = await Store.open(tmp_path / "state", gateway_id="test-gw", clock=clock)
    try:
        pipeline = Pipeline(engine(tmp_path, RULE), store, clock=clock, events=EventBus(), health=Health())
        pipeline.publish(strokes(0, clock))
        for i in range(queued):
            pipeline.publish(strokes(1000 * (i + 1) + 1, clock))
        await pipeline.drain()
        assert pipeline.firings_out == queued
        assert (await store.rules.load())["press1-lubrication"]["next"] == 1000 * (queued + 1)
    finally:
        await store.close()


async def test_finish_ends_the_consumer_between_batches_and_drain_answers_queued_webhooks(tmp_path):
    async with running_pipeline(tmp_path) as run:
        run.pipeline.publish(strokes(0, run.clock))
        await wait_for(lambda: run.pipeline.samples_in == 1, what="the consumer to run")
        run.pipeline.finish()
        await asyncio.wait_for(run.task, timeout=5)  # returned by itself, not cancelled
        receiver = WebhookReceiver(PipelineLedger(run.pipeline), HttpSection(), clock=run.clock)
        answer = asyncio.create_task(receiver.receive_mobility_work({}, completed_webhook("no-such-firing")))
        await wait_for(lambda: run.pipeline.queue.qsize() == 1, what="the webhook to be queued")
        await run.pipeline.drain()
        reply = await asyncio.wait_for(answer, timeout=5)
        assert reply.status == 200 and reply.body["status"] == "stored"
