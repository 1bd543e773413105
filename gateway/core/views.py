"""What the web side may read and write: typed, late-bound views of the running gateway.

The runtime builds a `WebDeps` (gateway/runtime/views.py); `gateway.web.server.build_app(deps)` takes nothing
else, so the web side never sees the runtime's objects and a reload that swaps them is seen at once (every
entry is a function, called per request). Tests build a WebDeps over a fake snapshot: no gateway, no socket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.core.clock import Clock
from gateway.core.events import EventBus
from gateway.core.inputs import EngineInput
from gateway.core.samples import LinkState, Sample
from gateway.core.webhooks import Incoming, NonceUse, RecordResult


@dataclass(frozen=True, slots=True)
class SourceView:
    name: str
    link: LinkState
    reads: int
    errors: int
    reconnects: int
    samples: int
    last_error: str
    last_sample_ts: float | None


@dataclass(frozen=True, slots=True)
class DispatcherView:
    state: str  # running | paused | quota_held
    paused: bool
    running: bool
    reason: str
    link_up: bool
    link_error: str
    quota_month: str
    quota_used: int
    quota_limit: int | None
    high_only: bool
    last_success_at: float | None
    detail: Mapping[str, Any] = field(default_factory=dict)  # everything, as JSON for /api/status


@dataclass(frozen=True, slots=True)
class DiskView:
    state_bytes: int
    free_bytes: int
    problem: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    at: float
    ok: bool
    problems: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "ok": self.ok, "problems": list(self.problems)}


@dataclass(frozen=True, slots=True)
class FiringEntry:
    """One line of the "latest firings" list."""

    rule: str
    key: str
    firing: str
    fired_at: float
    status: str  # queued | suppressed
    suppressed_by: str | None
    description: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "key": self.key,
            "firing": self.firing,
            "fired_at": self.fired_at,
            "status": self.status,
            "suppressed_by": self.suppressed_by,
            "description": self.description,
        }


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """The running gateway at one instant, without the database (read separately through OutboxReader)."""

    now: float
    gateway_id: str
    started_at: float
    timezone: str
    cmms: str
    samples_in: int
    firings: int
    last_reload: ReloadOutcome | None
    dispatcher: DispatcherView
    sources: tuple[SourceView, ...]
    signals: Mapping[str, Sample]
    rules: Sequence[Mapping[str, Any]]  # the engine's per-rule status (engine.rule_status)
    evaluations: Mapping[str, int]  # per rule id, 0 for rules never evaluated
    recent_firings: tuple[FiringEntry, ...]
    last_firing_by_rule: Mapping[str, FiringEntry]
    disk: DiskView | None
    store_error: str | None
    failed_tasks: Mapping[str, str] = field(default_factory=dict)  # task name -> its error (supervisor)
    fleet: Mapping[str, Any] | None = None  # gateway.fleet.member.FleetMember.status() when `fleet:` is set
    refused: Mapping[str, int] = field(default_factory=dict)  # per signal: values refused by the engine


class OutboxReader(Protocol):
    async def counts(self) -> dict[str, int]: ...

    async def approval_queue(self) -> tuple[int, float | None]:
        """(rows awaiting approval, created_at of the oldest)."""
        ...

    async def list(self, *, statuses: Sequence[str] | None = None, limit: int = 200) -> Any:
        """list[gateway.store.OutboxRow], newest first."""
        ...


class LedgerWriter(Protocol):
    async def record(self, incoming: Incoming, *, nonce: NonceUse | None = None) -> RecordResult: ...


@dataclass(frozen=True)
class WebDeps:
    """Everything the web side gets. Each callable is asked again per request (late-bound)."""

    snapshot: Callable[[], StatusSnapshot]
    outbox: OutboxReader
    latest_webhooks: Callable[[int], Awaitable[list[dict[str, Any]]]]
    reconciliation: Callable[[float | None, str | None], Awaitable[dict[str, Any]]]  # (since, rule)
    ledger: LedgerWriter
    publish_input: Callable[[EngineInput], None]
    http: Callable[[], Any]  # the current gateway.config.HttpSection
    configured_timezone: Callable[[], str | None]  # gateway.timezone of gateway.yaml (dates in queries)
    events: EventBus
    disk: Callable[[], DiskView]  # measured now (a scrape, a failing disk re-measured on every look)
    clock: Clock
    # (outbox id, approve?, who) -> (changed?, the row's state now or None when unknown): the status page's
    # approve/reject buttons (docs/rollout.md); None: no buttons.
    decide: Callable[[int, bool, str], Awaitable[tuple[bool, str | None]]] | None = None
