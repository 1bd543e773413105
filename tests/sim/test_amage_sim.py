"""The AMAGE simulator: what it accepts, what it refuses, its faults and its control API (plain HTTP)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.sim.amage import AmageSim, run_amage_sim

DEVICE = "3f0b6c1e-2d4a-4b8e-9c7f-1a2b3c4d5e6f"
KEY = "sim-key"
SECRET = "sim-secret"

# The seed's sample bodies (002), verbatim.
SEED_WORK_ORDER = json.loads("""{
"uuid": "f25e62ea-0100-4f4e-aad2-853cf48df2b9",
"name": "Order name",
"description": "Order description",
"typeUuid": "f25e62ea-0100-4f4e-aad2-853cf48df2b9",
"stateName": "IN_PROGRESS",
"priorityName": "NORMAL",
"archived": false,
"contractUuid": "f25e62ea-0100-4f4e-aad2-853cf48df2b9",
"contractScopeUuid": "f25e62ea-0100-4f4e-aad2-853cf48df2b9",
    "accountUuid": "f25e62ea-0100-4f4e-aad2-853cf48df2b9",
    "created": "2021-01-01T12:00:00",
    "beginDate": "2021-01-01T12:00:00",
    "deadlineDate": "2021-01-01T12:00:00",
    "notes": "notes",
    "startDate": "2021-01-01T12:00:00",
    "finishDate": "2021-01-01T12:00:00",
    "assignedDepartmentUuid": "f25e62ea-0100-4f4e-aad2-853cf48df2b9",
    "assignedUserUuid": "f25e62ea-0100-4f4e-aad2-853cf48df2b9",
    "assignedContractorUuid": "f25e62ea-0100-4f4e-aad2-853cf48df2b9",
    "verifyUserUuid": "f25e62ea-0100-4f4e-aad2-853cf48df2b9",
    "protocolNumber": "A/23/330/2000",
    "parentUuid": "f25e62ea-0100-4f4e-aad2-853cf48df2b9",
    "customerUuid": "f25e62ea-0100-4f4e-aad2-853cf48df2b9",
    "locationUuid": "f25e62ea-0100-4f4e-aad2-853cf48df2b9",
    "placeOfWorkUuid": "f25e62ea-0100-4f4e-aad2-853cf48df2b9",
    "budget": 1000.0,
    "hoursEstimated": 10.0,
    "workAmount": 100.0,
    "workAmountUnit": "meters",
    "workUnitMinutesTotal": 150.0,
    "workUnitMinutes": 100.0,
    "workUnitPrice": 156.0
}""")
SEED_PLAN = json.loads("""{
    "workOrderUuid":"1c4066e6-cdd6-4903-803a-b6bffe689527",
    "elementTypeUuid":"1c4066e6-cdd6-4903-803a-b6bffe689527",
    "itemCount":10.0,
    "category":"category",
    "code":"code"
}""")
ADD = "/rest/amage/v1/work-orders/add"


def signed(path: str, *, prefix: str = "amage-", secret: str = SECRET) -> dict[str, str]:
    return {
        f"{prefix}device-uuid": DEVICE,
        f"{prefix}api-key": KEY,
        f"{prefix}api-sign": hashlib.sha256((path + secret).encode()).hexdigest(),
    }


@pytest.fixture
async def sim() -> AsyncIterator[AmageSim]:
    async with run_amage_sim(device_uuid=DEVICE, api_key=KEY, key_secret=SECRET) as running:
        yield running


@pytest.fixture
async def client(sim: AmageSim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, timeout=5.0) as http:
        yield http


async def post(client: httpx.AsyncClient, path: str, body: Any, **sign_options: Any) -> httpx.Response:
    return await client.post(path, json=body, headers=signed(path, **sign_options))


async def test_the_seed_work_order_and_plan_are_accepted(sim: AmageSim, client: httpx.AsyncClient) -> None:
    parent = {"uuid": "f25e62ea-0100-4f4e-aad2-853cf48df2b9", "name": "parent"}
    wo = "1c4066e6-cdd6-4903-803a-b6bffe689527"
    assert (await post(client, ADD, {"uuid": wo, "name": "for the plan"})).status_code == 200
    response = await post(client, ADD, SEED_WORK_ORDER)
    assert response.status_code == 400  # its parentUuid names a work order that does not exist yet
    assert response.json()["errorCode"] == "NOT_FOUND"
    other = {**SEED_WORK_ORDER, "uuid": "2b6e1f0a-0000-4000-8000-000000000001"}
    assert (await post(client, ADD, parent)).status_code == 200
    response = await post(client, ADD, other)
    assert response.status_code == 200
    assert response.json() == {
        "id": 1003,
        "uuid": other["uuid"],
        "success": True,
        "errorCode": 0,
        "message": "",
    }
    plan_path = f"/rest/amage/v1/work-orders/add-workorder-elementtype-plan/{wo}"
    response = await post(client, plan_path, SEED_PLAN)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["uuid"] == sim.state.plans[0]["uuid"]
    assert sim.state.plans[0]["workOrder"] == wo


async def test_unprefixed_headers_are_accepted(client: httpx.AsyncClient) -> None:
    response = await post(client, ADD, {"name": "x"}, prefix="")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing API signature headers"),
        (signed(ADD, secret="wrong"), "Invalid API signature"),
        ({**signed(ADD), "amage-api-key": "other"}, "Unknown device or API key"),
        (signed("/other/path"), "Invalid API signature"),
    ],
    ids=["unsigned", "wrong-secret", "wrong-key", "signed-another-path"],
)
async def test_bad_signatures_get_401(
    sim: AmageSim, client: httpx.AsyncClient, headers: dict[str, str], message: str
) -> None:
    response = await client.post(ADD, json={"name": "x"}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"uuid": "", "success": False, "errorCode": "UNAUTHORIZED", "message": message}
    assert sim.state.work_orders == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "x", "equipment": "EQ-1"}, "Unrecognized field(s): equipment"),
        ({"description": "no name"}, "Field 'name' is required"),
        ({"name": "x", "uuid": "not-a-uuid"}, "Field 'uuid' must be a UUID"),
        ({"name": "x", "beginDate": "2021-01-01T12:00:00+01:00"}, "must be a date like 2021-01-01T12:00:00"),
        ({"name": "x", "stateName": "OPEN"}, "Field 'stateName' must be one of"),
        ({"name": "x", "priorityName": "URGENT"}, "Field 'priorityName' must be one of LOW, NORMAL, HIGH"),
        ({"name": "x", "budget": "1000"}, "Field 'budget' must be a number"),
        ({"name": "x", "archived": "no"}, "Field 'archived' must be a boolean"),
        ({"name": "x", "typeUuid": "T-1"}, "Field 'typeUuid' must be a UUID"),
        (["not", "an", "object"], "The request body must be a JSON object"),
    ],
)
async def test_invalid_work_orders_get_400_with_a_message(
    sim: AmageSim, client: httpx.AsyncClient, body: Any, message: str
) -> None:
    response = await post(client, ADD, body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["success"] is False and answer["errorCode"] == "BAD_REQUEST"
    assert message in answer["message"]
    assert sim.state.work_orders == {}


async def test_a_duplicate_uuid_is_refused_and_names_the_existing_order(
    sim: AmageSim, client: httpx.AsyncClient
) -> None:
    body = {"uuid": "9d2f3a4b-0000-4000-8000-000000000009", "name": "once"}
    first = (await post(client, ADD, body)).json()
    response = await post(client, ADD, {**body, "name": "twice"})
    assert response.status_code == 400
    assert response.json() == {
        "id": first["id"],
        "uuid": body["uuid"],
        "success": False,
        "errorCode": "BAD_REQUEST",
        "message": f"Work order with uuid {body['uuid']} already exists",
    }
    assert sim.state.work_orders[body["uuid"]]["name"] == "once"


async def test_references_are_checked_once_records_are_declared(
    sim: AmageSim, client: httpx.AsyncClient
) -> None:
    user = "7e1d0c2b-0000-4000-8000-000000000007"
    assert (await client.post("/_sim/records", json={"user": [user]})).status_code == 200
    ok = await post(client, ADD, {"name": "x", "assignedUserUuid": user})
    missing = await post(client, ADD, {"name": "y", "assignedDepartmentUuid": user})
    assert ok.status_code == 200
    assert missing.status_code == 400
    assert missing.json()["errorCode"] == "NOT_FOUND"
    assert missing.json()["message"] == f"Record of type department with uuid {user} was not found"
    bad = await client.post("/_sim/records", json={"spaceship": [user]})
    assert bad.status_code == 400


async def test_plan_lines_need_an_existing_work_order_and_a_positive_count(client: httpx.AsyncClient) -> None:
    wo = "4a4a4a4a-0000-4000-8000-000000000004"
    path = f"/rest/amage/v1/work-orders/add-workorder-elementtype-plan/{wo}"
    missing = await post(client, path, {"code": "LUBE", "itemCount": 1})
    assert missing.json()["errorCode"] == "NOT_FOUND"
    await post(client, ADD, {"uuid": wo, "name": "x"})
    for body, message in [
        ({"code": "LUBE", "itemCount": 0}, "Field 'itemCount' must be a positive number"),
        ({"itemCount": 1}, "Field 'elementTypeUuid' or 'code' is required"),
        ({"code": "LUBE", "itemCount": 1, "workOrderUuid": SEED_PLAN["workOrderUuid"]}, "does not match"),
        ({"code": "LUBE", "itemCount": 1, "article": "x"}, "Unrecognized field(s): article"),
    ]:
        response = await post(client, path, body)
        assert (response.status_code, message in response.json()["message"]) == (400, True), body
    assert (await post(client, path, {"code": "LUBE", "itemCount": 2.5})).status_code == 200


async def test_unknown_endpoints_and_methods(client: httpx.AsyncClient) -> None:
    path = "/rest/amage/v1/work-orders/edit/4a4a4a4a-0000-4000-8000-000000000004"
    assert (await post(client, path, {"name": "x"})).status_code == 404
    response = await client.get(ADD, headers=signed(ADD))
    assert response.status_code == 405


async def test_faults_from_the_control_api(sim: AmageSim, client: httpx.AsyncClient) -> None:
    faults = [
        {"kind": "rate_limit", "retry_after": 3},
        {"kind": "error", "status": 502, "path": "/add"},
        {"kind": "commit_lost", "delay_s": 0.05},
    ]
    assert (await client.post("/_sim/faults", json=faults)).status_code == 200
    limited = await post(client, ADD, {"name": "a"})
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "3")
    assert (await post(client, ADD, {"name": "b"})).status_code == 502
    lost = await post(client, ADD, {"name": "c"})
    assert lost.status_code == 504
    assert [wo["name"] for wo in sim.state.work_orders.values()] == [
        "c"
    ]  # committed although the answer was lost
    assert (await post(client, ADD, {"name": "d"})).status_code == 200
    assert (await client.post("/_sim/faults", json={"kind": "meteor"})).status_code == 400
    assert (await client.post("/_sim/faults", json={"kind": "timeout"})).json()["faults"][0][
        "kind"
    ] == "timeout"
    assert (await client.delete("/_sim/faults")).json() == {"faults": []}

    requests = (await client.get("/_sim/requests")).json()
    assert [r["status"] for r in requests] == [429, 502, 504, 200]
    assert requests[0]["json"] == {"name": "a"}
    state = (await client.get("/_sim/state")).json()
    assert len(state["work_orders"]) == 2 and state["requests"] == 4
    assert (await client.post("/_sim/reset")).status_code == 200
    assert sim.state.work_orders == {} and sim.state.requests == []


async def test_a_hanging_request_ends_when_the_simulator_stops() -> None:
    async with run_amage_sim() as sim, httpx.AsyncClient(base_url=sim.url, timeout=0.2) as client:
        sim.state.faults.add_json({"kind": "timeout"})
        with pytest.raises(httpx.ReadTimeout):
            await client.post(ADD, json={"name": "x"})
    # leaving the block did not wait the fault's 30 s: the hang is released on shutdown


async def test_the_resource_plan_join(sim: AmageSim, client: httpx.AsyncClient) -> None:
    # seed 002 "Linking an existing resource to a work order":
    # POST /asset-plan/{work-order-uuid}/join-asset-to-plan-by-uuid/{uuid}
    wo, asset = "1c4066e6-cdd6-4903-803a-b6bffe689527", "f25e62ea-0100-4f4e-aad2-853cf48df2b9"
    join = f"/rest/amage/v1/work-orders/asset-plan/{wo}/join-asset-to-plan-by-uuid/{asset}"
    missing = await client.post(join, headers=signed(join))
    assert (missing.status_code, missing.json()["errorCode"]) == (400, "NOT_FOUND")  # no such work order
    assert (await post(client, ADD, {"uuid": wo, "name": "for the plan"})).status_code == 200
    joined = await client.post(join, headers=signed(join))
    assert joined.status_code == 200
    assert set(joined.json()) == {"id", "uuid", "success", "errorCode", "message"}  # the seed's result object
    assert sim.state.asset_plans == [{"uuid": joined.json()["uuid"], "workOrder": wo, "asset": asset}]
    # "If a resource is added multiple times to a given work order, the query will return an error."
    again = await client.post(join, headers=signed(join))
    assert (again.status_code, again.json()["success"]) == (400, False)
    assert "already in the plan" in again.json()["message"]
    sim.state.add_records("asset", ["2b6e1f0a-0000-4000-8000-000000000001"])
    sim.state.check_references = True
    other = join.replace(asset, "3c7f2a1b-0000-4000-8000-000000000002")
    unknown = await client.post(other, headers=signed(other))
    assert (unknown.status_code, unknown.json()["errorCode"]) == (400, "NOT_FOUND")
