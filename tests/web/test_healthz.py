"""/healthz over a fake snapshot: no gateway started, no socket."""

from __future__ import annotations

from gateway.config import HttpSection
from gateway.core.samples import LinkState
from gateway.core.views import DiskView
from tests.web.fakes import NOW, FakeOutbox, dispatcher, fake, snapshot, source


async def test_a_healthy_snapshot_is_200_ok():
    async with fake().client() as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "reasons": []}


async def test_a_dead_task_is_503_naming_it():
    f = fake(failed_tasks={"engine": "OverflowError: int too large to convert to float"})
    async with f.client() as client:
        response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["reasons"] == [
        "task engine died (OverflowError: int too large to convert to float): the gateway is stopping; "
        "systemd restarts it"
    ]


async def test_every_reason_is_listed_in_order():
    f = fake(
        dispatcher=dispatcher(
            state="paused", reason="HTTP 401: bad key", link_up=False, link_error="timeout"
        ),
        disk=DiskView(state_bytes=1, free_bytes=1, problem="state directory nearly full: 1 B free"),
        store_error="database or disk is full",
        sources=(source("press1", LinkState.DOWN), source("pump7")),
    )
    async with f.client() as client:
        response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["reasons"] == [
        "CMMS paused (credentials or plan refused): HTTP 401: bad key; fix the key and reload",
        "state directory nearly full: 1 B free",
        "database not writable: database or disk is full",
        "CMMS unreachable: timeout; tasks stay queued and leave when it answers",
        "sources down: press1",
    ]


async def test_an_outbox_retrying_without_delivery_for_ten_minutes_is_not_draining():
    f = fake(dispatcher=dispatcher(last_success_at=NOW - 601))
    f.outbox = FakeOutbox({"queued": 0, "retrying": 4, "delivered": 0, "dead": 0, "dropped": 0})
    async with f.client() as client:
        response = await client.get("/healthz")
        assert response.json()["reasons"] == ["outbox not draining: 4 rows retrying, no delivery for 10 min"]
        f.snap = snapshot(dispatcher=dispatcher(last_success_at=NOW - 599))  # late-bound: seen at once
        response = await client.get("/healthz")
    assert response.status_code == 200


async def test_healthz_stays_open_when_the_rest_needs_credentials():
    f = fake()
    f.http = HttpSection(auth_token="s3cret-token-value")
    async with f.client() as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/api/status")).status_code == 401
