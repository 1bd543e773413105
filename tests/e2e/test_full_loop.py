"""From machine to spare part, over real parts: a pymodbus press, the real Gateway (engine, store, dispatcher,
HTTP), the Mobility Work simulator creating the task and sending signed webhooks back, and the reconciliation
read by the `mw-gateway reconcile` CLI. Then a gateway killed between storing a webhook and answering it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gateway.runtime.lifecycle import Gateway
from gateway.runtime.reload import load_all
from gateway.sim.mobility_work import run_mobility_work_sim
from gateway.sim.plc import run_modbus_press
from gateway.sources import codec
from gateway.web.signature import sign
from tests.e2e.helpers import REPO, GatewayProcess, wait_for

SECRET = "e2e-webhook-secret"
API_KEY = "e2e-api-key-0123456789"

RULES = """\
- id: press1-lubrication
  name: Lubricate press 1 every 1000 strokes
  when:
    counter: press1.strokes
    every: 1000
  task:
    equipment: EQ-PRESS-01
    description: "Lubricate press 1 at {{ value | int }} strokes"
    assignees: [3]
    duration: 30m
    spare_parts:
      - {article: LUBE-5L, quantity: 1}
- id: lube-reorder
  when: {signal: cmms.stock.LUBE-5L, below: 5}
  task: {equipment: STORE-01, description: "Reorder LUBE-5L ({{ value }} left)", assignees: [3]}
"""


def write_config(tmp: Path, *, http_port: int, cmms: str, sources: str = "", rules: str = RULES) -> Path:
    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "rules" / "press1.yaml").write_text(rules)
    path = tmp / "gateway.yaml"
    path.write_text(f"""gateway:
  id: e2e-line
  state_dir: ./state
  rules: rules/
{cmms}
http:
  listen: 127.0.0.1:{http_port}
  webhook_secret: {SECRET}
dispatcher:
  retry_initial: 200ms
  retry_max: 1s
  idle_poll: 100ms
{sources}""")
    return path


def reconcile_cli(config: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "reconcile", "-c", str(config), "--format", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


async def test_full_loop_machine_to_spare_part(tmp_path: Path, free_port: Callable[[], int]) -> None:
    http_port = free_port()
    async with (
        run_modbus_press(simulate=False) as plc,
        run_mobility_work_sim(
            api_key=API_KEY,
            webhook_url=f"http://127.0.0.1:{http_port}/webhooks/mobility-work",
            webhook_secret=SECRET,
        ) as sim,
    ):
        config_path = write_config(
            tmp_path,
            http_port=http_port,
            cmms=f"""cmms:
  kind: mobility_work
  url: {sim.url}
  api_key: {API_KEY}
  plan: premium
  network_name: E2E Factory""",
            sources=f"""sources:
  press1:
    protocol: modbus
    host: 127.0.0.1
    port: {plc.port}
    unit: 1
    poll: 50ms
    signals:
      strokes: {{holding: 0, type: uint32}}
""",
        )
        config, rules = load_all(config_path)
        gw = Gateway(config, rules)
        await gw.start()
        try:
            await plc.set_holding(0, codec.encode(0, "uint32"))
            await wait_for(lambda: gw.samples_in > 0, what="the first strokes sample (baseline)")
            await plc.set_holding(0, codec.encode(1200, "uint32"))
            await wait_for(lambda: sim.state.tasks, what="the task to reach the simulator")
            task = sim.state.tasks[0]
            assert task.metadata["rule"] == "press1-lubrication"
            firing_uuid = task.metadata["firing"]

            async def firing_state() -> Any:
                row = await gw.store.db.fetchone(
                    "SELECT task_id, task_state FROM firings WHERE uuid = ?", (firing_uuid,)
                )
                return None if row is None else tuple(row)

            # The simulator sent TaskWasScheduled by itself, signed: the task is bound to the firing.
            await wait_for(lambda: _eq(firing_state(), (task.id, "scheduled")), what="TaskWasScheduled bound")

            deliveries = [
                await sim.send_webhook("TaskWasStarted", task_id=task.id),
                await sim.send_webhook(
                    "ActivityWasAddedOnTask", task_id=task.id, description="lubricated", minutes=25
                ),
                await sim.send_webhook(
                    "SparePartWasConsumed", task_id=task.id, article="LUBE-5L", quantity=1
                ),
                await sim.send_webhook(
                    "SparePartWasConsumed", task_id=task.id, article="BEARING-6204", quantity=1
                ),
                await sim.send_webhook(
                    "SparePartWasConsumed", task_id=task.id, article="LUBE-5L", quantity=1
                ),
                await sim.send_webhook(
                    "SparePartConsumptionWasCanceled", task_id=task.id, article="LUBE-5L", quantity=1
                ),
                await sim.send_webhook("TaskWasCompleted", task_id=task.id),
            ]
            assert [d.status for d in deliveries] == [200] * len(deliveries)
            # A CMMS retry of the consumption (fresh signature, same _idempotencyKey) changes nothing.
            retry = await sim.resend_webhook(deliveries[2].id)
            assert retry.status == 200
            assert all("X-MW-Signature" in d.headers for d in sim.state.deliveries)

            report = await asyncio.to_thread(reconcile_cli, config_path)
            [row] = report["rows"]
            assert {
                k: row[k]
                for k in (
                    "firing",
                    "rule",
                    "equipment",
                    "status",
                    "delivery",
                    "task_id",
                    "task_state",
                    "tasks",
                    "expected",
                    "consumed",
                )
            } == {
                "firing": firing_uuid,
                "rule": "press1-lubrication",
                "equipment": "EQ-PRESS-01",
                "status": "queued",
                "delivery": "delivered",
                "task_id": task.id,
                "task_state": "completed",
                "tasks": [task.id],
                "expected": {"LUBE-5L": 1},
                "consumed": {"BEARING-6204": 1, "LUBE-5L": 1},
            }
            for step in ("scheduled", "started", "completed"):
                assert row[f"{step}_at"] is not None and row[f"{step}_by"], step
            assert row["canceled_at"] is None
            assert [(d["code"], d.get("article")) for d in row["discrepancies"]] == [
                ("unexpected_part", "BEARING-6204")
            ]
            assert report["totals"]["rules"]["press1-lubrication"]["completed"] == 1
            assert report["totals"]["spare_parts"] == {
                "BEARING-6204": {"expected": 0, "consumed": 1, "difference": 1},
                "LUBE-5L": {"expected": 1, "consumed": 1, "difference": 0},
            }
            # The same report over HTTP.
            async with httpx.AsyncClient() as client:
                api = (
                    await client.get(
                        f"http://127.0.0.1:{http_port}/api/reconciliation",
                        params={"rule": "press1-lubrication"},
                    )
                ).json()
            assert api["rows"] == report["rows"]
            assert await firing_state() == (task.id, "completed")

            # A stock webhook reaches the engine as cmms.stock.<articleCode>: a rule on it fires a task.
            # Every consumption reported the stock left: the engine has the simulator's figure.
            stock = gw.engine.last_values["cmms.stock.LUBE-5L"].value
            assert stock == sim.state.spare_parts["LUBE-5L"].stock and stock is not None and stock >= 5
            low = await sim.send_webhook("SparePartWasOutOfStock", article="LUBE-5L")
            assert low.status == 200
            await wait_for(lambda: len(sim.state.tasks) == 2, what="the stock rule's task")
            assert sim.state.tasks[1].metadata["rule"] == "lube-reorder"
        finally:
            await gw.stop()


async def _eq(awaitable: Any, expected: Any) -> bool:
    return bool(await awaitable == expected)


def _stored_events(db: Path) -> int:
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        try:
            return int(conn.execute("SELECT COUNT(*) FROM webhook_events").fetchone()[0])
        except sqlite3.OperationalError:  # not migrated yet
            return 0


async def test_killed_between_storing_and_answering_the_retry_is_stored_once(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    http_port = free_port()
    config = write_config(tmp_path, http_port=http_port, cmms="cmms:\n  kind: dry_run", rules="[]\n")
    db = tmp_path / "state" / "gateway.sqlite3"
    url = f"http://127.0.0.1:{http_port}/webhooks/mobility-work"
    body = (REPO / "tests/fixtures/mobility_work/latest/SparePartWasConsumed.json").read_bytes()
    headers = {"Content-Type": "application/json", "X-MW-Signature": sign(SECRET, body)}

    # The test hook holds every answer for an hour AFTER the commit (docs/webhooks.md).
    gateway = GatewayProcess(config, env={"MW_GATEWAY_TEST_HOLD_AFTER_COMMIT": "3600"}, http_port=http_port)
    gateway.start()
    try:
        await gateway.wait_healthy_http()
        async with httpx.AsyncClient(timeout=60) as client:
            pending = asyncio.create_task(client.post(url, content=body, headers=headers))
            await wait_for(lambda: _stored_events(db) == 1, what="the webhook committed")
            assert not pending.done()  # stored, not answered
            gateway.kill()
            try:
                response = await pending
                raise AssertionError(f"the killed gateway answered {response.status_code}")
            except httpx.TransportError:
                pass  # the CMMS saw no answer: it will retry
    finally:
        gateway.kill()

    restarted = GatewayProcess(config, env={}, http_port=http_port)
    restarted.start()
    try:
        await restarted.wait_healthy_http()
        async with httpx.AsyncClient(timeout=30) as client:
            same = await client.post(url, content=body, headers=headers)  # the retry, same signature header
            fresh = await client.post(url, content=body, headers={"X-MW-Signature": sign(SECRET, body)})
        assert (same.status_code, same.json()["status"]) == (200, "duplicate")
        assert (fresh.status_code, fresh.json()["status"]) == (200, "duplicate")
        assert _stored_events(db) == 1
    finally:
        restarted.stop()
