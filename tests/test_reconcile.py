"""Reconciliation rows, discrepancies, totals, filters and output formats, from a real store."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.core.clock import ManualClock
from gateway.core.firings import Firing, SparePart, TaskSpec
from gateway.core.webhooks import Incoming, LedgerOps, Movement, TaskUpdate
from gateway.reconcile import build_report, cmd_reconcile, parse_since, render
from gateway.store import Store

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def firing(
    key: str,
    rule: str,
    *,
    at: float,
    parts: tuple[SparePart, ...] = (),
    equipment: str = "EQ-1",
    while_open: str = "suppress",
) -> Firing:
    return Firing(
        key=key,
        rule_id=rule,
        fired_at=at,
        while_open=while_open,
        task=TaskSpec(equipment=equipment, description="work", assignees=(3,), spare_parts=parts),
    )


class Events:
    def __init__(self, store: Store) -> None:
        self.store, self.n = store, 0

    async def task(self, task_id: str, state: str, firing_uuid: str | None = None, at: float = T0) -> None:
        self.n += 1
        await self.store.ledger.record(
            Incoming(
                "mobility_work",
                state,
                f"e{self.n}",
                b"{}",
                task_id,
                ops=LedgerOps(tasks=(TaskUpdate(task_id, state, at, "Ann Tech", firing_uuid),)),
            )
        )

    async def part(self, task_id: str, article: str, qty: float, kind: str = "consumed") -> None:
        self.n += 1
        await self.store.ledger.record(
            Incoming(
                "mobility_work",
                kind,
                f"e{self.n}",
                b"{}",
                task_id,
                ops=LedgerOps(movements=(Movement(kind, article, qty, task_id),)),
            )
        )


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(tmp_path / "state", gateway_id="gw", clock=ManualClock(T0 + 86400))
    yield s
    await s.close()


async def populated(store: Store) -> dict[str, str]:
    lube = (SparePart("LUBE-5L", 1),)
    recs = await store.outbox.record_firings(
        [
            firing("lube:1", "lube", at=T0, parts=lube),  # completed, right part plus one extra
            firing("lube:2", "lube", at=T0 + 10, parts=lube, equipment="EQ-2"),  # never scheduled
            firing("lube:3", "lube", at=T0 + 20, parts=lube),  # suppressed: lube:1 still queued/open
            firing(
                "filter:1", "filter", at=T0 + 30, parts=(SparePart("FILTER-10", 2),)
            ),  # duplicate, wrong qty
            firing(
                "belt:1", "belt", at=T0 + 3 * 86400, parts=(SparePart("BELT-A", 1),)
            ),  # completed, no parts
        ]
    )
    uuids = {r.key: r.uuid for r in recs}
    ev = Events(store)
    await ev.part("t1", "LUBE-5L", 1)  # before the scheduled webhook: bound later
    await ev.task("t1", "scheduled", uuids["lube:1"], at=T0 + 100)
    await ev.task("t1", "started", None, at=T0 + 200)
    await ev.part("t1", "SEAL-9", 2)
    await ev.part("t1", "SEAL-9", 2, "canceled")
    await ev.part("t1", "GREASE", 1)
    await ev.task("t1", "completed", uuids["lube:1"], at=T0 + 300)
    await ev.task("t2", "scheduled", uuids["filter:1"])
    await ev.task("t3", "scheduled", uuids["filter:1"])
    await ev.part("t2", "FILTER-10", 3)
    await ev.task("t4", "scheduled", uuids["belt:1"])
    await ev.task("t4", "completed", None)
    return uuids


async def test_rows_and_discrepancies(store: Store) -> None:
    uuids = await populated(store)
    report = await build_report(store)
    rows = {r["key"]: r for r in report["rows"]}
    assert [r["key"] for r in report["rows"]] == ["lube:1", "lube:2", "lube:3", "filter:1", "belt:1"]

    r = rows["lube:1"]
    assert (r["rule"], r["equipment"], r["task_id"], r["task_state"]) == ("lube", "EQ-1", "t1", "completed")
    assert (r["fired_at"], r["scheduled_at"], r["completed_by"]) == (
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T00:01:40+00:00",
        "Ann Tech",
    )
    assert r["expected"] == {"LUBE-5L": 1}
    assert r["consumed"] == {"GREASE": 1, "LUBE-5L": 1}  # SEAL-9 consumed then canceled: nets to nothing
    assert [(d["code"], d.get("article")) for d in r["discrepancies"]] == [("unexpected_part", "GREASE")]

    assert [d["code"] for d in rows["lube:2"]["discrepancies"]] == ["never_scheduled"]
    assert rows["lube:3"]["status"] == "suppressed" and rows["lube:3"]["task_state"] == "suppressed"
    assert rows["lube:3"]["suppressed_by"] == uuids["lube:1"] and rows["lube:3"]["discrepancies"] == []

    f = rows["filter:1"]
    assert f["tasks"] == ["t2", "t3"] and f["task_id"] == "t2"
    assert [(d["code"], d.get("consumed")) for d in f["discrepancies"]] == [
        ("duplicate_task", None),
        ("quantity_difference", 3),
    ]

    assert [d["code"] for d in rows["belt:1"]["discrepancies"]] == ["completed_without_expected_parts"]

    totals = report["totals"]
    assert totals["rules"]["lube"] == {
        "firings": 3,
        "suppressed": 1,
        "tasks": 1,
        "open": 0,
        "completed": 1,
        "canceled": 0,
        "never_scheduled": 1,
        "with_discrepancies": 2,
    }
    assert totals["spare_parts"] == {
        "BELT-A": {"expected": 1, "consumed": 0, "difference": -1},
        "FILTER-10": {"expected": 2, "consumed": 3, "difference": 1},
        "GREASE": {"expected": 0, "consumed": 1, "difference": 1},
        "LUBE-5L": {"expected": 2, "consumed": 1, "difference": -1},
    }


async def test_filters(store: Store) -> None:
    await populated(store)
    assert [r["key"] for r in (await build_report(store, rule="filter"))["rows"]] == ["filter:1"]
    since = parse_since("2026-01-02")
    assert [r["key"] for r in (await build_report(store, since=since))["rows"]] == ["belt:1"]
    assert parse_since("2026-01-02", "Europe/Paris") == since - 3600
    with pytest.raises(ValueError):
        parse_since("yesterday")


async def test_formats(store: Store) -> None:
    await populated(store)
    report = await build_report(store)
    assert json.loads(render(report, "json")) == report
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert [r["key"] for r in rows] == ["lube:1", "lube:2", "lube:3", "filter:1", "belt:1"]
    assert rows[0]["consumed"] == "GREASE x1; LUBE-5L x1"
    assert rows[0]["discrepancies"] == "GREASE x1 consumed, not expected"
    table = render(report, "table")
    assert "unexpected_part" in table and "PER SPARE PART" in table and "FILTER-10: 2 / 3 / 1" in table


async def test_cli_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "gateway.yaml").write_text(
        "gateway:\n  id: gw\n  state_dir: ./state\n  rules: rules/\ncmms:\n  kind: dry_run\n"
    )
    config = load_config(tmp_path / "gateway.yaml")
    store = await Store.open(config.state_dir, gateway_id="gw", clock=ManualClock(T0 + 86400))
    await populated(store)
    await store.close()
    assert await cmd_reconcile(config, fmt="json", rule="belt") == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["key"] for r in out["rows"]] == ["belt:1"]
    assert await cmd_reconcile(config, fmt="json", since="not a date") == 2
    assert "--since" in capsys.readouterr().err


async def test_an_attempt_whose_answer_was_lost_is_a_possible_duplicate(store: Store) -> None:
    from gateway.core.delivery import Delivery, Outcome

    (rec,) = await store.outbox.record_firings([firing("oil:1", "oil", at=T0)])
    (item,) = await store.outbox.due(now=T0 + 86400, limit=1)
    lost = Delivery(Outcome.RETRY, error="read timeout", maybe_committed=True)
    await store.outbox.mark_retry(item, lost, next_attempt_at=T0 + 86400)
    (item,) = await store.outbox.due(now=T0 + 86400, limit=1)
    await store.outbox.mark_delivered(
        item, Delivery(Outcome.DONE, 201), backend="mobility_work", quota_month=None
    )
    events = Events(store)
    await events.task("t9", "scheduled", rec.uuid)

    (row,) = (await build_report(store))["rows"]
    assert [p["code"] for p in row["discrepancies"]] == ["possible_duplicate"]
    assert row["discrepancies"][0]["attempts"] == 1

    # When the second task shows up, it is a proven duplicate rather than a possible one.
    await events.task("t10", "scheduled", rec.uuid)
    (row,) = (await build_report(store))["rows"]
    assert [p["code"] for p in row["discrepancies"]] == ["duplicate_task"]


async def test_a_delivered_firing_awaits_its_webhook_before_it_is_never_scheduled(tmp_path: Path) -> None:
    from gateway.core.delivery import Delivery, Outcome
    from gateway.reconcile import SCHEDULED_GRACE_S

    clock = ManualClock(T0)
    s = await Store.open(tmp_path / "grace", gateway_id="gw", clock=clock)
    try:
        await s.outbox.record_firings([firing("oil:1", "oil", at=T0)])
        (item,) = await s.outbox.due(now=T0, limit=1)
        await s.outbox.mark_delivered(
            item, Delivery(Outcome.DONE, 201), backend="mobility_work", quota_month=None
        )
        clock.advance(SCHEDULED_GRACE_S - 1)
        (row,) = (await build_report(s))["rows"]
        assert (row["task_state"], row["discrepancies"]) == ("awaiting_webhook", [])
        clock.advance(2)
        (row,) = (await build_report(s))["rows"]
        assert [p["code"] for p in row["discrepancies"]] == ["never_scheduled"]
    finally:
        await s.close()


async def test_another_sources_consumption_joins_a_task_only_when_linked(store: Store) -> None:
    """Issue 18.9: a ServiceMobility work order numbered like a Mobility Work task put 999 x LUBE-5L on it."""
    recs = await store.outbox.record_firings(
        [firing("lube:1", "lube", at=T0, parts=(SparePart("LUBE-5L", 1),))]
    )
    ev = Events(store)
    await ev.task("t1", "scheduled", recs[0].uuid, at=T0 + 100)
    await ev.part("t1", "LUBE-5L", 1)
    await store.ledger.record(
        Incoming(
            "servicemobility",
            "InventoryUsage",
            "sm-1",
            b"{}",
            "t1",
            ops=LedgerOps(movements=(Movement("consumed", "LUBE-5L", 999, "t1"),)),
        )
    )
    apart = (await build_report(store))["rows"][0]
    assert apart["consumed"] == {"LUBE-5L": 1} and apart["discrepancies"] == []
    linked = (await build_report(store, linked=("servicemobility",)))["rows"][0]
    assert linked["consumed"] == {"LUBE-5L": 1000}
    assert [d["code"] for d in linked["discrepancies"]] == ["quantity_difference"]


async def test_the_report_decodes_and_reconciles_off_the_event_loop(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status page builds this report every few seconds over thousands of firings (issue 13, item 11):
    the JSON decoding and the per-firing reconciliation run in a worker thread, not on the event loop."""
    import threading

    import gateway.reconcile as reconcile_module
    import gateway.store.ledger as ledger_module

    loop_thread = threading.get_ident()
    seen: dict[str, set[int]] = {"decode": set(), "reconcile": set()}
    decode, reconcile_one = ledger_module._firing_rows, reconcile_module.reconcile_firing

    def spy_decode(rows):  # type: ignore[no-untyped-def]
        seen["decode"].add(threading.get_ident())
        return decode(rows)

    def spy_reconcile(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen["reconcile"].add(threading.get_ident())
        return reconcile_one(*args, **kwargs)

    monkeypatch.setattr(ledger_module, "_firing_rows", spy_decode)
    monkeypatch.setattr(reconcile_module, "reconcile_firing", spy_reconcile)
    await populated(store)
    report = await build_report(store)
    assert len(report["rows"]) == 5
    assert seen["decode"] and loop_thread not in seen["decode"]
    assert seen["reconcile"] and loop_thread not in seen["reconcile"]


async def test_shadow_awaiting_and_rejected_firings_are_not_discrepancies(store: Store) -> None:
    """Rule modes (docs/rollout.md): a firing never meant to be sent (yet) has no task and that is no problem;
    a task that does appear for one is still checked (here: two tasks)."""
    import dataclasses

    base = [
        firing("s:1", "s", at=T0),
        firing("a:1", "a", at=T0),
        firing("r:1", "r", at=T0),
        firing("d:1", "d", at=T0),
    ]
    modes = {"s": "shadow", "a": "approve", "r": "approve", "d": "shadow"}
    recorded = await store.outbox.record_firings(
        [dataclasses.replace(f, mode=modes[f.rule_id]) for f in base]
    )
    rows = {r.rule_id: r.id for r in await store.outbox.list()}
    assert await store.outbox.reject(rows["r"])
    events = Events(store)
    for task_id in ("t8", "t9"):
        await events.task(task_id, "TaskWasScheduled", recorded[3].uuid)
    report = {r["key"]: r for r in (await build_report(store))["rows"]}
    assert {k: (r["task_state"], r["discrepancies"]) for k, r in report.items() if k != "d:1"} == {
        "s:1": ("shadow", []),
        "a:1": ("awaiting_approval", []),
        "r:1": ("rejected", []),
    }
    assert [d["code"] for d in report["d:1"]["discrepancies"]] == ["duplicate_task"]
