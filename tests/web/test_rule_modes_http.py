"""Rule modes through a running gateway, the Mobility Work simulator and the CLI in its own process: a shadow
firing is rendered as Mobility Work's request and shown on /api/status, the status page and `outbox list
--shadow`, never sent; an approve firing waits (status page, /metrics with its age) until
`mw-gateway outbox approve ID`, then it is delivered once."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers import wait_for
from tests.web.ops_gateway import API_KEY, running_gateway

REPO = Path(__file__).resolve().parents[2]

RULES = """
- id: lube-shadow
  when: {counter: press1.strokes, every: 1000, unit: strokes}
  mode: shadow
  task: {equipment: EQ-PRESS-01, description: "Shadow lube at {{ value | int }} strokes", assignees: [3]}
- id: lube-approve
  when: {counter: press1.strokes, every: 1000, unit: strokes}
  mode: approve
  task: {equipment: EQ-PRESS-01, description: "Approved lube at {{ value | int }} strokes", assignees: [3]}
"""


async def cli(config: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "outbox",
        *args,
        "-c",
        str(config),
        cwd=REPO,
        env={**os.environ, "MW_API_KEY": API_KEY},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return int(proc.returncode or 0), out.decode(), err.decode()


def _metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


async def test_shadow_and_approve_through_http_and_the_cli(tmp_path, free_port, monkeypatch) -> None:
    async with running_gateway(tmp_path, free_port(), monkeypatch, rules=RULES) as run:
        config = tmp_path / "gateway.yaml"
        await run.set_strokes(10)
        await run.wait_for_sample("press1.strokes", 10)
        await run.set_strokes(1010)
        async with httpx.AsyncClient(base_url=run.url) as client:

            async def both() -> dict | None:
                doc = (await client.get("/api/status")).json()
                outbox = doc["outbox"]
                rendered = [r for r in outbox["shadow"] if r["request"]]
                return doc if rendered and outbox["awaiting_approval"] else None

            doc = await wait_for(both, what="a rendered shadow firing and one awaiting approval")
            (shadow,) = doc["outbox"]["shadow"]
            assert shadow["rule"] == "lube-shadow"
            assert shadow["request"]["method"] == "POST" and shadow["request"]["path"].endswith("/tasks")
            assert shadow["request"]["json"]["description"].startswith("Shadow lube at 10")
            (waiting,) = doc["outbox"]["awaiting_approval"]
            assert waiting["rule"] == "lube-approve" and waiting["age_s"] >= 0
            page = (await client.get("/")).text
            assert "Awaiting approval" in page and f"mw-gateway outbox approve {waiting['id']}" in page
            assert "Shadow firings (never sent)" in page and "Shadow lube at 10" in page
            metrics = (await client.get("/metrics")).text
            assert _metric(metrics, "mw_gateway_outbox_awaiting_approval") == 1
            assert _metric(metrics, "mw_gateway_outbox_awaiting_approval_oldest_age_seconds") >= 0

            code, out, _ = await cli(config, "list", "--shadow")
            assert code == 0 and "rule lube-shadow" in out and "would send:" in out and "/tasks" in out
            assert run.sim.state.tasks == []  # nothing sent yet: shadow never, approve not yet
            code, out, err = await cli(config, "approve", str(waiting["id"]))
            assert code == 0, err
            run.gw.dispatcher.wake()
            await wait_for(lambda: len(run.sim.state.tasks) >= 1, what="the approved task")
            (task,) = run.sim.state.tasks
            assert task.body["description"].startswith("Approved lube at 10")
            assert task.metadata["rule"] == "lube-approve"

            async def drained() -> dict | None:
                d = (await client.get("/api/status")).json()
                return d if not d["outbox"]["awaiting_approval"] else None

            doc = await wait_for(drained, what="the approval queue to empty")
            assert doc["outbox"]["counts"]["delivered"] == 1 and doc["outbox"]["counts"]["shadow"] == 1
            metrics = (await client.get("/metrics")).text
            assert _metric(metrics, "mw_gateway_outbox_awaiting_approval") == 0
            code, _, err = await cli(config, "reject", str(waiting["id"]))
            assert code == 1 and "it is delivered, not awaiting_approval" in err
    assert len(run.sim.state.tasks) == 1  # the shadow firing never reached the CMMS
