"""Outbox items and delivery outcomes: what the dispatcher hands a backend and what comes back.

The dispatcher knows nothing about any CMMS; a backend knows nothing about the outbox. Each `deliver()` call
returns a `Delivery`, whose `outcome` tells the dispatcher what to do with the outbox row.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from gateway.core.firings import Firing


class Outcome(enum.StrEnum):
    DONE = "done"  # the CMMS accepted the task (2xx)
    RETRY = "retry"  # network error, timeout, 5xx, 429: try again later (retry_after_s when the server said)
    DEAD = "dead"  # the CMMS rejected this request (4xx): park it as a dead letter with the server's reasons
    PAUSE = "pause"  # credentials or plan problem (401/403): stop sending everything, keep it all queued


@dataclass
class Delivery:
    """The result of one delivery attempt."""

    outcome: Outcome
    status_code: int | None = None
    error: str = ""  # one line for people: "HTTP 400: The request payload is not valid."
    details: Any = None  # the server's error body, verbatim (MW: extended_message with property_errors)
    request: dict[str, Any] | None = None  # what was sent (method, path, json), secrets removed
    retry_after_s: float | None = None
    remote_id: str | None = None  # the CMMS's id for the created object, when the response gives one
    elapsed_s: float = 0.0
    maybe_committed: bool = False  # RETRY after the request may have reached the server (duplicate possible)


@dataclass(frozen=True)
class OutboxItem:
    """What the dispatcher hands a backend: the firing plus the identity the store gave it."""

    outbox_id: int
    firing_uuid: str  # goes into the task metadata as "firing"
    firing: Firing
    attempts: int  # attempts made before this one
    claim: str | None = None  # the store's token for this attempt once claimed (None: not claimed)
    maybe_committed: int = 0  # earlier attempts of this row that may have reached the CMMS (store's count)


@dataclass
class NetworkInfo:
    """What the backend learned about the CMMS account at start-up."""

    timezone: str | None = None
    currency: str | None = None
    network_id: str | None = None
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
