"""The status page in a real browser (Debian's headless Chromium) against a running gateway."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.web.page import progress_text, render_status_page
from tests.e2e.helpers import wait_for
from tests.web.ops_gateway import running_gateway

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


async def chromium(tmp_path: Path, url: str, *args: str) -> str:
    """Run headless Chromium once (without blocking the event loop the gateway serves from)."""
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,2000",
        *args,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


async def test_status_page_in_chromium_shows_a_firing_made_during_the_test(tmp_path, free_port, monkeypatch):
    async with running_gateway(tmp_path, free_port(), monkeypatch) as run:
        await run.set_strokes(200)
        await run.wait_for_sample("press1.strokes", 200)
        await run.set_strokes(1500)
        await wait_for(lambda: run.gw.firings_out >= 1, what="the lubrication rule to fire")
        await wait_for(lambda: len(run.sim.state.tasks) >= 1, what="the simulator to receive the task")

        dom = await chromium(tmp_path, run.url + "/", "--dump-dom")
        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "status-page.png"
        screenshot.unlink(missing_ok=True)
        await chromium(tmp_path, run.url + "/", f"--screenshot={screenshot}")

    assert "<title>mw-gateway ops-test</title>" in dom
    assert 'class="banner ok"' in dom  # healthy: source up, task delivered
    assert 'class="firing-row"' in dom
    assert "Lubricate press 1 at 1500 strokes" in dom  # the firing made above, in "Latest firings"
    assert "1,500 / 2,000 strokes" in dom  # the counter rule's progress to its next threshold
    assert "press1.strokes" in dom and "press1.temp" in dom
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 10_000


async def test_api_status_carries_the_same_data_as_json(tmp_path, free_port, monkeypatch):
    async with running_gateway(tmp_path, free_port(), monkeypatch) as run:
        await run.set_strokes(999)
        await run.wait_for_sample("press1.strokes", 999)
        await run.set_strokes(1001)
        async with httpx.AsyncClient(base_url=run.url) as client:

            async def delivered_and_counted() -> dict[str, Any] | None:
                body: dict[str, Any] = (await client.get("/api/status")).json()
                done = body["outbox"]["counts"]["delivered"] == 1 and body["quota"]["used"] == 1
                return body if done else None

            body = await wait_for(delivered_and_counted, what="the delivery to show in /api/status")

    assert body["health"] == {"status": "ok", "reasons": []}
    assert [s["name"] for s in body["sources"]] == ["press1"] and body["sources"][0]["link"] == "up"
    rules = {r["id"]: r for r in body["rules"]}
    assert rules["press1-lubrication"]["progress"]["next"] == 2000
    assert body["firings"][0]["rule"] == "press1-lubrication" and body["firings"][0]["status"] == "queued"
    assert body["outbox"]["counts"]["delivered"] == 1
    assert body["quota"]["limit"] == 500 and body["quota"]["used"] == 1
    assert body["disk"]["state_bytes"] > 0 and body["disk"]["nearly_full"] is False
    json.dumps(body)  # plain JSON all the way down


def _status(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "now": 1_700_000_000.0,
        "gateway": {
            "id": "gw",
            "started_at": 1_699_999_000.0,
            "uptime_s": 1000.0,
            "timezone": "UTC",
            "cmms": "dry_run",
            "samples_in": 12345,
            "firings": 2,
            "last_reload": {},
        },
        "health": {"status": "unhealthy", "reasons": ["CMMS paused (credentials or plan refused): HTTP 401"]},
        "sources": [],
        "signals": [
            {
                "signal": "press1.note",
                "value": "<script>alert(1)</script>",
                "quality": "good",
                "ts": 0.0,
                "age_s": 2.0,
                "reason": "",
            },
        ],
        "rules": [],
        "firings": [],
        "outbox": {
            "counts": {"queued": 0, "retrying": 1, "delivered": 0, "dead": 1, "dropped": 0},
            "dispatcher": {"state": "paused", "reason": "HTTP 401: bad key", "attempts": {}},
            "rows": [
                {
                    "id": 7,
                    "rule": "r",
                    "state": "dead",
                    "attempts": 1,
                    "next_attempt_at": None,
                    "description": "d",
                    "last_error": "HTTP 400: The request payload is not valid.",
                    "last_details": {"property_errors": {"equipment": ["unknown"]}},
                }
            ],
        },
        "quota": {"month": "2023-11", "used": 3, "limit": 100, "high_only": False},
        "webhooks": [],
        "discrepancies": [],
        "disk": {"state_bytes": 4096, "free_bytes": 10**9},
    }
    base.update(over)
    return base


def test_page_escapes_device_values_and_shows_why_the_cmms_is_paused():
    html = render_status_page(_status())
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html
    assert "CMMS paused (credentials or plan refused): HTTP 401" in html
    assert "HTTP 400: The request payload is not valid." in html  # a dead letter with the server's message
    assert "property_errors" in html
    assert '<meta http-equiv="refresh" content="5">' in html


@pytest.mark.parametrize(
    ("progress", "text"),
    [
        ({"current": 37212, "every": 50000, "next": 50000, "unit": "strokes"}, "37,212 / 50,000 strokes"),
        ({"current": 812.5, "every": 1000.0, "next": 1000.0, "unit": "h"}, "812.50 / 1,000 h"),
    ],
)
def test_progress_reads_like_a_person_would_say_it(progress, text):
    assert progress_text(progress) == text


async def test_webhooks_and_reconciliation_discrepancies_show_up(tmp_path, free_port, monkeypatch):
    async with (
        running_gateway(tmp_path, free_port(), monkeypatch) as run,
        httpx.AsyncClient(base_url=run.url) as client,
    ):
        await run.set_strokes(10)
        await run.wait_for_sample("press1.strokes", 10)
        await run.set_strokes(1010)

        async def delivered() -> dict[str, Any] | None:
            body: dict[str, Any] = (await client.get("/api/status")).json()
            return body if body["outbox"]["counts"]["delivered"] == 1 else None

        before = await wait_for(delivered, what="the delivery")
        # Delivered seconds ago: the CMMS's TaskWasScheduled is awaited, which is not a discrepancy yet.
        assert before["discrepancies"] == []
        assert before["webhooks"] == []

        run.sim.set_webhook_target(run.url + "/webhooks/mobility-work")
        task_id = run.sim.state.tasks[0].id
        sent = await run.sim.send_webhook("TaskWasScheduled", task_id=task_id)
        assert sent.status == 200, sent.error
        sent = await run.sim.send_webhook("SparePartWasConsumed", task_id=task_id, article="BEARING-6204")
        assert sent.status == 200, sent.error
        after = (await client.get("/api/status")).json()
        page = (await client.get("/")).text
        metrics = (await client.get("/metrics")).text

    assert [w["event"] for w in after["webhooks"]] == ["SparePartWasConsumed", "TaskWasScheduled"]
    assert after["webhooks"][1]["task_id"] == run.sim.state.tasks[0].id
    assert [(d["kind"], d["rule"]) for d in after["discrepancies"]] == [
        ("unexpected_part", "press1-lubrication")
    ]
    assert "TaskWasScheduled" in page and "BEARING-6204" in page
    assert 'mw_gateway_webhooks_total{event="TaskWasScheduled",result="accepted"} 1.0' in metrics
