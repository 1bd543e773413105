"""The runtime's side of the web ports (gateway/core/views.py): a StatusSnapshot of the running parts, and
the WebDeps the HTTP app is built from. Every entry reads the Gateway's CURRENT parts when called, so a
reload that swaps the backend, the sources or the config is seen by the next request."""

from __future__ import annotations

from typing import Any, Protocol

from gateway.config import Config
from gateway.core.clock import Clock
from gateway.core.events import EventBus
from gateway.core.ports import Backend, Source
from gateway.core.views import (
    DiskView,
    DispatcherView,
    ReloadOutcome,
    SourceView,
    StatusSnapshot,
    WebDeps,
)
from gateway.core.webhooks import Incoming, NonceUse, RecordResult
from gateway.engine.engine import Engine
from gateway.engine.loader import RuleSet
from gateway.runtime.disk import DiskStatus
from gateway.runtime.dispatcher import Dispatcher
from gateway.runtime.dispatcher_status import DispatcherState, DispatcherStatus
from gateway.runtime.firinglog import FiringLog
from gateway.runtime.housekeeping import Housekeeping
from gateway.runtime.pipeline import Pipeline
from gateway.runtime.supervisor import Supervisor
from gateway.store import Store


class Running(Protocol):
    """The parts of the running gateway (gateway/runtime/lifecycle.py: Gateway) these views read."""

    config: Config
    rules: RuleSet
    clock: Clock
    store: Store
    engine: Engine
    backend: Backend
    dispatcher: Dispatcher
    sources: dict[str, Source]
    pipeline: Pipeline
    housekeeping: Housekeeping
    firing_log: FiringLog
    supervisor: Supervisor
    events: EventBus
    started_at: float
    last_reload: ReloadOutcome | None

    @property
    def timezone(self) -> str: ...


class PipelineLedger:
    """The web side's ledger writer: webhooks are recorded by the engine consumer (one way in)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def record(self, incoming: Incoming, *, nonce: NonceUse | None = None) -> RecordResult:
        return await self.pipeline.record_webhook(incoming, nonce=nonce)


def dispatcher_view(status: DispatcherStatus) -> DispatcherView:
    return DispatcherView(
        state=status.state.value,
        paused=status.state is DispatcherState.PAUSED,
        running=status.state is DispatcherState.RUNNING,
        reason=status.reason,
        link_up=status.link_up,
        link_error=status.link_error,
        quota_month=status.quota_month,
        quota_used=status.quota_used,
        quota_limit=status.quota_limit,
        high_only=status.high_only,
        last_success_at=status.last_success_at,
        detail=status.as_dict(),
    )


def disk_view(disk: DiskStatus) -> DiskView:
    return DiskView(
        state_bytes=disk.state_bytes, free_bytes=disk.free_bytes, problem=disk.problem, detail=disk.as_dict()
    )


def _fleet_status(gw: Running) -> dict[str, Any] | None:
    member = getattr(gw, "fleet", None)  # gateway.fleet.member.FleetMember, when `fleet:` is set
    return None if member is None else dict(member.status())


def snapshot(gw: Running) -> StatusSnapshot:
    now = gw.clock.now()
    sources = tuple(
        SourceView(
            name=name,
            link=s.stats.link,
            reads=s.stats.reads,
            errors=s.stats.errors,
            reconnects=s.stats.reconnects,
            samples=s.stats.samples,
            last_error=s.stats.last_error,
            last_sample_ts=s.stats.last_sample_ts,
        )
        for name, s in gw.sources.items()
    )
    engine = gw.engine
    evaluations: dict[str, int] = {str(rule.id): 0 for rule in gw.rules.rules}
    evaluations.update(engine.evaluations())
    rules: list[dict[str, Any]] = engine.rule_status(now)
    return StatusSnapshot(
        now=now,
        gateway_id=gw.config.gateway.id,
        started_at=gw.started_at,
        timezone=gw.timezone,
        cmms=gw.backend.kind,
        samples_in=gw.pipeline.samples_in,
        firings=gw.pipeline.firings_out,
        last_reload=gw.last_reload,
        dispatcher=dispatcher_view(gw.dispatcher.status),
        sources=sources,
        signals=dict(engine.last_values),
        rules=rules,
        evaluations=evaluations,
        recent_firings=tuple(gw.firing_log.recent),
        last_firing_by_rule=dict(gw.firing_log.by_rule),
        disk=disk_view(gw.housekeeping.current_disk()),
        store_error=gw.housekeeping.store_error,
        failed_tasks=dict(gw.supervisor.failed),
        fleet=_fleet_status(gw),
        refused=engine.refused(),
    )


def web_deps(gw: Running) -> WebDeps:
    from gateway.reconcile import build_report, linked_sources
    from gateway.runtime.disk import check_disk

    store = gw.store

    async def latest_webhooks(limit: int) -> list[dict[str, Any]]:
        return await store.ledger.latest_events(limit=limit)

    async def reconciliation(since: float | None, rule: str | None) -> dict[str, Any]:
        return await build_report(store, since=since, rule=rule, linked=linked_sources(gw.config.http))

    async def decide(outbox_id: int, approve: bool, by: str) -> tuple[bool, str | None]:
        act = store.outbox.approve if approve else store.outbox.reject
        changed = await act(outbox_id, by=by)
        if changed and approve:
            gw.dispatcher.wake()
        row = await store.outbox.get(outbox_id)
        return changed, None if row is None else str(row.status)

    return WebDeps(
        snapshot=lambda: snapshot(gw),
        outbox=store.outbox,
        latest_webhooks=latest_webhooks,
        reconciliation=reconciliation,
        ledger=PipelineLedger(gw.pipeline),
        publish_input=gw.pipeline.publish,
        http=lambda: gw.config.http,
        configured_timezone=lambda: gw.config.gateway.timezone,
        events=gw.events,
        disk=lambda: disk_view(check_disk(gw.config.state_dir)),
        clock=gw.clock,
        decide=decide,
    )
