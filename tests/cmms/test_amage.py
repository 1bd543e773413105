"""The AMAGE backend against the AMAGE simulator, over real HTTP on loopback."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.cmms.amage import AmageBackend
from gateway.cmms.schema import AmageConfig, HttpClientOptions
from gateway.core.clock import ManualClock
from gateway.core.delivery import OutboxItem, Outcome
from gateway.core.firings import Evidence, Firing, Priority, SparePart, TaskSpec, firing_uuid
from gateway.sim.amage import AmageSim, Fault, run_amage_sim

DEVICE = "0b6f6a52-7a1e-4c1f-9a51-5f0d3c2b1a00"
KEY = "amage-test-key"
SECRET = "amage-test-secret"
USER = "5a3c1d2e-0000-4000-8000-00000000000a"
DEPARTMENT = "5a3c1d2e-0000-4000-8000-00000000000d"
TYPE = "5a3c1d2e-0000-4000-8000-00000000000f"
LUBE = "5a3c1d2e-0000-4000-8000-0000000000e1"
FIRED_AT = 1_767_225_600.0  # 2026-01-01T00:00:00Z = 01:00 in Paris


def make_item(
    *,
    key: str = "press1-lubrication:50000",
    priority: Priority = Priority.NORMAL,
    spare_parts: tuple[SparePart, ...] = (),
    assignees: tuple[str | int, ...] = ("maintenance@factory.example", 3),
    extra: dict[str, Any] | None = None,
) -> OutboxItem:
    task = TaskSpec(
        equipment="EQ-PRESS-01",
        description="Lubricate press 1 at 50000 strokes\nUse the 5 L can.",
        assignees=assignees,
        duration_s=7200.0,
        spare_parts=spare_parts,
        extra=extra or {},
    )
    firing = Firing(
        key=key,
        rule_id="press1-lubrication",
        fired_at=FIRED_AT,
        task=task,
        priority=priority,
        evidence=(Evidence("press1.strokes", 50012, FIRED_AT - 1.0, "good"),),
        metadata={"line": "1"},
        trigger="counter",
    )
    return OutboxItem(
        outbox_id=1, firing_uuid=firing_uuid("inst-1", "press-line-1", key), firing=firing, attempts=0
    )


def make_config(sim: AmageSim, **overrides: Any) -> AmageConfig:
    values: dict[str, Any] = {
        "kind": "amage",
        "url": sim.url,
        "device_uuid": DEVICE,
        "api_key": KEY,
        "key_secret": SECRET,
        "http": HttpClientOptions(connect_timeout=2.0, read_timeout=0.5),
        **overrides,
    }
    return AmageConfig.model_validate(values)


@pytest.fixture
async def sim() -> AsyncIterator[AmageSim]:
    async with run_amage_sim(device_uuid=DEVICE, api_key=KEY, key_secret=SECRET) as running:
        yield running


@pytest.fixture
async def backend(sim: AmageSim) -> AsyncIterator[AmageBackend]:
    config = make_config(sim, users={"maintenance@factory.example": USER}, element_types={"LUBE-5L": LUBE})
    amage = AmageBackend(config, gateway_id="press-line-1", timezone="Europe/Paris", clock=ManualClock())
    yield amage
    await amage.aclose()


async def test_a_firing_becomes_a_signed_work_order_with_its_material_plan(
    sim: AmageSim, backend: AmageBackend
) -> None:
    item = make_item(
        priority=Priority.HIGH,
        spare_parts=(SparePart("LUBE-5L", 1), SparePart("FILTER-10", 2)),
        extra={"type_uuid": TYPE, "thing_id": "for-servitly-only"},
    )
    delivery = await backend.deliver(item)

    assert delivery.outcome is Outcome.DONE, delivery.error
    assert delivery.remote_id == item.firing_uuid
    order = sim.state.work_orders[item.firing_uuid]
    assert order["name"] == "Lubricate press 1 at 50000 strokes"
    assert order["description"] == "Lubricate press 1 at 50000 strokes\nUse the 5 L can."
    assert order["stateName"] == "NEW"
    assert order["priorityName"] == "HIGH"
    assert order["typeUuid"] == TYPE
    assert order["assignedUserUuid"] == USER
    assert "assignedDepartmentUuid" not in order
    assert (order["created"], order["beginDate"], order["deadlineDate"]) == (
        "2026-01-01T01:00:00",
        "2026-01-01T01:00:00",
        "2026-01-01T03:00:00",
    )
    assert order["hoursEstimated"] == 2.0
    for line in (
        f"firing: {item.firing_uuid}",
        "firing key: press1-lubrication:50000",
        "rule: press1-lubrication",
        "gateway: press-line-1",
        "equipment: EQ-PRESS-01",
        "line: 1",
        "- press1.strokes = 50012 (good, 2026-01-01T00:59:59)",
    ):
        assert line in order["notes"].splitlines()
    assert "thing_id" not in str(order)  # another backend's key is not sent to AMAGE
    assert [
        (p["workOrder"], p.get("elementTypeUuid"), p.get("code"), p["itemCount"]) for p in sim.state.plans
    ] == [
        (item.firing_uuid, LUBE, None, 1),
        (item.firing_uuid, None, "FILTER-10", 2),
    ]
    add = sim.state.requests[0]
    assert add.path == "/rest/amage/v1/work-orders/add"
    assert add.headers["amage-device-uuid"] == DEVICE
    assert add.headers["amage-api-key"] == KEY
    expected = hashlib.sha256(("/rest/amage/v1/work-orders/add" + SECRET).encode()).hexdigest()
    assert add.headers["amage-api-sign"] == expected
    assert delivery.request is not None
    assert delivery.request["json"]["uuid"] == item.firing_uuid
    assert len(delivery.request["material_plan"]) == 2
    assert SECRET not in str(delivery.request) and KEY not in str(delivery.request)


async def test_normal_priority_and_a_department_when_no_user_is_known(sim: AmageSim) -> None:
    config = make_config(sim, department_uuid=DEPARTMENT)
    amage = AmageBackend(config, gateway_id="press-line-1", clock=ManualClock())
    try:
        item = make_item(assignees=("someone@factory.example",))
        delivery = await amage.deliver(item)
    finally:
        await amage.aclose()
    assert delivery.outcome is Outcome.DONE, delivery.error
    order = sim.state.work_orders[item.firing_uuid]
    assert order["priorityName"] == "NORMAL"
    assert order["assignedDepartmentUuid"] == DEPARTMENT
    assert "assignedUserUuid" not in order
    assert order["beginDate"] == "2026-01-01T00:00:00"  # no timezone given: UTC
    assert "assignees: someone@factory.example" in order["notes"]


async def test_the_rule_can_name_the_department_and_a_uuid_assignee_is_a_user(
    sim: AmageSim, backend: AmageBackend
) -> None:
    item = make_item(assignees=(USER,), extra={"assigned_department_uuid": DEPARTMENT, "priority": "low"})
    assert (await backend.deliver(item)).outcome is Outcome.DONE
    order = sim.state.work_orders[item.firing_uuid]
    assert (order["assignedUserUuid"], order["assignedDepartmentUuid"], order["priorityName"]) == (
        USER,
        DEPARTMENT,
        "LOW",
    )


async def test_unprefixed_headers_as_the_seed_writes_them(sim: AmageSim) -> None:
    amage = AmageBackend(make_config(sim, header_prefix=""), gateway_id="gw", clock=ManualClock())
    try:
        delivery = await amage.deliver(make_item())
    finally:
        await amage.aclose()
    assert delivery.outcome is Outcome.DONE, delivery.error
    headers = sim.state.requests[0].headers
    assert {"device-uuid", "api-key", "api-sign"} <= set(headers)
    assert "amage-api-sign" not in headers


async def test_a_configured_sign_template_is_used_on_both_sides() -> None:
    template = "{method}\n{path}\n{body}\n{key_secret}"
    async with run_amage_sim(
        device_uuid=DEVICE, api_key=KEY, key_secret=SECRET, sign_template=template
    ) as sim:
        right = AmageBackend(make_config(sim, sign_template=template), gateway_id="gw", clock=ManualClock())
        wrong = AmageBackend(make_config(sim), gateway_id="gw", clock=ManualClock())
        try:
            refused = await wrong.deliver(make_item(key="a"))
            accepted = await right.deliver(make_item(key="b"))
        finally:
            await right.aclose()
            await wrong.aclose()
        sent = sim.state.requests[1]
    assert refused.outcome is Outcome.PAUSE
    assert refused.status_code == 401
    assert "Invalid API signature" in refused.error
    assert accepted.outcome is Outcome.DONE, accepted.error
    signed = f"POST\n{sent.path}\n{sent.text}\n{SECRET}"
    assert sent.headers["amage-api-sign"] == hashlib.sha256(signed.encode()).hexdigest()


async def test_a_wrong_key_pauses_and_creates_nothing(sim: AmageSim) -> None:
    amage = AmageBackend(make_config(sim, api_key="not-the-key"), gateway_id="gw", clock=ManualClock())
    try:
        delivery = await amage.deliver(make_item())
    finally:
        await amage.aclose()
    assert delivery.outcome is Outcome.PAUSE
    assert delivery.details == {
        "uuid": "",
        "success": False,
        "errorCode": "UNAUTHORIZED",
        "message": "Unknown device or API key",
    }
    assert "not-the-key" not in delivery.error
    assert sim.state.work_orders == {}


async def test_a_retried_add_whose_response_was_lost_makes_one_work_order(
    sim: AmageSim, backend: AmageBackend
) -> None:
    item = make_item(spare_parts=(SparePart("LUBE-5L", 1),))
    sim.state.faults.add(Fault("commit_lost", path="/add", delay_s=5.0))

    first = await backend.deliver(item)
    assert first.outcome is Outcome.RETRY
    assert "read timeout" in first.error
    assert first.maybe_committed is False  # the retry carries the same uuid
    assert list(sim.state.work_orders) == [item.firing_uuid]  # committed, answer lost

    second = await backend.deliver(item)
    assert second.outcome is Outcome.DONE, second.error
    assert sim.state.requests[1].status == 400  # "already exists": an earlier attempt got through
    assert list(sim.state.work_orders) == [item.firing_uuid]
    assert len(sim.state.plans) == 1


async def test_after_a_restart_the_duplicate_answer_still_counts_as_done(sim: AmageSim) -> None:
    item = make_item()
    # The gateway died with the add in flight: at start-up the store counts that attempt as maybe committed.
    restarted = dataclasses.replace(item, attempts=1, maybe_committed=1)
    for attempt in (item, restarted):  # two backend lifetimes, as across a gateway restart
        amage = AmageBackend(make_config(sim), gateway_id="press-line-1", clock=ManualClock())
        try:
            assert (await amage.deliver(attempt)).outcome is Outcome.DONE
        finally:
            await amage.aclose()
    assert len(sim.state.work_orders) == 1


async def test_an_already_exists_the_gateway_cannot_prove_it_caused_is_dead_and_warned(
    sim: AmageSim, backend: AmageBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # A state database restored from a backup: the next crossing reuses a firing uuid already in AMAGE.
    earlier = make_item()
    assert (await backend.deliver(earlier)).outcome is Outcome.DONE
    fresh = AmageBackend(make_config(sim), gateway_id="press-line-1", clock=ManualClock())
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.cmms.amage"):
            delivery = await fresh.deliver(make_item())  # same uuid, no earlier attempt of this row
    finally:
        await fresh.aclose()
    assert delivery.outcome is Outcome.DEAD
    assert delivery.status_code == 400
    assert f"AMAGE already has work order {earlier.firing_uuid}" in delivery.error
    assert "not provably this firing's" in delivery.error
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert len(sim.state.work_orders) == 1


async def test_a_lost_answer_then_already_exists_in_the_same_run_is_ours(
    sim: AmageSim, backend: AmageBackend
) -> None:
    item = make_item()
    sim.state.faults.add(Fault("commit_lost", path="/add"))  # committed, the connection closed unanswered
    first = await backend.deliver(item)
    assert first.outcome is Outcome.RETRY and first.maybe_committed is False
    second = await backend.deliver(dataclasses.replace(item, attempts=1))  # maybe_committed 0 on the row
    assert second.outcome is Outcome.DONE, second.error
    assert len(sim.state.work_orders) == 1


async def test_a_failed_plan_line_is_retried_alone(sim: AmageSim, backend: AmageBackend) -> None:
    item = make_item(spare_parts=(SparePart("LUBE-5L", 1), SparePart("FILTER-10", 2), SparePart("SEAL-3", 4)))
    plan = "add-workorder-elementtype-plan"
    sim.state.faults.add(Fault("latency", path=plan, delay_s=0.0))  # the first line goes through
    sim.state.faults.add(Fault("error", path=plan, status=503))  # the second fails

    first = await backend.deliver(item)
    assert first.outcome is Outcome.RETRY
    assert first.remote_id == item.firing_uuid
    assert f"work order {item.firing_uuid} is in AMAGE, but material plan line 2/3 (FILTER-10)" in first.error
    assert [p.get("code", "LUBE-5L") for p in sim.state.plans] == ["LUBE-5L"]

    calls_before = len(sim.state.requests)
    second = await backend.deliver(item)
    assert second.outcome is Outcome.DONE, second.error
    retried = [r.path.rsplit("/", 2)[-2] for r in sim.state.requests[calls_before:]]
    assert retried == [plan, plan]  # no second add, no second LUBE-5L line
    assert [p.get("code", "LUBE-5L") for p in sim.state.plans] == ["LUBE-5L", "FILTER-10", "SEAL-3"]
    assert len(sim.state.work_orders) == 1


async def test_a_rejected_plan_line_is_dead_and_a_manual_retry_sends_only_that_line(
    sim: AmageSim, backend: AmageBackend
) -> None:
    sim.state.add_records("elementType", {"FILTER-10": "5a3c1d2e-0000-4000-8000-0000000000e2"})
    sim.state.add_records("user", [USER])
    sim.state.check_references = True
    item = make_item(spare_parts=(SparePart("FILTER-10", 1), SparePart("LUBE-5L", 2)))

    dead = await backend.deliver(item)
    assert dead.outcome is Outcome.DEAD
    assert dead.remote_id == item.firing_uuid
    assert "material plan line 2/2 (LUBE-5L)" in dead.error
    assert "does not exist in AMAGE (errorCode NOT_FOUND)" in dead.error
    assert f"Record of type elementType with uuid {LUBE} was not found" in dead.error

    async with httpx.AsyncClient(base_url=sim.url) as control:  # the missing record is created in AMAGE
        response = await control.post("/_sim/records", json={"elementType": [LUBE]})
        assert response.status_code == 200
    retried = await backend.deliver(item)
    assert retried.outcome is Outcome.DONE, retried.error
    assert [p.get("elementTypeUuid", p.get("code")) for p in sim.state.plans] == ["FILTER-10", LUBE]
    assert len(sim.state.work_orders) == 1


async def test_not_found_inside_bad_request_is_explained_and_kept_verbatim(
    sim: AmageSim, backend: AmageBackend
) -> None:
    sim.state.check_references = True  # no type is known to this AMAGE
    delivery = await backend.deliver(make_item(extra={"type_uuid": TYPE}))
    assert delivery.outcome is Outcome.DEAD
    assert delivery.status_code == 400
    assert delivery.details == {
        "uuid": "",
        "success": False,
        "errorCode": "NOT_FOUND",
        "message": f"Record of type type with uuid {TYPE} was not found",
    }
    assert delivery.error.startswith("AMAGE HTTP 400: a record the request refers to does not exist in AMAGE")
    assert "type_uuid" in delivery.error
    assert sim.state.work_orders == {}


async def test_a_bad_request_is_a_dead_letter_with_the_message_kept(
    sim: AmageSim, backend: AmageBackend
) -> None:
    delivery = await backend.deliver(make_item(extra={"state": "open"}))
    assert delivery.outcome is Outcome.DEAD
    assert delivery.error == (
        "AMAGE HTTP 400 (BAD_REQUEST): Field 'stateName' must be one of "
        "NEW, SCHEDULED, IN_PROGRESS, ON_HOLD, FINISHED, VOID"
    )
    assert delivery.details["success"] is False


@pytest.mark.parametrize(
    ("fault", "error_part", "retry_after"),
    [
        (Fault("error", status=500), "HTTP 500", None),
        (Fault("error", status=503), "HTTP 503", None),
        (Fault("rate_limit", retry_after=7), "HTTP 429", 7.0),
        (Fault("timeout", delay_s=5.0), "read timeout", None),
    ],
    ids=["500", "503", "429", "timeout"],
)
async def test_server_and_network_troubles_are_retried(
    sim: AmageSim, backend: AmageBackend, fault: Fault, error_part: str, retry_after: float | None
) -> None:
    sim.state.faults.add(fault)
    delivery = await backend.deliver(make_item())
    assert delivery.outcome is Outcome.RETRY
    assert error_part in delivery.error
    assert delivery.retry_after_s == retry_after
    assert sim.state.work_orders == {}
    assert (await backend.deliver(make_item())).outcome is Outcome.DONE


async def test_slow_answers_still_succeed(sim: AmageSim, backend: AmageBackend) -> None:
    sim.state.faults.add(Fault("latency", delay_s=0.1))
    assert (await backend.deliver(make_item())).outcome is Outcome.DONE


async def test_an_unreachable_server_is_retried(free_port: Any) -> None:
    config = AmageConfig(
        kind="amage",
        url=f"http://127.0.0.1:{free_port()}",
        device_uuid=DEVICE,
        api_key=KEY,
        key_secret=SECRET,
    )
    amage = AmageBackend(config, gateway_id="gw", clock=ManualClock())
    try:
        info = await amage.start()
        delivery = await amage.deliver(make_item())
    finally:
        await amage.aclose()
    assert info.timezone == "UTC"
    assert delivery.outcome is Outcome.RETRY
    assert "cannot connect" in delivery.error
    assert delivery.maybe_committed is False


async def test_an_unknown_endpoint_is_a_dead_letter(sim: AmageSim) -> None:
    amage = AmageBackend(
        make_config(sim, base_path="/rest/amage/v2/nothing"), gateway_id="gw", clock=ManualClock()
    )
    try:
        delivery = await amage.deliver(make_item())
    finally:
        await amage.aclose()
    assert delivery.outcome is Outcome.DEAD
    assert delivery.status_code == 404
    assert "No such endpoint: /rest/amage/v2/nothing/add" in delivery.error


async def test_a_server_that_does_not_answer_like_amage_pauses() -> None:
    def portal(request: httpx.Request) -> httpx.Response:  # e.g. a proxy's login page
        return httpx.Response(200, text="<html>Please log in</html>")

    config = AmageConfig(
        kind="amage", url="http://amage.invalid", device_uuid=DEVICE, api_key=KEY, key_secret=SECRET
    )
    amage = AmageBackend(config, gateway_id="gw", clock=ManualClock(), transport=httpx.MockTransport(portal))
    try:
        delivery = await amage.deliver(make_item())
    finally:
        await amage.aclose()
    assert delivery.outcome is Outcome.PAUSE
    assert "without an AMAGE result object" in delivery.error


def test_a_bad_sign_template_is_a_config_error() -> None:
    with pytest.raises(ValueError, match=r"bad sign_template '\{path\}\{secret\}'"):
        AmageConfig(kind="amage", url="http://x", device_uuid=DEVICE, api_key=KEY, key_secret=SECRET,
                    sign_template="{path}{secret}")  # fmt: skip


PRESS_ASSET = "7d1e0c2b-5a4f-4e3d-9c8b-2a1f0e9d8c7b"


async def test_equipment_mapped_to_a_resource_joins_the_resource_plan(sim: AmageSim) -> None:
    amage = AmageBackend(
        make_config(sim, assets={"EQ-PRESS-01": PRESS_ASSET}), gateway_id="press-line-1", clock=ManualClock()
    )
    try:
        item = make_item()
        delivery = await amage.deliver(item)
    finally:
        await amage.aclose()
    assert delivery.outcome is Outcome.DONE, delivery.error
    assert [(p["workOrder"], p["asset"]) for p in sim.state.asset_plans] == [(item.firing_uuid, PRESS_ASSET)]
    join = sim.state.requests[1]
    assert join.path.endswith(f"/asset-plan/{item.firing_uuid}/join-asset-to-plan-by-uuid/{PRESS_ASSET}")
    assert delivery.request is not None and delivery.request["asset_plan"]["path"] == join.path
    assert "equipment: EQ-PRESS-01" in sim.state.work_orders[item.firing_uuid]["notes"]  # still traced


async def test_unmapped_equipment_is_only_named_in_the_notes(sim: AmageSim, backend: AmageBackend) -> None:
    item = make_item()
    assert (await backend.deliver(item)).outcome is Outcome.DONE
    assert sim.state.asset_plans == []
    assert "equipment: EQ-PRESS-01" in sim.state.work_orders[item.firing_uuid]["notes"]


async def test_a_join_whose_answer_was_lost_is_not_repeated_into_an_error(sim: AmageSim) -> None:
    config = make_config(sim, assets={"EQ-PRESS-01": PRESS_ASSET})
    item = make_item()
    sim.state.faults.add(Fault("commit_lost", path="/join-asset-to-plan-by-uuid/"))
    amage = AmageBackend(config, gateway_id="press-line-1", clock=ManualClock())
    try:
        first = await amage.deliver(item)
        assert first.outcome is Outcome.RETRY
        assert "joining its resource failed" in first.error and first.remote_id == item.firing_uuid
        second = await amage.deliver(dataclasses.replace(item, attempts=1))
        assert second.outcome is Outcome.DONE, second.error  # "already in the plan": ours
    finally:
        await amage.aclose()
    # and after a restart (the row counted as maybe committed): add and join both answer "already", both ours
    restarted = AmageBackend(config, gateway_id="press-line-1", clock=ManualClock())
    try:
        third = await restarted.deliver(dataclasses.replace(item, attempts=2, maybe_committed=1))
    finally:
        await restarted.aclose()
    assert third.outcome is Outcome.DONE, third.error
    assert len(sim.state.work_orders) == 1 and len(sim.state.asset_plans) == 1


async def test_an_unknown_resource_is_a_dead_letter_that_says_so(sim: AmageSim) -> None:
    sim.state.check_references = True
    amage = AmageBackend(
        make_config(sim, assets={"EQ-PRESS-01": PRESS_ASSET}), gateway_id="press-line-1", clock=ManualClock()
    )
    try:
        delivery = await amage.deliver(make_item())
    finally:
        await amage.aclose()
    assert delivery.outcome is Outcome.DEAD
    assert "joining its resource failed" in delivery.error and "NOT_FOUND" in delivery.error
