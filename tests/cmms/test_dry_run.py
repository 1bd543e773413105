"""The dry-run backend: it renders, records and sends nothing, whatever it is compared with."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter

from gateway.cmms.amage import AmageBackend
from gateway.cmms.dry_run import DryRunBackend
from gateway.cmms.registry import build_backend
from gateway.cmms.schema import AmageConfig, CmmsConfig
from gateway.core.clock import ManualClock
from gateway.core.delivery import OutboxItem, Outcome
from gateway.core.firings import Evidence, Firing, SparePart, TaskSpec, firing_uuid
from gateway.sim.amage import run_amage_sim
from gateway.sim.servitly import run_servitly_sim

AMAGE = {
    "kind": "amage",
    "device_uuid": "0b6f6a52-7a1e-4c1f-9a51-5f0d3c2b1a00",
    "api_key": "k",
    "key_secret": "s",
}
SERVITLY = {"kind": "servitly", "tenant": "acme", "api_key": "k", "pat": "p"}


def make_item(*, extra: dict[str, Any] | None = None) -> OutboxItem:
    task = TaskSpec(
        equipment="EQ-PRESS-01",
        description="Lubricate press 1 at 50000 strokes",
        assignees=("maintenance@factory.example",),
        spare_parts=(SparePart("LUBE-5L", 1),),
        extra={"thing_id": "thing-press1"} if extra is None else extra,
    )
    firing = Firing(
        key="press1-lubrication:50000",
        rule_id="press1-lubrication",
        fired_at=1_767_225_600.0,
        task=task,
        evidence=(Evidence("press1.strokes", 50000, 1_767_225_599.0, "good"),),
        trigger="counter",
    )
    return OutboxItem(
        outbox_id=1, firing_uuid=firing_uuid("inst-1", "gw", firing.key), firing=firing, attempts=0
    )


def dry_run(compare_with: dict[str, Any] | None = None) -> DryRunBackend:
    data: dict[str, Any] = {"kind": "dry_run"}
    if compare_with is not None:
        data["compare_with"] = compare_with
    config = TypeAdapter(CmmsConfig).validate_python(data)
    backend = build_backend(config, gateway_id="gw", timezone="Europe/Paris", clock=ManualClock())
    assert isinstance(backend, DryRunBackend)
    return backend


async def test_without_a_backend_to_compare_the_task_is_rendered_neutrally() -> None:
    backend = dry_run()
    item = make_item()
    try:
        info = await backend.start()
        delivery = await backend.deliver(item)
    finally:
        await backend.aclose()
    assert backend.counts_against_quota is False
    assert (info.name, info.timezone) == ("dry run", "Europe/Paris")
    assert delivery.outcome is Outcome.DONE
    assert delivery.request is not None
    assert (delivery.request["dry_run"], delivery.request["compare_with"], delivery.request["path"]) == (
        True,
        None,
        None,
    )
    rendered = json.loads(json.dumps(delivery.request["json"]))  # storable as JSON
    assert rendered["firing"] == item.firing_uuid
    assert rendered["gateway"] == "gw"
    assert rendered["task"]["description"] == "Lubricate press 1 at 50000 strokes"
    assert rendered["task"]["spare_parts"] == [{"article": "LUBE-5L", "quantity": 1}]
    assert rendered["evidence"][0]["value"] == 50000


async def test_compared_with_amage_it_renders_amages_calls_and_sends_nothing() -> None:
    async with run_amage_sim(device_uuid=AMAGE["device_uuid"], api_key="k", key_secret="s") as sim:
        backend = dry_run({**AMAGE, "url": sim.url})
        real = AmageBackend(
            AmageConfig.model_validate({**AMAGE, "url": sim.url}), gateway_id="gw", timezone="Europe/Paris"
        )
        item = make_item()
        try:
            await backend.start()
            delivery = await backend.deliver(item)
            expected = real.build_request(item)
        finally:
            await backend.aclose()
            await real.aclose()
        assert sim.state.requests == []
    assert delivery.outcome is Outcome.DONE
    assert delivery.request == {**expected, "dry_run": True, "compare_with": "amage"}
    assert delivery.request["path"] == "/rest/amage/v1/work-orders/add"
    assert delivery.request["json"]["uuid"] == item.firing_uuid
    assert delivery.request["material_plan"][0]["json"]["code"] == "LUBE-5L"


async def test_compared_with_servitly_it_neither_logs_in_nor_sends() -> None:
    async with run_servitly_sim(tenant="acme", api_key="k", pat="p") as sim:
        backend = dry_run({**SERVITLY, "url": sim.url})
        try:
            await backend.start()
            done = await backend.deliver(make_item())
            dead = await backend.deliver(make_item(extra={}))
        finally:
            await backend.aclose()
        assert sim.state.requests == []
    assert done.outcome is Outcome.DONE
    assert done.request is not None
    assert (done.request["path"], done.request["json"]["thingId"]) == (
        "/inventory/historicalEvents",  # the default endpoint (seed 003: maintenanceWorks is deprecated)
        "thing-press1",
    )
    assert dead.outcome is Outcome.DEAD
    assert dead.error.startswith("dry run, servitly could not build the task: rule press1-lubrication gives")


async def test_compared_with_mobility_work_it_renders_the_task_post(free_port: Callable[[], int]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there: nothing may be called
    backend = dry_run({"kind": "mobility_work", "url": url, "api_key": "mw-secret-key"})
    item = make_item()
    try:
        await backend.start()
        delivery = await backend.deliver(item)
    finally:
        await backend.aclose()
    assert delivery.outcome is Outcome.DONE, delivery.error
    assert delivery.request is not None
    assert delivery.request["path"] == "/partners/v1/tasks"
    assert delivery.request["json"]["metadata"]["firing"] == item.firing_uuid
    assert "mw-secret-key" not in json.dumps(delivery.request)
