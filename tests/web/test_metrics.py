"""/metrics parsed by prometheus-client's own parser, and /healthz following the CMMS's answers."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.web.metrics import FAMILIES, PREFIX
from tests.e2e.helpers import wait_for
from tests.web.ops_gateway import running_gateway


def _families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    return {
        f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)
    }


async def test_metrics_has_every_family_and_counts_a_firing_and_its_delivery(
    tmp_path, free_port, monkeypatch
):
    async with running_gateway(tmp_path, free_port(), monkeypatch) as run:
        await run.set_strokes(10)
        await run.wait_for_sample("press1.strokes", 10)
        await run.set_strokes(1010)
        await wait_for(lambda: len(run.sim.state.tasks) >= 1, what="the task to be delivered")
        async with httpx.AsyncClient(base_url=run.url) as client:

            async def counted() -> httpx.Response | None:
                response = await client.get("/metrics")
                done = 'mw_gateway_outbox_rows{state="delivered"} 1.0' in response.text
                return response if done and "mw_gateway_quota_used 1.0" in response.text else None

            response = await wait_for(counted, what="the delivery to show in /metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = _families(response.text)
    missing = [name for name in FAMILIES if f"{PREFIX}_{name}" not in families]
    assert missing == []
    assert "process_resident_memory_bytes" in families and "process_cpu_seconds" in families

    def value(family: str, sample: str, **labels: str) -> float:
        found = [v for n, lab, v in families[f"{PREFIX}_{family}"] if n == sample and lab == labels]
        assert found, (family, sample, labels, families[f"{PREFIX}_{family}"])
        return found[0]

    assert (
        value("rule_firings", f"{PREFIX}_rule_firings_total", rule="press1-lubrication", status="queued") == 1
    )
    assert value("delivery_attempts", f"{PREFIX}_delivery_attempts_total", result="done") == 1
    assert value("delivery_latency_seconds", f"{PREFIX}_delivery_latency_seconds_count", result="done") == 1
    assert value("outbox_rows", f"{PREFIX}_outbox_rows", state="delivered") == 1
    assert value("quota_used", f"{PREFIX}_quota_used") == 1
    assert value("quota_limit", f"{PREFIX}_quota_limit") == 500
    assert value("source_up", f"{PREFIX}_source_up", source="press1") == 1
    assert value("source_samples", f"{PREFIX}_source_samples_total", source="press1") >= 2
    assert (
        0
        <= value(
            "source_last_sample_age_seconds", f"{PREFIX}_source_last_sample_age_seconds", source="press1"
        )
        < 60
    )
    assert value("state_dir_bytes", f"{PREFIX}_state_dir_bytes") > 0
    # The counter rule saw every strokes sample that reached the engine (at least the two the test wrote).
    assert value("rule_evaluations", f"{PREFIX}_rule_evaluations_total", rule="press1-lubrication") >= 2
    assert value("dispatcher_paused", f"{PREFIX}_dispatcher_paused") == 0


async def test_healthz_503_while_the_cmms_answers_401_and_200_after_the_key_is_fixed(
    tmp_path, free_port, monkeypatch
):
    async with (
        running_gateway(tmp_path, free_port(), monkeypatch) as run,
        httpx.AsyncClient(base_url=run.url) as c,
    ):
        await run.set_strokes(5)
        await run.wait_for_sample("press1.strokes", 5)
        assert (await c.get("/healthz")).status_code == 200

        run.sim.set_api_key("rotated-key-9d81c3")  # the CMMS side rotated the key: we now get 401
        await run.set_strokes(1005)
        response = await wait_for(lambda: _unhealthy(c), what="/healthz to turn 503")
        body = response.json()
        assert body["status"] == "unhealthy"
        assert any(r.startswith("CMMS paused (credentials or plan refused)") for r in body["reasons"])
        assert "rotated-key" not in response.text and "ops-test-key" not in response.text
        assert run.sim.state.tasks == []  # nothing was created; the firing stays queued

        monkeypatch.setenv("MW_API_KEY", "rotated-key-9d81c3")  # the operator fixes /etc/mw-gateway/env ...
        assert await run.gw.reload()  # ... and reloads (systemctl reload = SIGHUP)
        await wait_for(lambda: len(run.sim.state.tasks) == 1, what="the held task to be delivered")
        response = await wait_for(lambda: _healthy(c), what="/healthz to turn 200")
        assert response.json() == {"status": "ok", "reasons": []}


async def _unhealthy(client: httpx.AsyncClient) -> httpx.Response | None:
    response = await client.get("/healthz")
    return response if response.status_code == 503 else None


async def _healthy(client: httpx.AsyncClient) -> httpx.Response | None:
    response = await client.get("/healthz")
    return response if response.status_code == 200 else None
