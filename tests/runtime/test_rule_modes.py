"""Rule modes (docs/rollout.md) through the real store and dispatcher: `mode: shadow` firings are rendered as
the backend would send them and never sent (not even after the rule becomes live), never use the quota and
never suppress a live firing; `mode: approve` firings wait until `approve` (sent once) or `reject` (never)."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.config import DispatcherSection
from gateway.core.clock import ManualClock
from gateway.core.delivery import Delivery, NetworkInfo, OutboxItem, Outcome
from gateway.core.firings import Firing, TaskSpec
from gateway.engine.loader import RuleError, load_rules
from gateway.runtime.dispatcher import Dispatcher, month_key
from gateway.store import FiringStatus, Store

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class RenderingBackend:
    """A backend that counts against a quota, renders like a real one and records what it sends."""

    kind = "fake"
    counts_against_quota = True
    gateway_id = "gw"

    def __init__(self) -> None:
        self.sent: list[str] = []

    def build_request(self, item: OutboxItem) -> dict[str, Any]:
        if item.firing.task.equipment == "BROKEN":
            raise ValueError("no such equipment")
        return {"method": "POST", "path": "/tasks", "json": {"description": item.firing.task.description}}

    async def start(self) -> NetworkInfo:
        return NetworkInfo()

    async def deliver(self, item: OutboxItem) -> Delivery:
        self.sent.append(item.firing.key)
        return Delivery(Outcome.DONE, 201, request=self.build_request(item))

    async def aclose(self) -> None:
        pass


def firing(key: str, mode: str = "live", *, equipment: str = "EQ-1", while_open: str = "create") -> Firing:
    return Firing(
        key=key,
        rule_id=key.split(":")[0],
        fired_at=T0,
        task=TaskSpec(equipment=equipment, description=f"task {key}"),
        while_open=while_open,
        mode=mode,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def store(tmp_path: Path, clock: ManualClock):
    s = await Store.open(tmp_path, gateway_id="gw", clock=clock)
    yield s
    await s.close()


def dispatcher(
    store: Store, clock: ManualClock, backend: RenderingBackend, quota: int | None = 10
) -> Dispatcher:
    settings = DispatcherSection(
        concurrency=2, rate_limit=10_000, retry_initial=10, idle_poll=0.05, high_priority_reserve_ratio=0.0
    )
    return Dispatcher(store, backend, settings=settings, quota=quota, clock=clock, rng=random.Random(1))


async def drain(d: Dispatcher) -> None:
    for _ in range(10):
        if not await d.drain_once():
            return


def test_the_rule_schema_takes_mode_and_says_where_a_bad_one_is(tmp_path: Path) -> None:
    rule = "- id: {id}\n  when: {{signal: m.temp, above: 5}}\n  task: {{description: hot}}\n"
    good = tmp_path / "good.yaml"
    good.write_text(rule.format(id="r1") + "  mode: shadow\n" + rule.format(id="r2"))
    modes = {r.id: r.mode for r in load_rules(good).rules}
    assert modes == {"r1": "shadow", "r2": "live"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(rule.format(id="r1") + "  mode: later\n")
    with pytest.raises(RuleError) as info:
        load_rules(bad)
    message = str(info.value)
    assert f"{bad}:4:9" in message and "mode" in message, message


async def test_shadow_is_rendered_never_sent_not_even_after_the_rule_goes_live(store, clock) -> None:
    backend = RenderingBackend()
    d = dispatcher(store, clock, backend)
    (rec,) = await store.outbox.record_firings([firing("r1:1", "shadow")])
    assert rec.status is FiringStatus.SHADOW
    await drain(d)
    assert backend.sent == []
    (row,) = await store.outbox.list(statuses=["shadow"])
    assert row.last_request == {
        "method": "POST",
        "path": "/tasks",
        "json": {"description": "task r1:1"},
        "backend": "fake",
        "shadow": True,
    }
    assert row.rendered_at == T0
    # The rule becomes live: its new firings are sent, the old shadow one never is.
    await store.outbox.record_firings([firing("r1:2", "live")])
    clock.advance(3600)
    await drain(d)
    assert backend.sent == ["r1:2"]
    assert (await store.outbox.get(row.id)).status == "shadow"  # type: ignore[union-attr]
    assert await store.outbox.quota_used(month_key(T0, "UTC")) == 1  # the live one only
    counts = await store.outbox.counts()
    assert counts["shadow"] == 1 and counts["delivered"] == 1


async def test_shadow_uses_no_quota_even_when_the_quota_is_used_up(store, clock) -> None:
    backend = RenderingBackend()
    d = dispatcher(store, clock, backend, quota=1)
    await store.outbox.record_firings([firing(f"s:{i}", "shadow") for i in range(5)])
    await store.outbox.record_firings([firing("live:1"), firing("live:2")])
    await drain(d)
    assert backend.sent == ["live:1"]  # the quota of 1 is the live firing's, whatever the shadow ones did
    assert await store.outbox.quota_used(month_key(T0, "UTC")) == 1
    rows = await store.outbox.list(statuses=["shadow"])
    assert len(rows) == 5 and all(r.last_request is not None for r in rows)


async def test_a_shadow_task_the_backend_cannot_build_is_recorded_with_the_reason(store, clock) -> None:
    d = dispatcher(store, clock, RenderingBackend())
    await store.outbox.record_firings([firing("r1:1", "shadow", equipment="BROKEN")])
    await drain(d)
    (row,) = await store.outbox.list(statuses=["shadow"])
    assert row.last_request is None and row.last_error == "fake could not build the task: no such equipment"


async def test_shadow_firings_neither_suppress_live_ones_nor_are_suppressed(store) -> None:
    results = await store.outbox.record_firings(
        [
            firing("r:1", "shadow", while_open="suppress"),
            firing("r:2", "live", while_open="suppress"),
            firing("r:3", "shadow", while_open="suppress"),
            firing("r:4", "live", while_open="suppress"),
        ]
    )
    assert [r.status for r in results] == [
        FiringStatus.SHADOW,
        FiringStatus.QUEUED,  # the shadow r:1 does not hold it back
        FiringStatus.SHADOW,  # the live r:2, still open, does not hold a shadow firing back
        FiringStatus.SUPPRESSED,  # the live r:2 does
    ]
    assert results[3].suppressed_by == results[1].uuid


async def test_approve_waits_then_is_sent_once(store, clock) -> None:
    backend = RenderingBackend()
    d = dispatcher(store, clock, backend)
    (rec,) = await store.outbox.record_firings([firing("r:1", "approve")])
    assert rec.status is FiringStatus.AWAITING_APPROVAL
    clock.advance(7200)
    await drain(d)
    assert backend.sent == []
    assert await store.outbox.approval_queue() == (1, T0)
    (row,) = await store.outbox.list(statuses=["awaiting_approval"])
    assert await store.outbox.approve(row.id, by="test")
    assert not await store.outbox.approve(row.id)  # decided already
    assert not await store.outbox.reject(row.id)
    await drain(d)
    await drain(d)
    assert backend.sent == ["r:1"]
    done = await store.outbox.get(row.id)
    assert done is not None and done.status == "delivered" and done.decided_by == "test"
    assert await store.outbox.quota_used(month_key(T0, "UTC")) == 1
    assert await store.outbox.approval_queue() == (0, None)


async def test_rejected_is_never_sent_and_frees_while_open(store, clock) -> None:
    backend = RenderingBackend()
    d = dispatcher(store, clock, backend)
    first, second = await store.outbox.record_firings(
        [firing("r:1", "approve", while_open="suppress"), firing("r:2", "approve", while_open="suppress")]
    )
    assert second.status is FiringStatus.SUPPRESSED  # one waiting task per rule and equipment is enough
    (row,) = await store.outbox.list(statuses=["awaiting_approval"])
    assert await store.outbox.reject(row.id)
    assert not await store.outbox.approve(row.id)
    assert not await store.outbox.retry(row.id)  # a rejected row is not brought back by retry either
    await drain(d)
    assert backend.sent == []
    (third,) = await store.outbox.record_firings([firing("r:3", "approve", while_open="suppress")])
    assert third.status is FiringStatus.AWAITING_APPROVAL
    assert (await store.outbox.counts())["rejected"] == 1
    assert first.status is FiringStatus.AWAITING_APPROVAL


# ---------------------------------------------------------------- the CLI


def _config(tmp_path: Path) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "none.yaml").write_text("[]\n")
    path = tmp_path / "gateway.yaml"
    path.write_text("gateway:\n  id: gw\n  state_dir: ./state\n  rules: rules/\ncmms:\n  kind: dry_run\n")
    return path


def _seed(config: Path) -> list[int]:
    async def go() -> list[int]:
        store = await Store.open(config.parent / "state", gateway_id="gw", clock=ManualClock(T0))
        try:
            await store.outbox.record_firings(
                [firing("a:1", "approve"), firing("a:2", "approve"), firing("s:1", "shadow")]
            )
            await dispatcher(store, ManualClock(T0), RenderingBackend()).render_shadows()
            return [r.id for r in await store.outbox.list()]
        finally:
            await store.close()

    return asyncio.run(go())


def test_cli_approve_reject_and_list_shadow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    a1, a2, s1 = _seed(config)
    c = ["-c", str(config)]
    assert main(["outbox", "list", "--shadow", *c]) == 0
    out = capsys.readouterr().out
    assert f"{s1}  " in out and "rule s" in out and '"path": "/tasks"' in out and "a:1" not in out
    assert main(["outbox", "list", "--shadow", "--json", *c]) == 0
    (shadow,) = json.loads(capsys.readouterr().out)
    assert shadow["id"] == s1 and shadow["mode"] == "shadow" and shadow["request"]["method"] == "POST"
    assert main(["outbox", "show", str(a1), *c]) == 0
    assert f"mw-gateway outbox approve {a1}" in capsys.readouterr().out
    assert main(["outbox", "approve", str(a1), *c]) == 0
    assert f"outbox row {a1} approved" in capsys.readouterr().out
    assert main(["outbox", "reject", str(a2), *c]) == 0
    assert f"outbox row {a2} rejected" in capsys.readouterr().out
    assert main(["outbox", "approve", str(a2), *c]) == 1
    assert "it is rejected, not awaiting_approval" in capsys.readouterr().err
    assert main(["outbox", "reject", str(s1), *c]) == 1
    assert "it is shadow, not awaiting_approval" in capsys.readouterr().err
    assert main(["outbox", "approve", "999", *c]) == 1
    assert "cannot be approved: unknown" in capsys.readouterr().err
    assert main(["outbox", "approve", *c]) == 2
    assert main(["outbox", "list", "--json", *c]) == 0
    states = {r["id"]: (r["status"], r["decided_by"]) for r in json.loads(capsys.readouterr().out)}
    assert states == {a1: ("queued", "cli"), a2: ("rejected", "cli"), s1: ("shadow", None)}
