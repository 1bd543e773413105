"""`mw-gateway demo`: a simulated press and pump (Modbus), a local Mobility Work simulator, and the gateway,
end to end on this machine, with nothing to configure. It prints what happens in words a person can follow:
signal values, rules firing, the tasks the simulator receives, and the webhooks it sends back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from gateway.core.events import DeliveryDone, FiringRecorded
from gateway.runtime.lifecycle import Gateway, serve
from gateway.runtime.logs import setup_logging
from gateway.runtime.reload import load_all

log = logging.getLogger("gateway.demo")

DEMO_SPEED = 30.0  # machine time runs 30x faster than real time


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Narrator:
    """Prints timestamped lines for a person watching the demo."""

    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stdout
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {text}", file=self.out, flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


async def _show_signals(gw: Gateway, say: Callable[[str], None], every_s: float = 5.0) -> None:
    while True:
        await asyncio.sleep(every_s)
        values = gw.engine.last_values
        parts = []
        for name in ("press1.strokes", "press1.temp", "press1.running", "pump7.run_hours", "pump7.temp"):
            s = values.get(name)
            if s is not None:
                parts.append(f"{name}={_fmt(s.value) if s.quality.value == 'good' else 'BAD'}")
        counts = await gw.store.outbox.counts()
        say(
            "signals: " + "  ".join(parts) + f"   | outbox: {counts['queued']} queued, "
            f"{counts['delivered']} delivered, {counts['dead']} dead"
        )


async def _play_technician(sim: Any, say: Callable[[str], None]) -> None:
    """Act as the technician in the CMMS: start each new task, report an activity, consume its parts,
    complete it. The simulator sends the matching signed webhooks back to the gateway, and the reconciliation
    fills in."""
    handled: set[str] = set()
    while True:
        await asyncio.sleep(0.5)
        for task in list(sim.state.tasks):
            if task.id in handled:
                continue
            handled.add(task.id)
            description = task.body.get("description", "")
            say(
                f"Mobility Work simulator received task {task.id}: {description!r}, "
                f"metadata {task.metadata} (webhook TaskWasScheduled sent back)"
            )
            await asyncio.sleep(2.0)
            await _webhook(sim, say, "TaskWasStarted", f"technician started task {task.id}", task_id=task.id)
            await _webhook(
                sim,
                say,
                "ActivityWasAddedOnTask",
                f"technician reported 30 min on task {task.id}",
                task_id=task.id,
                minutes=30,
                description="lubrication done",
            )
            for part in task.metadata.get("expected_parts", []) or (
                [{"article": "LUBE-5L", "quantity": 1}] if "Lubricate" in description else []
            ):
                await _webhook(
                    sim,
                    say,
                    "SparePartWasConsumed",
                    f"technician consumed {part['quantity']} x {part['article']} on task {task.id}",
                    task_id=task.id,
                    article=part["article"],
                    quantity=part["quantity"],
                )
            await asyncio.sleep(1.0)
            await _webhook(
                sim, say, "TaskWasCompleted", f"technician completed task {task.id}", task_id=task.id
            )


async def _webhook(sim: Any, say: Callable[[str], None], event: str, what: str, **params: Any) -> None:
    delivery = await sim.send_webhook(event, **params)
    answer = f"HTTP {delivery.status}" if delivery.status else f"failed: {delivery.error}"
    say(f"{what} -> webhook {event} to the gateway: {answer}")


async def demo_main(*, seconds: float | None, port: int | None, speed: float | None) -> int:
    from gateway.sim.mobility_work import run_mobility_work_sim
    from gateway.sim.plc import run_modbus_press

    narrator = Narrator()
    say = narrator.say
    workdir = Path(tempfile.mkdtemp(prefix="mw-gateway-demo-"))
    rules_dir = workdir / "rules"
    shutil.copytree(str(resources.files("gateway") / "demo_data" / "rules"), rules_dir)
    http_port = port or _free_port()
    api_key = "demo-" + secrets.token_hex(8)
    webhook_secret = secrets.token_hex(16)
    webhook_url = f"http://127.0.0.1:{http_port}/webhooks/mobility-work"

    async with (
        run_modbus_press(host="127.0.0.1", port=0, speed=speed or DEMO_SPEED) as plc,
        run_mobility_work_sim(
            host="127.0.0.1",
            port=0,
            api_key=api_key,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            network_timezone="Europe/Paris",
        ) as sim,
    ):
        values = {
            "DEMO_STATE_DIR": str(workdir / "state"),
            "DEMO_RULES_DIR": str(rules_dir),
            "DEMO_MW_URL": sim.url,
            "DEMO_MW_API_KEY": api_key,
            "DEMO_HTTP_PORT": str(http_port),
            "DEMO_WEBHOOK_SECRET": webhook_secret,
            "DEMO_PLC_PORT": str(plc.port),
        }
        text = (resources.files("gateway") / "demo_data" / "gateway.yaml").read_text(encoding="utf-8")
        for name, value in values.items():
            text = text.replace("${" + name + "}", value)
        config_path = workdir / "gateway.yaml"
        config_path.write_text(text, encoding="utf-8")
        config, rules = load_all(config_path)
        setup_logging(fmt="text", level="WARNING", secrets=config.secrets())
        gw = Gateway(config, rules)

        def on_firing(event: FiringRecorded) -> None:
            firing, result = event.firing, event.result
            say(f"rule {firing.rule_id} FIRED: {firing.task.description!r} -> {result.status}")

        def on_delivery(event: DeliveryDone) -> None:
            item, delivery = event.item, event.delivery
            code = f" HTTP {delivery.status_code}" if delivery.status_code else ""
            say(
                f"outbox row {item.outbox_id} ({item.firing.rule_id}) -> Mobility Work: "
                f"{delivery.outcome.value}{code}"
            )

        gw.events.subscribe(FiringRecorded, on_firing)
        gw.events.subscribe(DeliveryDone, on_delivery)
        print(
            "\nmw-gateway demo: a simulated press and pump "
            f"(Modbus TCP on 127.0.0.1:{plc.port}, machine time x{speed or DEMO_SPEED:g}),\n"
            f"a local Mobility Work simulator ({sim.url}) and the gateway, all on this machine.\n\n"
            f"  status page:     http://127.0.0.1:{http_port}/\n"
            f"  status as JSON:  http://127.0.0.1:{http_port}/api/status\n"
            f"  reconciliation:  http://127.0.0.1:{http_port}/api/reconciliation\n"
            f"  config and rules used: {workdir}\n\n"
            "Rules: lubricate press 1 every 1,000 strokes (about every 17 s here); a task when press 1 runs\n"
            "above 85 °C for 3 s. Stop with Ctrl-C.\n",
            flush=True,
        )
        helpers: list[asyncio.Task[Any]] = []

        async def until() -> None:
            helpers.append(asyncio.create_task(_show_signals(gw, say)))
            helpers.append(asyncio.create_task(_play_technician(sim, say)))
            if seconds is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(seconds)
            # The technician stops before the gateway does, so no webhook is sent to a gateway going away.
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

        try:
            await serve(gw, until=until())
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        await _print_reconciliation(config)
        print(
            f"\ndemo stopped: the simulator received {len(sim.state.tasks)} task(s). Config, rules and state "
            f"are kept in {workdir}; look again with:\n  mw-gateway reconcile -c {config_path}\n"
            f"  mw-gateway outbox list -c {config_path}",
            flush=True,
        )
    return 0


async def _print_reconciliation(config: Any) -> None:
    from gateway.reconcile import build_report, render
    from gateway.store import Store

    store = await Store.open(config.state_dir, gateway_id=config.gateway.id)
    try:
        report = await build_report(store)
    finally:
        await store.close()
    print("\nreconciliation (firings -> tasks -> spare parts):\n" + render(report, "table"), flush=True)


def run_demo(*, seconds: float | None = None, port: int | None = None, speed: float | None = None) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(demo_main(seconds=seconds, port=port, speed=speed))
    return 0
