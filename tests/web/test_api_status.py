"""/api/status (and the status page) over a fake snapshot: no gateway started, no socket."""

from __future__ import annotations

from gateway.core.firings import Firing, TaskSpec
from gateway.core.views import FiringEntry, ReloadOutcome
from gateway.store import OutboxRow, OutboxStatus
from tests.web.fakes import FIRING, NOW, FakeOutbox, dispatcher, fake


def _row(**over: object) -> OutboxRow:
    firing = Firing("r:1", "r", NOW - 100, TaskSpec("EQ-1", "Check the press"))
    base: dict[str, object] = {
        "id": 7,
        "firing_uuid": "u-7",
        "firing_key": "r:1",
        "rule_id": "r",
        "priority": "normal",
        "status": OutboxStatus.QUEUED,
        "attempts": 2,
        "next_attempt_at": NOW + 30,
        "created_at": NOW - 100,
        "updated_at": NOW - 5,
        "delivered_at": None,
        "delivered_by": None,
        "last_status_code": 503,
        "last_error": "HTTP 503",
        "last_details": None,
        "last_request": None,
        "remote_id": None,
        "firing": firing,
    }
    base.update(over)
    return OutboxRow(**base)  # type: ignore[arg-type]


async def test_api_status_is_the_snapshot_as_json():
    suppressed = FiringEntry(
        rule="press1-lubrication",
        key="press1-lubrication:2000",
        firing="u-2",
        fired_at=NOW - 5,
        status="suppressed",
        suppressed_by=FIRING.firing,
        description="Lubricate press 1 at 2000 strokes",
    )
    f = fake(
        last_reload=ReloadOutcome(NOW - 30, False, ("rules/a.yaml:3:5: unknown signal",)),
        recent_firings=(suppressed, FIRING),
        last_firing_by_rule={"press1-lubrication": suppressed},
        dispatcher=dispatcher(quota_used=9, high_only=True),
    )
    f.outbox = FakeOutbox(
        {"queued": 1, "retrying": 1, "delivered": 3, "dead": 1, "dropped": 0},
        rows=[_row(), _row(id=8, status=OutboxStatus.DEAD, attempts=1, last_error="HTTP 400")],
    )
    async with f.client() as client:
        response = await client.get("/api/status")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["now"] == NOW
    assert body["gateway"] == {
        "id": "gw-fake",
        "started_at": NOW - 3600,
        "uptime_s": 3600.0,
        "timezone": "Europe/Paris",
        "cmms": "mobility_work",
        "samples_in": 12345,
        "firings": 1,
        "last_reload": {"at": NOW - 30, "ok": False, "problems": ["rules/a.yaml:3:5: unknown signal"]},
    }
    assert body["health"] == {"status": "ok", "reasons": []}
    assert body["sources"] == [
        {
            "name": "press1",
            "link": "up",
            "reads": 40,
            "errors": 1,
            "reconnects": 0,
            "samples": 120,
            "last_error": "",
            "last_sample_age_s": 2.0,
        }
    ]
    assert body["signals"] == [
        {
            "signal": "press1.strokes",
            "value": 1010,
            "quality": "good",
            "ts": NOW - 2,
            "age_s": 2.0,
            "reason": "",
            "refused": 0,
        }
    ]
    assert body["rules"] == [
        {"id": "press1-lubrication", "trigger": "counter", "state": "idle", "suppressed_by": FIRING.firing}
    ]
    assert [(x["key"], x["status"]) for x in body["firings"]] == [
        ("press1-lubrication:2000", "suppressed"),
        ("press1-lubrication:1000", "queued"),
    ]
    assert [(r["id"], r["state"], r["next_attempt_at"]) for r in body["outbox"]["rows"]] == [
        (7, "retrying", NOW + 30),
        (8, "dead", None),
    ]
    assert body["outbox"]["counts"]["delivered"] == 3
    assert body["outbox"]["dispatcher"] == {"state": "running", "attempts": {"done": 3}}
    assert body["quota"] == {"month": "2026-01", "used": 9, "limit": 500, "high_only": True}
    assert body["webhooks"] == [{"id": 1, "source": "mobility_work", "event": "TaskWasScheduled"}]
    assert body["discrepancies"] == []
    assert body["disk"]["state_bytes"] == 4096 and body["disk"]["nearly_full"] is False


async def test_the_status_page_renders_the_same_snapshot():
    async with fake().client() as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert "<title>mw-gateway gw-fake</title>" in response.text
    assert "Lubricate press 1 at 1000 strokes" in response.text


async def test_each_signal_shows_how_many_of_its_values_the_engine_refused():
    from gateway.core.samples import Quality, Sample

    temp = Sample("press1.temp", None, NOW - 1, Quality.BAD, "value refused: NaN")
    f = fake(
        signals={"press1.temp": temp, "press1.strokes": Sample("press1.strokes", 3, NOW - 1)},
        refused={"press1.temp": 4},
    )
    async with f.client() as client:
        signals = (await client.get("/api/status")).json()["signals"]
    by_name = {s["signal"]: s for s in signals}
    assert by_name["press1.temp"]["refused"] == 4 and by_name["press1.temp"]["reason"] == "value refused: NaN"
    assert by_name["press1.strokes"]["refused"] == 0
