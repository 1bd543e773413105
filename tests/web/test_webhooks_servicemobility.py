"""POST /webhooks/servicemobility/InventoryUsage over real HTTP: envelope, dedupe by id, JWT, consumption."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from gateway.core.clock import ManualClock
from tests.web.webhook_server import SM_PATH, running_receiver

JWT_KEY = "sm-shared-secret-with-enough-bytes-32"


def signed() -> dict[str, str]:
    """A valid x-access-token: the route is open only with a JWT key configured (issue 18.9)."""
    claims = {"sub": "servicemobility", "exp": int(time.time()) + 600}
    return {"x-access-token": jwt.encode(claims, JWT_KEY, algorithm="HS256")}


def envelope(
    event_id: str,
    *,
    work_order: str = "WO-1001",
    module: str = "1002",
    items: list[dict[str, Any]] | None = None,
    kind: str = "InventoryUsage",
) -> bytes:
    usage = {
        "UserID": "tech7",
        "ModifiedUTC": "2026-01-02T10:00:00Z",
        "RefModule": module,
        "RefObjID": work_order,
        "StorageLocations": [
            {
                "StorageLocationID": "VAN-7",
                "Items": items
                if items is not None
                else [
                    {
                        "BatchNum": "",
                        "DispositionReasons": [],
                        "InQty": 0.0,
                        "InventoryDamagedQty": 0.0,
                        "InventoryQty": 4.0,
                        "OutQty": 2.0,
                        "ProdNum": "LUBE-5L",
                        "ReportedDamagedQty": 0.0,
                        "SerialNum": "",
                    },
                    {"InQty": 1.0, "OutQty": 0.0, "ProdNum": "FILTER-10", "InventoryQty": 3.0},
                ],
            }
        ],
    }
    return json.dumps(
        {
            "id": event_id,
            "type": kind,
            "specversion": "1.0",
            "source": "5ad09380-8258-4d84-a440-e2d35043ae92",
            "subject": None,
            "time": "2022-07-27T23:10:12.000Z",
            "datacontenttype": "application/json",
            "action": "",
            "data": {"rowver": "", "rows": [{"rowver": "1", "InventoryUsage": usage}]},
        }
    ).encode()


@pytest.mark.parametrize("path", [SM_PATH, SM_PATH + "/"])
async def test_inventory_usage_is_recorded_as_consumption_once(
    tmp_path: Path, free_port: Callable[[], int], path: str
) -> None:
    async with (
        running_receiver(tmp_path, free_port(), servicemobility_jwt_key=JWT_KEY) as gw,
        httpx.AsyncClient() as client,
    ):
        body = envelope("f0facfbb-e945-4b90-977d-1671bc0c60ab")
        first = await client.post(gw.url + path, content=body, headers=signed())
        again = await client.post(gw.url + path, content=body, headers=signed())
        assert (first.status_code, again.status_code) == (200, 200)
        assert (first.json()["status"], again.json()["status"]) == ("stored", "duplicate")
        moves = await gw.store.ledger.movements(task_ids=["WO-1001"])
        assert [(m.kind, m.article, m.quantity, m.source) for m in moves] == [
            ("consumed", "LUBE-5L", 2.0, "servicemobility"),
            ("canceled", "FILTER-10", -1.0, "servicemobility"),
        ]
        assert await gw.count() == 1


async def test_other_modules_and_types_are_stored_not_counted(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    async with (
        running_receiver(tmp_path, free_port(), servicemobility_jwt_key=JWT_KEY) as gw,
        httpx.AsyncClient() as client,
    ):
        transfer = await client.post(
            gw.url + SM_PATH, content=envelope("e1", module="1003"), headers=signed()
        )
        work_order = await client.post(
            gw.url + SM_PATH, content=envelope("e2", kind="WorkOrder"), headers=signed()
        )
        assert (transfer.status_code, work_order.status_code) == (200, 200)
        assert await gw.store.ledger.movements() == []
        assert [(e["event"], e["known"]) for e in await gw.store.ledger.events()] == [
            ("InventoryUsage", True),
            ("WorkOrder", False),
        ]


async def test_access_token_is_verified_when_a_key_is_set(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    now = int(time.time())
    good = jwt.encode({"sub": "servicemobility", "exp": now + 600}, JWT_KEY, algorithm="HS256")
    expired = jwt.encode({"sub": "servicemobility", "exp": now - 600}, JWT_KEY, algorithm="HS256")
    forged = jwt.encode({"sub": "servicemobility"}, "another-key-also-long-enough-32b", algorithm="HS256")
    async with (
        running_receiver(tmp_path, free_port(), servicemobility_jwt_key=JWT_KEY) as gw,
        httpx.AsyncClient() as client,
    ):
        codes = []
        for n, token in enumerate((None, "not-a-jwt", expired, forged, good)):
            headers = {} if token is None else {"x-access-token": token}
            r = await client.post(gw.url + SM_PATH, content=envelope(f"id-{n}"), headers=headers)
            codes.append(r.status_code)
        assert codes == [401, 401, 401, 401, 200]
        assert await gw.count() == 1


async def test_the_token_times_are_checked_against_the_gateway_clock(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """The injected clock, like the Mobility Work signature (before: time.time(), so a test clock or a
    relayed webhook's reception time was ignored)."""
    clock = ManualClock(time.time() - 86_400)  # the gateway's clock: a day behind the wall clock
    by_clock = jwt.encode({"exp": int(clock.now()) + 600}, JWT_KEY, algorithm="HS256")
    by_wall = jwt.encode({"exp": int(time.time()) + 600}, JWT_KEY, algorithm="HS256")
    async with (
        running_receiver(tmp_path, free_port(), clock=clock, servicemobility_jwt_key=JWT_KEY) as gw,
        httpx.AsyncClient() as client,
    ):
        codes = []
        for n, token in enumerate((by_clock, by_wall)):
            headers = {"x-access-token": token}
            r = await client.post(gw.url + SM_PATH, content=envelope(f"id-{n}"), headers=headers)
            codes.append(r.status_code)
        assert codes == [200, 401]


async def test_bad_envelopes_get_400(tmp_path: Path, free_port: Callable[[], int]) -> None:
    async with (
        running_receiver(tmp_path, free_port(), servicemobility_jwt_key=JWT_KEY) as gw,
        httpx.AsyncClient() as client,
    ):
        for bad in (b"{", b"[]", b'{"type": "InventoryUsage"}', b'{"id": "", "type": "InventoryUsage"}'):
            r = await client.post(gw.url + SM_PATH, content=bad, headers=signed())
            assert r.status_code == 400, bad
        # Odd data inside a proper envelope is stored, never a 500.
        odd = json.dumps(
            {
                "id": "odd",
                "type": "InventoryUsage",
                "data": {
                    "rows": [
                        1,
                        None,
                        {"InventoryUsage": 3},
                        {
                            "InventoryUsage": {
                                "RefModule": 1002,
                                "StorageLocations": [
                                    {
                                        "Items": [
                                            {"ProdNum": "X", "OutQty": "2"},
                                            {"ProdNum": None, "OutQty": 1},
                                        ]
                                    }
                                ],
                            }
                        },
                    ]
                },
            }
        ).encode()
        r = await client.post(gw.url + SM_PATH, content=odd, headers=signed())
        assert r.status_code == 200
        assert [(m.article, m.quantity, m.task_id) for m in await gw.store.ledger.movements()] == [
            ("X", 2.0, None)
        ]


async def test_without_a_jwt_key_the_route_is_not_there(tmp_path: Path, free_port: Callable[[], int]) -> None:
    """Issue 18.9: with only the Mobility Work secret set, a forged POST stored 999 x LUBE-5L on a task."""
    async with (
        running_receiver(tmp_path, free_port(), webhook_secret="whsec-mw-only") as gw,
        httpx.AsyncClient() as client,
    ):
        items = [{"ProdNum": "LUBE-5L", "OutQty": 999.0, "InQty": 0.0}]
        for path in (SM_PATH, SM_PATH + "/"):
            r = await client.post(gw.url + path, content=envelope("forged", items=items), headers=signed())
            assert r.status_code == 404
        assert await gw.count() == 0
        assert await gw.store.ledger.movements() == []
