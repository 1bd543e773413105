"""A fake StatusSnapshot and WebDeps: the web side tested with no gateway started and no socket opened."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from gateway.config import HttpSection
from gateway.core.clock import ManualClock
from gateway.core.events import EventBus
from gateway.core.inputs import EngineInput
from gateway.core.samples import LinkState, Quality, Sample
from gateway.core.views import (
    DiskView,
    DispatcherView,
    FiringEntry,
    SourceView,
    StatusSnapshot,
    WebDeps,
)
from gateway.core.webhooks import Incoming, NonceUse, RecordResult
from gateway.runtime.disk import DiskStatus
from gateway.web.server import build_app

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DISK = DiskStatus(
    path="/var/lib/mw-gateway",
    state_bytes=4096,
    free_bytes=10**9,
    total_bytes=10**10,
    min_free_bytes=64 * 1024 * 1024,
    writable=True,
)


def dispatcher(**over: Any) -> DispatcherView:
    base: dict[str, Any] = {
        "state": "running",
        "paused": False,
        "running": True,
        "reason": "",
        "link_up": True,
        "link_error": "",
        "quota_month": "2026-01",
        "quota_used": 3,
        "quota_limit": 500,
        "high_only": False,
        "last_success_at": NOW - 10,
        "detail": {"state": "running", "attempts": {"done": 3}},
    }
    base.update(over)
    if "state" in over:
        base["paused"], base["running"] = over["state"] == "paused", over["state"] == "running"
    return DispatcherView(**base)


def source(name: str = "press1", link: LinkState = LinkState.UP, **over: Any) -> SourceView:
    base: dict[str, Any] = {
        "name": name,
        "link": link,
        "reads": 40,
        "errors": 1,
        "reconnects": 0,
        "samples": 120,
        "last_error": "",
        "last_sample_ts": NOW - 2,
    }
    base.update(over)
    return SourceView(**base)


FIRING = FiringEntry(
    rule="press1-lubrication",
    key="press1-lubrication:1000",
    firing="0f3e5d1c-aaaa-bbbb-cccc-000000000001",
    fired_at=NOW - 60,
    status="queued",
    suppressed_by=None,
    description="Lubricate press 1 at 1000 strokes",
)


def snapshot(**over: Any) -> StatusSnapshot:
    base: dict[str, Any] = {
        "now": NOW,
        "gateway_id": "gw-fake",
        "started_at": NOW - 3600,
        "timezone": "Europe/Paris",
        "cmms": "mobility_work",
        "samples_in": 12345,
        "firings": 1,
        "last_reload": None,
        "dispatcher": dispatcher(),
        "sources": (source(),),
        "signals": {"press1.strokes": Sample("press1.strokes", 1010, NOW - 2, Quality.GOOD)},
        "rules": ({"id": "press1-lubrication", "trigger": "counter", "state": "idle"},),
        "evaluations": {"press1-lubrication": 120},
        "recent_firings": (FIRING,),
        "last_firing_by_rule": {FIRING.rule: FIRING},
        "disk": DiskView(state_bytes=4096, free_bytes=10**9, problem="", detail=DISK.as_dict()),
        "store_error": None,
        "failed_tasks": {},
    }
    base.update(over)
    return StatusSnapshot(**base)


class FakeOutbox:
    def __init__(self, counts: Mapping[str, int] | None = None, rows: Sequence[Any] = ()) -> None:
        self._counts = dict(counts or {"queued": 0, "retrying": 0, "delivered": 1, "dead": 0, "dropped": 0})
        self.rows = list(rows)

    async def counts(self) -> dict[str, int]:
        return dict(self._counts)

    async def approval_queue(self) -> tuple[int, float | None]:
        return 0, None

    async def list(self, *, statuses: Sequence[str] | None = None, limit: int = 200) -> Any:
        return self.rows[:limit]


class FakeLedger:
    def __init__(self) -> None:
        self.recorded: list[Incoming] = []

    async def record(self, incoming: Incoming, *, nonce: NonceUse | None = None) -> RecordResult:
        self.recorded.append(incoming)
        return RecordResult(stored=True, event_id=len(self.recorded))


@dataclasses.dataclass
class Fake:
    """Mutable holders behind a WebDeps: change `snap` and the next request sees it (late binding)."""

    snap: StatusSnapshot
    outbox: FakeOutbox
    ledger: FakeLedger
    http: HttpSection
    events: EventBus
    published: list[EngineInput]

    def deps(self) -> WebDeps:
        async def latest_webhooks(limit: int) -> list[dict[str, Any]]:
            return [{"id": 1, "source": "mobility_work", "event": "TaskWasScheduled"}][:limit]

        async def reconciliation(since: float | None, rule: str | None) -> dict[str, Any]:
            return {"rows": []}

        return WebDeps(
            snapshot=lambda: self.snap,
            outbox=self.outbox,
            latest_webhooks=latest_webhooks,
            reconciliation=reconciliation,
            ledger=self.ledger,
            publish_input=self.published.append,
            http=lambda: self.http,
            configured_timezone=lambda: None,
            events=self.events,
            disk=lambda: self.snap.disk or DiskView(0, 0, ""),
            clock=ManualClock(NOW),
        )

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=build_app(self.deps()))
        return httpx.AsyncClient(transport=transport, base_url="http://gateway.test")


def fake(**over: Any) -> Fake:
    return Fake(
        snap=snapshot(**over),
        outbox=FakeOutbox(),
        ledger=FakeLedger(),
        http=HttpSection(),
        events=EventBus(),
        published=[],
    )
