"""The one way into the engine: everything the engine reacts to is an `EngineInput` on one queue.

    Sample          a value from a source (or a `cmms.stock.*` level from a webhook)
    Tick            about once a second: `for` timers, running hours, stale signals
    WebhookInput    a verified webhook to record; the task-closed news it carries (`rearm: on_completion`)
                    changes rule state, and that change is committed in the same transaction as the webhook
                    event, by the engine consumer (gateway/runtime/pipeline.py), which answers `reply`.

Only the engine consumer takes from the queue, so the engine is only ever changed by one task, in order.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gateway.core.samples import Sample
from gateway.core.webhooks import Incoming, NonceUse, RecordResult


@dataclass(frozen=True, slots=True)
class Tick:
    """Advance the engine's timers to the clock's now."""


@dataclass(frozen=True, slots=True)
class WebhookInput:
    incoming: Incoming
    nonce: NonceUse | None
    reply: asyncio.Future[RecordResult]  # the result, or the store's exception (NonceReplayed, sqlite3.Error)


EngineInput = Sample | Tick | WebhookInput
