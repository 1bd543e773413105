"""Each Mobility Work endpoint accepts the identifier types its own text names, and no others (seed 001).

The bodies are the seed's samples, verbatim where the seed gives one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.sim.mobility_work import MobilityWorkSim, run_mobility_work_sim

KEY = "sim-ident-key"

# "Update all spare parts stock": "that format ... is equivalent to ..." (seed 001, verbatim).
SEED_SPARE_PART_PLAIN = json.loads("""[
  {
    "id": "MW-417304e0-2ff0-410d-a7cd-de20439140c8"
  }
]""")
SEED_SPARE_PART_TYPED = json.loads("""[
  {
    "id": {
      "type": "externalReference",
      "value": "MW-417304e0-2ff0-410d-a7cd-de20439140c8"
    }
  }
]""")
# "Update equipment(s) information": the same two forms for an equipment (seed 001, verbatim).
SEED_EQUIPMENT_PLAIN = json.loads("""[
  {
    "id": 2507
  }
]""")
SEED_EQUIPMENT_TYPED = json.loads("""[
  {
    "id": {
      "type": "native",
      "value": 2507
    }
  }
]""")
# "Schedule a new task": the assignees sample, typed form (seed 001, verbatim).
SEED_ASSIGNEES_TYPED = json.loads("""{
  "assignees": [
    {
      "type": "native",
      "value": 3
    },
    {
      "type": "email",
      "value": "john.doe@example.com"
    }
  ]
}""")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    sim: MobilityWorkSim
    async with (
        run_mobility_work_sim(api_key=KEY) as sim,
        httpx.AsyncClient(base_url=sim.url, headers={"Api-Key": KEY}, timeout=5) as c,
    ):
        yield c


def task(equipment: Any) -> dict[str, Any]:
    return {
        "equipment": equipment,
        "description": "API Task creation",
        "startDateTime": "2022-01-11T09:00:00+00:00",
        "endDateTime": "2022-01-11T10:00:00+00:00",
        "allDay": False,
        **SEED_ASSIGNEES_TYPED,
    }


def keys(response: httpx.Response) -> dict[str, list[str]]:
    assert response.status_code == 400, response.text
    errors = response.json()["extended_message"]["property_errors"]
    return {ptr: [e["messageKey"] for e in items] for ptr, items in errors.items()}


@pytest.mark.parametrize(
    "equipment",
    ["EQ-0001", 7111, {"type": "external", "value": "EQ-0001"}, {"type": "native", "value": 7111}],
)
async def test_the_task_endpoint_takes_native_and_external(client: httpx.AsyncClient, equipment: Any) -> None:
    assert (await client.post("/partners/v1/tasks", json=task(equipment))).status_code == 201


@pytest.mark.parametrize("kind", ["externalReference", "code", "email", "itemCode"])
async def test_the_task_endpoint_refuses_other_equipment_types(client: httpx.AsyncClient, kind: str) -> None:
    response = await client.post("/partners/v1/tasks", json=task({"type": kind, "value": "EQ-0001"}))
    assert keys(response) == {"/equipment/type": ["error.payload.identifier.type"]}


async def test_spare_part_ids_are_a_string_or_external_reference(client: httpx.AsyncClient) -> None:
    # The seed's two forms verbatim: the ids are fine, only the (required) quantity is missing.
    for sample in (SEED_SPARE_PART_PLAIN, SEED_SPARE_PART_TYPED):
        response = await client.put("/partners/v1/spare-parts/stock", json=sample)
        assert keys(response) == {"/0/quantity": ["error.payload.required"]}
        accepted = await client.put("/partners/v1/spare-parts/stock", json=[{**sample[0], "quantity": 3}])
        assert accepted.status_code == 202, accepted.text


@pytest.mark.parametrize("kind", ["native", "external"])
async def test_spare_part_ids_refuse_the_types_their_text_does_not_name(
    client: httpx.AsyncClient, kind: str
) -> None:
    item = {"id": {"type": kind, "value": "MW-417304e0-2ff0-410d-a7cd-de20439140c8"}, "quantity": 1}
    response = await client.put("/partners/v1/spare-parts/stock", json=[item])
    assert keys(response) == {"/0/id/type": ["error.payload.identifier.type"]}


async def test_equipment_updates_take_the_equipment_identifier_schema(client: httpx.AsyncClient) -> None:
    for sample in (
        SEED_EQUIPMENT_PLAIN,
        SEED_EQUIPMENT_TYPED,
        [{"id": {"type": "external", "value": "EQ-1"}}],
    ):
        response = await client.post("/partners/v1/equipment/attributes", json=sample)
        assert response.status_code == 202, response.text
    refused = await client.post(
        "/partners/v1/equipment/attributes", json=[{"id": {"type": "externalReference", "value": "EQ-1"}}]
    )
    assert keys(refused) == {"/0/id/type": ["error.payload.identifier.type"]}
