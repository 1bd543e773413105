"""Typed events and a tiny typed event bus: what the runtime tells the rest of the gateway.

    bus = EventBus()
    bus.subscribe(FiringRecorded, lambda e: print(e.firing.rule_id))
    bus.publish(FiringRecorded(firing, result))

Events are frozen dataclasses; a subscriber is called synchronously, in subscription order, for every event
of exactly the type it subscribed to. A subscriber that raises is logged and does not stop the others (a
metrics counter must never break a commit). `TaskClosed` (gateway/core/webhooks.py) is the fourth event: a
firing's task was completed or canceled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gateway.core.delivery import Delivery, OutboxItem
from gateway.core.firings import Firing

log = logging.getLogger(__name__)


class RecordedFiring(Protocol):
    """What the store made of a firing (gateway.store.Recorded): its uuid, status, and the firing whose still
    open task suppressed it."""

    @property
    def uuid(self) -> str: ...

    @property
    def status(self) -> Any: ...  # gateway.store.FiringStatus (a StrEnum)

    @property
    def suppressed_by(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class FiringRecorded:
    """A firing and the rule state that produced it were committed."""

    firing: Firing
    result: RecordedFiring


@dataclass(frozen=True, slots=True)
class DeliveryDone:
    """One delivery attempt ended (done, retry, dead or pause)."""

    item: OutboxItem
    delivery: Delivery


@dataclass(frozen=True, slots=True)
class WebhookAnswered:
    """A webhook request got its answer: `event` the event type ("unverified" when refused), `result`
    "accepted" or "http_<status>"."""

    event: str
    result: str


E = TypeVar("E")


class EventBus:
    def __init__(self) -> None:
        self._subscribers: dict[type, list[Callable[[Any], None]]] = {}

    def subscribe(self, kind: type[E], callback: Callable[[E], None]) -> Callable[[], None]:
        """Call `callback` for every published event of type `kind`. Returns the unsubscribe function."""
        callbacks = self._subscribers.setdefault(kind, [])
        callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in callbacks:
                callbacks.remove(callback)

        return unsubscribe

    def publish(self, event: object) -> None:
        for callback in tuple(self._subscribers.get(type(event), ())):
            try:
                callback(event)
            except Exception:
                log.exception("subscriber %r failed on %s", callback, type(event).__name__)
