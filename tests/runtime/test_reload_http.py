"""Reload and http.*: late-bound settings apply at once; settings that need a restart refuse the reload and
say why (issue 18.13). A real gateway, its own HTTP server on a free port, the reload served by `wait()` as
SIGHUP does it (cli: `request_reload`)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from gateway.web.signature import sign
from tests.e2e.helpers import wait_for
from tests.web.ops_gateway import Running, running_gateway

OLD, NEW = "whsec-leaked-0a1b2c", "whsec-rotated-9f8e7d"
MW = "/webhooks/mobility-work"


async def post(client: httpx.AsyncClient, secret: str, n: int) -> int:
    body = json.dumps({"_event": "TaskWasScheduled", "_idempotencyKey": f"k{n}"}).encode()
    r = await client.post(MW, content=body, headers={"X-MW-Signature": sign(secret, body)})
    return r.status_code


async def sighup(run: Running) -> bool:
    """What SIGHUP does: ask the running gateway's wait() loop to reload, then wait for the outcome."""
    before = run.gw.last_reload
    waiter = asyncio.create_task(run.gw.wait())
    try:
        run.gw.request_reload()
        await wait_for(lambda: run.gw.last_reload is not before, what="the reload")
    finally:
        run.gw.request_stop()
        await waiter
        run.gw._stopping.clear()  # the fixture stops the gateway itself
    assert run.gw.last_reload is not None
    return bool(run.gw.last_reload.ok)


async def test_a_rotated_webhook_secret_takes_effect_on_reload(tmp_path, free_port, monkeypatch):
    monkeypatch.setenv("MW_WEBHOOK_SECRET", OLD)
    extra = "  webhook_secret: ${MW_WEBHOOK_SECRET}\n  signature_tolerance: 5m\n"
    async with (
        running_gateway(tmp_path, free_port(), monkeypatch, http_extra=extra) as run,
        httpx.AsyncClient(base_url=run.url) as client,
    ):
        assert await post(client, OLD, 1) == 200
        assert await post(client, NEW, 2) == 401
        monkeypatch.setenv("MW_WEBHOOK_SECRET", NEW)  # the operator edits /etc/mw-gateway/env ...
        assert await sighup(run)  # ... and runs systemctl reload
        assert await post(client, OLD, 3) == 401  # the leaked secret is refused at once
        assert await post(client, NEW, 4) == 200


async def test_a_new_body_cap_and_auth_token_apply_on_reload(tmp_path, free_port, monkeypatch):
    async with (
        running_gateway(tmp_path, free_port(), monkeypatch) as run,
        httpx.AsyncClient(base_url=run.url) as client,
    ):
        big = json.dumps({"_event": "X", "pad": "x" * 4000}).encode()
        assert (await client.post(MW, content=big)).status_code == 200
        assert (await client.get("/api/status")).status_code == 200
        config = tmp_path / "gateway.yaml"
        text = config.read_text().replace(
            "http:\n", "http:\n  max_body_bytes: 2048\n  auth_token: tok-123456\n"
        )
        config.write_text(text)
        assert await sighup(run)
        assert (await client.post(MW, content=big)).status_code == 413
        assert (await client.get("/api/status")).status_code == 401


@pytest.mark.parametrize("change", ["listen", "tls"])
async def test_settings_that_need_a_restart_refuse_the_reload_and_say_why(
    tmp_path, free_port, monkeypatch, caplog, change
):
    port = free_port()
    async with (
        running_gateway(tmp_path, port, monkeypatch) as run,
        httpx.AsyncClient(base_url=run.url) as client,
    ):
        config = tmp_path / "gateway.yaml"
        text = config.read_text()
        if change == "listen":
            text = text.replace(f"listen: 127.0.0.1:{port}", f"listen: 127.0.0.1:{free_port()}")
        else:
            (tmp_path / "c.pem").write_text("x")
            text = text.replace(
                "http:\n", f"http:\n  tls_certificate: {tmp_path}/c.pem\n  tls_key: {tmp_path}/c.pem\n"
            )
        # A late-bound change in the same edit is not applied either: nothing is half-applied.
        text = text.replace("http:\n", "http:\n  auth_token: tok-abcdef\n")
        config.write_text(text)
        assert not await sighup(run)
        assert run.gw.last_reload is not None
        reasons = " ".join(run.gw.last_reload.problems)
        assert "restart the service" in reasons
        assert ("http.listen" if change == "listen" else "http.tls_certificate") in reasons
        assert any("reload refused" in r.getMessage() for r in caplog.records)
        assert (await client.get("/api/status")).status_code == 200  # still the old config, still serving
