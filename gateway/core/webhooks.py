"""Webhook vocabulary: what a verified webhook says, as typed operations for the ledger.

Readers (gateway/web/readers_*.py) produce these; the ledger (gateway/store/ledger.py) applies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TASK_STATES = ("scheduled", "started", "completed", "canceled")
STATE_RANK = {"unknown": 0, "scheduled": 1, "started": 2, "completed": 3, "canceled": 3}
TERMINAL_STATES = ("completed", "canceled")


@dataclass(frozen=True, slots=True)
class TaskUpdate:
    """A webhook said something about a task. state None: the task is only mentioned (e.g. an activity)."""

    task_id: str
    state: str | None = None
    at: float | None = None
    by: str | None = None
    firing_uuid: str | None = None
    rule_id: str | None = None
    gateway: str | None = None
    equipment: Any = None


@dataclass(frozen=True, slots=True)
class ActivityAdd:
    task_id: str
    activity_id: str
    description: str | None = None
    minutes: float | None = None
    at: float | None = None
    reporter: str | None = None


@dataclass(frozen=True, slots=True)
class Movement:
    """A spare part consumed on a task (kind "consumed"), or such a consumption canceled ("canceled").
    quantity is positive in both cases; the ledger stores canceled rows negative."""

    kind: str
    article: str
    quantity: float
    task_id: str | None = None
    spare_part_id: str | None = None
    name: str | None = None
    location: str | None = None
    at: float | None = None


@dataclass(frozen=True, slots=True)
class StockUpdate:
    """The current stock of a spare part as the CMMS reported it (quantity None: unknown)."""

    article: str
    event: str
    quantity: float | None = None
    threshold: float | None = None
    spare_part_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class LedgerOps:
    tasks: tuple[TaskUpdate, ...] = ()
    activities: tuple[ActivityAdd, ...] = ()
    movements: tuple[Movement, ...] = ()
    stock: tuple[StockUpdate, ...] = ()


@dataclass(frozen=True, slots=True)
class Incoming:
    """One received webhook, verified and parsed."""

    source: str  # mobility_work | servicemobility
    event: str
    dedupe_key: str
    body: bytes  # verbatim
    task_id: str | None = None
    known: bool = True
    ops: LedgerOps = field(default_factory=LedgerOps)


@dataclass(frozen=True, slots=True)
class NonceUse:
    nonce: str
    body_hash: str
    expires_at: float


class NonceReplayed(Exception):
    """The nonce was already used with a different body inside the tolerance window."""


@dataclass(frozen=True, slots=True)
class TaskClosed:
    """A firing's work is over (completed or canceled): for the engine's `rearm: on_completion`."""

    rule_id: str
    firing_uuid: str
    task_id: str
    outcome: str  # completed | canceled
    at: float  # when the gateway learned it


@dataclass(frozen=True, slots=True)
class RecordResult:
    stored: bool  # False: a duplicate delivery (same dedupe key, or the very same signed request again)
    event_id: int | None = None
    closed: tuple[TaskClosed, ...] = ()
    stock: tuple[StockUpdate, ...] = ()
