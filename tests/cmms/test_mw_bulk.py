"""The typed bulk client against the simulator: chunking, amounts, UNSET vs null, outcomes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from pydantic import SecretStr

from gateway.cmms.mw_bulk import (
    UNSET,
    CustomField,
    EquipmentUpdate,
    MobilityWorkBulk,
    Money,
    NewEquipment,
    NewLocation,
    NewSparePart,
    Relocation,
    SparePartUpdate,
    StockLevel,
    TagChange,
    chunks,
    currency_exponent,
    to_minor_units,
)
from gateway.cmms.schema import HttpClientOptions, MobilityWorkConfig
from gateway.core.delivery import Outcome
from gateway.sim.mobility_work import Fault, MobilityWorkSim, run_mobility_work_sim

KEY = "bulk-key"


@pytest.fixture
async def sim() -> AsyncIterator[MobilityWorkSim]:
    async with run_mobility_work_sim(api_key=KEY) as s:
        yield s


@pytest.fixture
async def bulk(sim: MobilityWorkSim) -> AsyncIterator[MobilityWorkBulk]:
    config = MobilityWorkConfig(
        kind="mobility_work",
        url=sim.url,
        api_key=SecretStr(KEY),
        http=HttpClientOptions(connect_timeout=1, read_timeout=10),
    )
    async with MobilityWorkBulk(config, gateway_id="gw1", retries=1, backoff_s=0.01) as client:
        yield client


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        (Decimal("35.00"), "EUR", 3500),
        ("499.99", "USD", 49999),
        (10, "EUR", 1000),
        (1500, "JPY", 1500),
        ("1.234", "KWD", 1234),
        ("0.005", "EUR", 1),  # half up
        (19.99, "eur", 1999),  # floats go through their shortest repr, not binary noise
    ],
)
def test_minor_units(amount: object, currency: str, minor: int) -> None:
    assert to_minor_units(amount, currency) == minor  # type: ignore[arg-type]


def test_bad_amounts_and_currencies() -> None:
    with pytest.raises(ValueError):
        to_minor_units("ten", "EUR")
    with pytest.raises(ValueError):
        to_minor_units("NaN", "EUR")
    with pytest.raises(ValueError):
        currency_exponent("EURO")


def test_chunks_limits() -> None:
    assert [len(c) for c in chunks(list(range(25_001)))] == [10_000, 10_000, 5_001]
    with pytest.raises(ValueError):
        list(chunks([1], 10_001))


async def test_25001_stock_changes_make_3_requests(sim: MobilityWorkSim, bulk: MobilityWorkBulk) -> None:
    items = [StockLevel(f"SP{n:06d}", n % 50) for n in range(25_001)]
    result = await bulk.update_stock(items)
    assert result.ok and result.requests == 3 and result.items == 25_001
    assert [len(b.items) for b in sim.state.bulk] == [10_000, 10_000, 5_001]
    assert {r.method for r in sim.state.requests} == {"PUT"}
    assert sim.state.bulk[2].items[-1] == {
        "id": {"type": "externalReference", "value": "SP025000"},
        "quantity": 0,
    }


async def test_create_spare_parts_amounts_in_lowest_unit(
    sim: MobilityWorkSim, bulk: MobilityWorkBulk
) -> None:
    result = await bulk.create_spare_parts(
        [
            NewSparePart(
                "my-ref-sp-min",
                "SP min",
                Money("420.00", "EUR"),
                "building #1",
                33,
                description="New spare part with minimum info",
            ),
            NewSparePart(
                "my-ref-sp-all",
                "SP complete",
                Money(Decimal("90"), "USD"),
                "building #1",
                806,
                description="New spare part with all info",
                minimum_stock=10,
                maximum_stock=1000,
                gtin="9782070363513",
                cost_center="stock",
            ),
        ]
    )
    assert result.ok
    # The document's own request sample, field for field.
    assert sim.state.bulk[0].items == [
        {
            "externalReference": "my-ref-sp-min",
            "name": "SP min",
            "unitPrice": {"amount": 42000, "currency": "EUR"},
            "currentStock": {"location": "building #1", "quantity": 33},
            "description": "New spare part with minimum info",
        },
        {
            "externalReference": "my-ref-sp-all",
            "name": "SP complete",
            "unitPrice": {"amount": 9000, "currency": "USD"},
            "currentStock": {"location": "building #1", "quantity": 806},
            "description": "New spare part with all info",
            "minimumStock": 10,
            "maximumStock": 1000,
            "gtin": "9782070363513",
            "costCenter": "stock",
        },
    ]


async def test_update_spare_parts_unset_vs_null(sim: MobilityWorkSim, bulk: MobilityWorkBulk) -> None:
    result = await bulk.update_spare_parts(
        [
            SparePartUpdate("c6d6f829-6c36-30cc-93be-d5202ca28aa4", name="Rotor"),
            SparePartUpdate("c6d6f829-6c36-30cc-93be-d5202ca28aa4", minimum_stock=None),
            SparePartUpdate("d8194f1f-050d-4f74-a592-2d541e6127aa", unit_price=Money("499.99", "USD")),
            SparePartUpdate(
                "NX-01", tags=(TagChange("add", ("transport", "heavy")), TagChange("remove", ("rubber",)))
            ),
            SparePartUpdate(
                "my-ref-sp-all", custom_fields=(CustomField("$manufacturer", "Siemens"),), cost_center=UNSET
            ),
        ]
    )
    assert result.ok
    ref = {"type": "externalReference", "value": "c6d6f829-6c36-30cc-93be-d5202ca28aa4"}
    items = sim.state.bulk[0].items
    assert items[0] == {"id": ref, "name": "Rotor"}
    assert items[1] == {"id": ref, "minimumStock": None}
    assert items[2]["unitPrice"] == {"amount": 49999, "currency": "USD"}
    assert items[3]["tags"] == [
        {"operation": "add", "values": ["transport", "heavy"]},
        {"operation": "remove", "values": ["rubber"]},
    ]
    assert items[4] == {
        "id": {"type": "externalReference", "value": "my-ref-sp-all"},
        "customFields": [{"field": "$manufacturer", "value": "Siemens"}],
    }


async def test_equipment_locations_relocation(sim: MobilityWorkSim, bulk: MobilityWorkBulk) -> None:
    assert (await bulk.create_equipment([NewEquipment("Press 1", item_code="EQ-0001", tags=("press",))])).ok
    assert (
        await bulk.update_equipment(
            [
                EquipmentUpdate(2507, description="my equipment with all info"),
                EquipmentUpdate("my-item-code", custom_fields=()),
            ]
        )
    ).ok
    assert (await bulk.create_locations([NewLocation("Aisle 2"), NewLocation("Aisle 3")])).ok
    assert (await bulk.relocate_spare_parts([Relocation("SP987678", to="Aisle 3", from_="Aisle 2")])).ok
    paths = [b.path for b in sim.state.bulk]
    assert paths == [
        "/partners/v1/equipments",
        "/partners/v1/equipment/attributes",
        "/partners/v1/locations/create/bulk",
        "/partners/v1/spare-parts/relocate/bulk",
    ]
    assert sim.state.bulk[0].items == [
        {"name": "Press 1", "itemCode": "EQ-0001", "private": True, "tags": ["press"]}
    ]
    assert sim.state.bulk[1].items[0]["id"] == {"type": "native", "value": 2507}
    assert sim.state.bulk[1].items[1] == {
        "id": {"type": "external", "value": "my-item-code"},
        "customFields": [],
    }
    assert sim.state.bulk[3].items == [
        {
            "id": {"type": "externalReference", "value": "SP987678"},
            "from": {"name": "Aisle 2"},
            "to": {"name": "Aisle 3"},
        }
    ]


async def test_invalid_item_is_dead_with_pointer(sim: MobilityWorkSim, bulk: MobilityWorkBulk) -> None:
    result = await bulk.create_spare_parts([NewSparePart("r", "ab", Money("1", "EUR"), "b1", 1)])
    assert not result.ok and result.failures()[0][1].outcome is Outcome.DEAD
    errors = result.deliveries[0].details["extended_message"]["property_errors"]
    assert errors == {
        "/0/name": [{"messageKey": "error.payload.min_length", "parameters": {"min": 3, "length": 2}}]
    }


async def test_starter_plan_is_refused_stock_updates(sim: MobilityWorkSim, bulk: MobilityWorkBulk) -> None:
    sim.state.plan = "starter"
    result = await bulk.update_stock([StockLevel("A", 1)] * 3)
    assert result.deliveries[0].outcome is Outcome.PAUSE and result.deliveries[0].status_code == 403


async def test_pause_stops_remaining_chunks(sim: MobilityWorkSim) -> None:
    config = MobilityWorkConfig(kind="mobility_work", url=sim.url, api_key=SecretStr("wrong"))
    async with MobilityWorkBulk(config, gateway_id="gw1", chunk_size=2) as client:
        result = await client.create_locations([NewLocation(f"L{n}") for n in range(6)])
    assert result.requests == 1 and result.deliveries[0].outcome is Outcome.PAUSE


async def test_retry_then_success(sim: MobilityWorkSim, bulk: MobilityWorkBulk) -> None:
    sim.set_faults(Fault("http_429", retry_after="0"))
    result = await bulk.create_locations([NewLocation("Aisle 9")])
    assert result.ok and len(sim.state.requests) == 2 and len(sim.state.bulk) == 1
