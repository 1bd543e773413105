"""The Mobility Work simulator over real HTTP: validation, faults, webhooks, the control API."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.sim.mobility_work import Fault, MobilityWorkSim, SimUser, main, run_mobility_work_sim
from gateway.web.signature import HEADER, parse_header, sign, signature_matches

KEY = "sim-test-key"
SECRET = "whsec-test"
FIXTURES_ORDER_SAMPLE = {  # the document's request sample
    "equipment": 9,
    "description": "API Task creation",
    "startDateTime": "2022-01-11T09:00:00+00:00",
    "endDateTime": "2022-01-11T10:00:00+00:00",
    "allDay": False,
    "assignees": [3, "john.doe@example.com"],
}


@pytest.fixture
async def sim() -> AsyncIterator[MobilityWorkSim]:
    async with run_mobility_work_sim(api_key=KEY) as s:
        yield s


@pytest.fixture
async def client(sim: MobilityWorkSim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, headers={"Api-Key": KEY}, timeout=5) as c:
        yield c


def task(**changes: Any) -> dict[str, Any]:
    body = dict(FIXTURES_ORDER_SAMPLE)
    for key, value in changes.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return body


async def errors_of(client: httpx.AsyncClient, body: Any) -> dict[str, Any]:
    r = await client.post("/partners/v1/tasks", json=body)
    assert r.status_code == 400, r.text
    data = r.json()
    assert data["http_status_code"] == 400 and data["code"] == "400044"
    return data["extended_message"]["property_errors"]  # type: ignore[no-any-return]


async def test_the_documents_sample_is_accepted(sim: MobilityWorkSim, client: httpx.AsyncClient) -> None:
    r = await client.post("/partners/v1/tasks", json=FIXTURES_ORDER_SAMPLE)
    assert r.status_code == 201 and r.content == b"null"
    assert sim.state.tasks[0].body == FIXTURES_ORDER_SAMPLE
    assert r.headers["x-sim-task-id"] == sim.state.tasks[0].id and r.headers["request-id"]


async def test_the_documents_400_example_exactly(client: httpx.AsyncClient, sim: MobilityWorkSim) -> None:
    sim.state.strict = True
    sim.state.users = [SimUser(3, "ee84d563-da9c-47ee-a79f-7147814509e0", "someone@example.com", "A", "B")]
    r = await client.post(
        "/partners/v1/tasks",
        json=task(
            equipment=99999, description="x", assignees=["jason.doe@example.com", "john.doe@example.com"]
        ),
    )
    assert r.status_code == 400
    assert r.text == json.dumps(
        {
            "http_status_code": 400,
            "code": "400044",
            "message": "The request payload is not valid.",
            "extended_message": {
                "global_errors": [],
                "property_errors": {
                    "/description": [
                        {"messageKey": "error.payload.min_length", "parameters": {"min": 3, "length": 1}}
                    ],
                    "/equipment": [
                        {
                            "messageKey": "error.payload.equipment.unknown",
                            "parameters": {"type": "native", "value": 99999},
                        }
                    ],
                    "/assignees/0": [
                        {
                            "messageKey": "error.payload.assignees.unknown",
                            "parameters": {"type": "email", "value": "jason.doe@example.com"},
                        }
                    ],
                    "/assignees/1": [
                        {
                            "messageKey": "error.payload.assignees.unknown",
                            "parameters": {"type": "email", "value": "john.doe@example.com"},
                        }
                    ],
                },
            },
            "more_info_url": None,
        },
        separators=(",", ":"),
    )  # minified, in the document's order
    assert sim.state.tasks == []


async def test_401_exactly(client: httpx.AsyncClient) -> None:
    expected = (
        '{"http_status_code":401,"code":"401001","message":"Authentication error","extended_message":'
        '{"global_errors":[{"messageKey":"Invalid Api Key.","parameters":{}}],"property_errors":{}},'
        '"more_info_url":null}'
    )
    for headers in ({"Api-Key": "nope"}, {"Api-Key": ""}):
        r = await client.post("/partners/v1/tasks", json=FIXTURES_ORDER_SAMPLE, headers=headers)
        assert (r.status_code, r.text) == (401, expected)
    async with httpx.AsyncClient(base_url=str(client.base_url)) as anonymous:
        r = await anonymous.get("/partners/v1/network/settings")
        assert (r.status_code, r.text) == (401, expected)


async def test_switchable_key(sim: MobilityWorkSim, client: httpx.AsyncClient) -> None:
    sim.set_api_key("new")
    assert (await client.get("/partners/v1/network/settings")).status_code == 401
    r = await client.post("/_sim/key", json={"api_key": KEY})
    assert r.status_code == 200
    assert (await client.get("/partners/v1/network/settings")).json()["timezone"] == "Europe/Paris"


@pytest.mark.parametrize(
    ("changes", "pointer", "key"),
    [
        ({"description": ...}, "/description", "error.payload.required"),
        ({"description": "x" * 3001}, "/description", "error.payload.max_length"),
        ({"description": 42}, "/description", "error.payload.type"),
        ({"equipment": ...}, "/equipment", "error.payload.required"),
        ({"equipment": True}, "/equipment", "error.payload.type"),
        ({"equipment": {"type": "serial", "value": "x"}}, "/equipment/type", "error.payload.identifier.type"),
        (
            {"equipment": {"type": "native", "value": "abc"}},
            "/equipment/value",
            "error.payload.identifier.value",
        ),
        ({"equipment": {"type": "native"}}, "/equipment/value", "error.payload.required"),
        ({"startDateTime": "2022-01-11T09:00:00"}, "/startDateTime", "error.payload.date_time"),
        ({"startDateTime": "11/01/2022 09:00"}, "/startDateTime", "error.payload.date_time"),
        ({"endDateTime": ...}, "/endDateTime", "error.payload.required"),
        ({"endDateTime": "2022-01-11T09:00:00+00:00"}, "/endDateTime", "error.payload.end_before_start"),
        ({"endDateTime": "2022-01-11T10:30:00+02:00"}, "/endDateTime", "error.payload.end_before_start"),
        ({"allDay": ...}, "/allDay", "error.payload.required"),
        ({"allDay": "false"}, "/allDay", "error.payload.type"),
        ({"assignees": ...}, "/assignees", "error.payload.required"),
        ({"assignees": []}, "/assignees", "error.payload.min_items"),
        ({"assignees": "john.doe@example.com"}, "/assignees", "error.payload.type"),
        ({"assignees": ["johndoe"]}, "/assignees/0", "error.payload.identifier.not_inferable"),
        (
            {"assignees": [{"type": "email", "value": "not-an-email"}]},
            "/assignees/0/value",
            "error.payload.identifier.value",
        ),
        (
            {"assignees": [{"type": "code", "value": "x"}]},
            "/assignees/0/type",
            "error.payload.identifier.type",
        ),
        ({"tags": "safety"}, "/tags", "error.payload.type"),
        ({"tags": [{"type": "email", "value": "x"}]}, "/tags/0/type", "error.payload.identifier.type"),
        ({"checklist": "not-a-uuid"}, "/checklist", "error.payload.uuid"),
        ({"sendEmailToAssignees": 1}, "/sendEmailToAssignees", "error.payload.type"),
        ({"inheritEquipmentTags": "yes"}, "/inheritEquipmentTags", "error.payload.type"),
        ({"metadata": [1, 2]}, "/metadata", "error.payload.type"),
        ({"metadata": None}, "/metadata", "error.payload.type"),
        ({"title": "x"}, "/title", "error.payload.unknown_property"),
    ],
)
async def test_task_validation_rules(
    client: httpx.AsyncClient, changes: dict[str, Any], pointer: str, key: str
) -> None:
    errors = await errors_of(client, task(**changes))
    assert pointer in errors, errors
    assert errors[pointer][0]["messageKey"] == key


@pytest.mark.parametrize(
    "changes",
    [
        {"equipment": "EQ-0001"},
        {"equipment": {"type": "external", "value": "EQ-0001"}},
        {"equipment": {"type": "native", "value": 7111}},
        {"assignees": [{"type": "native", "value": 3}, {"type": "email", "value": "a@b.co"}]},
        {"startDateTime": "2022-01-11T10:00:00+01:00", "endDateTime": "2022-01-11T10:00:00Z"},
        {"tags": [5, "safety", {"type": "code", "value": "x"}, {"type": "native", "value": 7}]},
        {"checklist": None},
        {"checklist": "0d9f6c1e-3a57-4b0e-9c1c-2b8a7e0f4d11"},
        {
            "description": "abc",
            "allDay": True,
            "emailToCreator": True,
            "sendEmailToAssignees": True,
            "inheritEquipmentTags": True,
            "metadata": {"firing": "f", "nested": {"a": [1]}},
        },
        {"description": "é" * 3000},
    ],
)
async def test_task_accepted_forms(client: httpx.AsyncClient, changes: dict[str, Any]) -> None:
    r = await client.post("/partners/v1/tasks", json=task(**changes))
    assert r.status_code == 201, r.text


async def test_non_json_and_non_object(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/partners/v1/tasks", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["extended_message"]["global_errors"][0]["messageKey"] == (
        "error.payload.invalid_json"
    )
    r = await client.post("/partners/v1/tasks", content=b"{}", headers={"Content-Type": "text/plain"})
    assert r.json()["extended_message"]["global_errors"][0]["messageKey"] == "error.payload.content_type"
    r = await client.post("/partners/v1/tasks", json=[FIXTURES_ORDER_SAMPLE])
    assert r.status_code == 400 and r.json()["extended_message"]["global_errors"][0]["messageKey"] == (
        "error.payload.type"
    )


async def test_strict_mode_knows_seeded_ids(sim: MobilityWorkSim, client: httpx.AsyncClient) -> None:
    sim.state.strict = True
    assert (
        await client.post("/partners/v1/tasks", json=task(equipment="EQ-0001", assignees=[3]))
    ).status_code == 201
    errors = await errors_of(
        client, task(equipment="EQ-0002", assignees=["john.doe@example.com", 4], tags=["x"])
    )
    assert set(errors) == {"/equipment", "/assignees/1", "/tags/0"}
    r = await client.post(
        "/_sim/seed",
        json={
            "equipment": [{"id": 12, "uuid": "u", "item_code": "EQ-0002", "name": "Pump"}],
            "tags": [{"type": "code", "value": "x"}],
        },
    )
    assert r.status_code == 200
    assert (
        await client.post("/partners/v1/tasks", json=task(equipment="EQ-0002", tags=["x"]))
    ).status_code == 201


async def test_monthly_quota(sim: MobilityWorkSim, client: httpx.AsyncClient) -> None:
    await client.post("/_sim/config", json={"monthly_quota": 2})
    codes = [(await client.post("/partners/v1/tasks", json=task())).status_code for _ in range(3)]
    assert codes == [201, 201, 403] and len(sim.state.tasks) == 2


@pytest.mark.parametrize(
    ("path", "method", "body", "pointer", "key"),
    [
        (
            "/partners/v1/spare-parts",
            "POST",
            [
                {
                    "externalReference": "r",
                    "name": "SP x",
                    "unitPrice": {"amount": 10.5, "currency": "EUR"},
                    "currentStock": {"location": "b", "quantity": 1},
                }
            ],
            "/0/unitPrice/amount",
            "error.payload.type",
        ),
        (
            "/partners/v1/spare-parts",
            "POST",
            [{"name": "SP x"}],
            "/0/externalReference",
            "error.payload.required",
        ),
        (
            "/partners/v1/spare-parts/stock",
            "PUT",
            [{"id": "A", "quantity": -1}],
            "/0/quantity",
            "error.payload.minimum",
        ),
        (
            "/partners/v1/spare-parts/stock",
            "PUT",
            [{"id": 5, "quantity": 1}],
            "/0/id",
            "error.payload.identifier.not_inferable",
        ),
        (
            "/partners/v1/spare-parts/attributes",
            "POST",
            [{"id": "A", "gtin": "12ab"}],
            "/0/gtin",
            "error.payload.pattern",
        ),
        (
            "/partners/v1/spare-parts/attributes",
            "POST",
            [{"id": "A", "tags": [{"operation": "merge", "values": []}]}],
            "/0/tags/0/operation",
            "error.payload.choice",
        ),
        ("/partners/v1/equipments", "POST", [{"name": ""}], "/0/name", "error.payload.min_length"),
        (
            "/partners/v1/equipment/attributes",
            "POST",
            [{"id": 1, "costCenter": "ab"}],
            "/0/costCenter",
            "error.payload.min_length",
        ),
        (
            "/partners/v1/locations/create/bulk",
            "POST",
            [{"name": "-aisle"}],
            "/0/name",
            "error.payload.pattern",
        ),
        ("/partners/v1/spare-parts/relocate/bulk", "POST", [{"id": "A"}], "/0/to", "error.payload.required"),
    ],
)
async def test_bulk_validation(
    client: httpx.AsyncClient, path: str, method: str, body: Any, pointer: str, key: str
) -> None:
    r = await client.request(method, path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["extended_message"]["property_errors"][pointer][0]["messageKey"] == key


async def test_bulk_limits(sim: MobilityWorkSim, client: httpx.AsyncClient) -> None:
    r = await client.post("/partners/v1/locations/create/bulk", json=[])
    assert r.json()["extended_message"]["global_errors"][0]["messageKey"] == "error.payload.min_items"
    r = await client.post(
        "/partners/v1/locations/create/bulk", json=[{"name": f"L{n}"} for n in range(10_001)]
    )
    assert r.json()["extended_message"]["global_errors"][0] == {
        "messageKey": "error.payload.max_items",
        "parameters": {"max": 10_000, "count": 10_001},
    }
    r = await client.post(
        "/partners/v1/locations/create/bulk", json=[{"name": f"L{n}"} for n in range(10_000)]
    )
    assert r.status_code == 202 and r.content == b"null"
    assert len(sim.state.bulk[0].items) == 10_000


# --- faults


async def test_faults_by_count_via_control_api(sim: MobilityWorkSim, client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/_sim/faults",
        json=[
            {"mode": "http_5xx", "count": 2, "status": 502},
            {"mode": "http_429", "count": 1, "retry_after": "7"},
        ],
    )
    assert r.status_code == 200 and len(r.json()["faults"]) == 2
    codes = []
    for _ in range(4):
        resp = await client.post("/partners/v1/tasks", json=task())
        codes.append((resp.status_code, resp.headers.get("retry-after")))
    assert codes == [(502, None), (502, None), (429, "7"), (201, None)]
    assert [r.fault for r in sim.state.requests] == ["http_5xx", "http_5xx", "http_429", None]
    assert len(sim.state.tasks) == 1
    assert (await client.delete("/_sim/faults")).json() == {"faults": []}


async def test_faults_by_probability_are_seeded(sim: MobilityWorkSim, client: httpx.AsyncClient) -> None:
    async def run() -> list[int]:
        sim.set_faults(Fault("http_5xx", probability=0.3, seed=42))
        return [(await client.get("/partners/v1/network/settings")).status_code for _ in range(40)]

    first, second = await run(), await run()
    assert first == second and 0 < first.count(503) < 40


async def test_fault_path_filter(sim: MobilityWorkSim, client: httpx.AsyncClient) -> None:
    sim.set_faults(Fault("http_5xx", path="/partners/v1/tasks", count=1))
    assert (await client.get("/partners/v1/network/settings")).status_code == 200
    assert (await client.post("/partners/v1/tasks", json=task())).status_code == 503


async def test_commit_lost_records_then_drops(sim: MobilityWorkSim, client: httpx.AsyncClient) -> None:
    sim.set_faults(Fault("commit_lost"))
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/partners/v1/tasks", json=task())
    assert len(sim.state.tasks) == 1 and sim.state.requests[-1].status is None


async def test_timeout_hangs_past_the_read_timeout(sim: MobilityWorkSim, client: httpx.AsyncClient) -> None:
    sim.set_faults(Fault("timeout"))
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/partners/v1/tasks", json=task(), timeout=httpx.Timeout(5, read=0.2))
    assert sim.state.tasks == []


async def test_down_refuses_then_comes_back(sim: MobilityWorkSim, client: httpx.AsyncClient) -> None:
    r = await client.post("/_sim/down", json={"seconds": 0.3})
    assert r.json() == {"down_for_s": 0.3}
    for _ in range(100):
        if not sim.is_up:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(httpx.ConnectError):
        await client.get("/partners/v1/network/settings")
    for _ in range(200):
        if sim.is_up:
            break
        await asyncio.sleep(0.01)
    assert (await client.get("/partners/v1/network/settings")).status_code == 200


async def test_control_api_validates_input(client: httpx.AsyncClient) -> None:
    assert (await client.post("/_sim/faults", json={"mode": "explode"})).status_code == 400
    assert (await client.post("/_sim/faults", json={"mode": "reset", "bogus": 1})).status_code == 400
    assert (await client.post("/_sim/config", json={"plan": "gold"})).status_code == 400


# --- webhooks


class Receiver:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()

    async def endpoint(self, request: Request) -> Response:
        self.received.append((dict(request.headers), await request.body()))
        self.arrived.set()
        return Response("ok")

    async def wait_for(self, n: int) -> None:
        while len(self.received) < n:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 5)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    app = Starlette(routes=[Route("/webhooks/mobility-work", rec.endpoint, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    config = uvicorn.Config(app, lifespan="off", log_level="warning")
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    try:
        yield rec, f"http://127.0.0.1:{sock.getsockname()[1]}/webhooks/mobility-work"
    finally:
        await server.shutdown(sockets=[sock])


async def test_task_was_scheduled_is_sent_signed_after_acceptance(
    receiver: tuple[Receiver, str],
) -> None:
    rec, url = receiver
    async with (
        run_mobility_work_sim(api_key=KEY, webhook_url=url, webhook_secret=SECRET) as s,
        httpx.AsyncClient(base_url=s.url, headers={"Api-Key": KEY}) as c,
    ):
        body = task(metadata={"gateway": "gw1", "rule": "r1", "firing": "f-uuid"})
        assert (await c.post("/partners/v1/tasks", json=body)).status_code == 201
        await rec.wait_for(1)
        task_id = s.state.tasks[0].id
    headers, raw = rec.received[0]
    assert headers["user-agent"] == "Mobility Work - Webhook Service v1"
    assert headers["content-type"] == "application/json"
    parsed = parse_header(headers[HEADER.lower()])
    assert signature_matches(SECRET, parsed, raw) and not signature_matches("other", parsed, raw)
    assert not signature_matches(SECRET, parsed, raw + b" ")
    payload = json.loads(raw)
    assert list(payload) == [
        "_event",
        "_idempotencyKey",
        "taskId",
        "scheduled",
        "associatedTo",
        "tags",
        "requiredSpareParts",
        "metadata",
        "networkId",
    ]
    assert payload["taskId"] == task_id
    assert payload["metadata"] == {"gateway": "gw1", "rule": "r1", "firing": "f-uuid"}
    assert payload["associatedTo"]["legacyId"] == 9  # the native id the task named


async def test_every_event_on_command_and_resend(receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    async with (
        run_mobility_work_sim(api_key=KEY, webhook_url=url, webhook_secret=SECRET, auto_webhooks=False) as s,
        httpx.AsyncClient(base_url=s.url, headers={"Api-Key": KEY}) as c,
    ):
        await c.post("/partners/v1/tasks", json=task(equipment="EQ-0001", metadata={"firing": "F1"}))
        tid = s.state.tasks[0].id
        s.state.spare_part("SP987678").stock = 10
        commands = [
            {"event": "TaskWasScheduled"},
            {"event": "TaskWasStarted", "task_id": tid},
            {
                "event": "ActivityWasAddedOnTask",
                "task_id": tid,
                "description": "replaced lamps",
                "minutes": 45,
            },
            {"event": "SparePartWasConsumed", "task_id": tid, "article": "SP987678", "quantity": 2},
            {
                "event": "SparePartConsumptionWasCanceled",
                "task_id": tid,
                "article": "SP987678",
                "quantity": 1,
            },
            {"event": "SparePartWasRestocked", "article": "SP987678", "quantity": 5},
            {"event": "SparePartWasManuallyRecounted", "article": "SP987678", "quantity": 4},
            {"event": "SparePartStockWasUnderMinThreshold", "article": "SP987678", "threshold": 5},
            {"event": "SparePartWasOutOfStock", "article": "SP987678"},
            {"event": "TaskWasCompleted", "task_id": tid},
            {"event": "TaskWasCanceled", "task_id": tid},
        ]
        for command in commands:
            r = await c.post("/_sim/webhooks", json=command)
            assert r.status_code == 200 and r.json()["status"] == 200, r.text
        dup = await c.post("/_sim/webhooks/resend", json={"delivery_id": 4})
        await s.resend_webhook(4, same_signature=True)
        listed = (await c.get("/_sim/webhooks")).json()
    assert dup.status_code == 200 and len(listed) == 13
    payloads = [json.loads(raw) for _, raw in rec.received]
    events = [p["_event"] for p in payloads]
    assert events == [c["event"] for c in commands] + ["SparePartWasConsumed"] * 2
    keys = [p["_idempotencyKey"] for p in payloads]
    assert len(set(keys[:11])) == 11 and keys[11] == keys[12] == keys[3]
    sigs = [parse_header(h[HEADER.lower()]) for h, _ in rec.received]
    assert sigs[11].nonce != sigs[3].nonce  # a retry is signed afresh
    assert sigs[12] == sigs[3]  # a replay carries the very same header
    for (_, raw), sig in zip(rec.received, sigs, strict=True):
        assert signature_matches(SECRET, sig, raw)
    by = {p["_event"]: p for p in payloads}
    assert by["SparePartWasConsumed"]["consumed"] == {
        "_type": "SparePartConsumption",
        "quantity": 2,
        "previousStock": 10,
    }
    assert by["SparePartWasConsumed"]["task"]["taskId"] == tid
    assert by["SparePartWasConsumed"]["sparePart"]["articleCode"] == "SP987678"
    assert by["SparePartConsumptionWasCanceled"]["sparePart"]["quantity"] == 1
    assert by["ActivityWasAddedOnTask"]["task"]["metadata"] == {"firing": "F1"}
    assert by["ActivityWasAddedOnTask"]["activity"]["timeSpentInMinutes"] == 45
    assert by["TaskWasCompleted"]["id"] == tid and by["TaskWasCompleted"]["metadata"] == {"firing": "F1"}
    assert by["SparePartStockWasUnderMinThreshold"]["stock"]["threshold"] == 5
    assert by["SparePartWasRestocked"]["restocked"]["previousStock"] == 9


async def test_webhook_shapes_match_the_fixtures(sim: MobilityWorkSim, client: httpx.AsyncClient) -> None:
    """Every simulated body has exactly the keys of the latest fixture, nested objects included."""
    from pathlib import Path

    fixtures = Path(__file__).parent.parent / "fixtures" / "mobility_work" / "latest"
    await client.post("/partners/v1/tasks", json=task())
    sim.build_webhook("ActivityWasAddedOnTask")

    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items() if k != "tags" and k != "metadata"}
        return type(value).__name__ if not isinstance(value, list) else "list"

    for path in sorted(fixtures.glob("*.json")):
        event = path.stem
        built = sim.build_webhook(event, article="whr484zb", quantity=3)
        expected = json.loads(path.read_text(encoding="utf-8"))
        assert list(built) == list(expected), event
        for key, value in expected.items():
            if key != "metadata" and isinstance(value, dict) and isinstance(built[key], dict):
                assert set(shape(built[key])) >= set(shape(value)), (event, key)


async def test_signature_template_is_configurable(receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    async with run_mobility_work_sim(
        api_key=KEY,
        webhook_url=url,
        webhook_secret=SECRET,
        auto_webhooks=False,
        signature_template="{t}{body}",
    ) as s:
        await s.deliver_payload("X", b'{"_event":"X"}')
    headers, raw = rec.received[0]
    parsed = parse_header(headers["x-mw-signature"])
    assert signature_matches(SECRET, parsed, raw, template="{t}{body}")
    assert not signature_matches(SECRET, parsed, raw)
    assert (
        sign(SECRET, raw, t=parsed.t, nonce=parsed.nonce, template="{t}{body}") == headers["x-mw-signature"]
    )


def test_main_rejects_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--port", str(port)]) == 1
    assert "cannot listen" in capsys.readouterr().out


# --- X-MW-Signature helpers (the receiver's verifier builds on these)


def test_signature_known_vector_and_parsing() -> None:
    import hashlib
    import hmac

    body = b'{"_event":"TaskWasStarted"}'
    header = sign("s3cret", body, t=1660338149, nonce="752c14ea195c460bac3c3b7896975ee9fd15eeb7")
    expected = hmac.new(
        b"s3cret", b"1660338149.752c14ea195c460bac3c3b7896975ee9fd15eeb7." + body, hashlib.sha256
    ).hexdigest()
    assert header == f"t=1660338149,nonce=752c14ea195c460bac3c3b7896975ee9fd15eeb7,signature={expected}"
    parsed = parse_header(" signature=" + expected.upper() + ", t=1660338149 ,nonce=752c14ea")
    assert (parsed.t, parsed.nonce, parsed.signature) == (1660338149, "752c14ea", expected)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "t=1,nonce=a",
        "t=x,nonce=a,signature=" + "0" * 64,
        "t=1,nonce=a,signature=abc",
        "t=1,nonce=,signature=" + "0" * 64,
        "t=1,t=2,nonce=a,signature=" + "0" * 64,
        "garbage",
    ],
)
def test_malformed_signature_headers(value: str) -> None:
    with pytest.raises(ValueError):
        parse_header(value)


@pytest.mark.parametrize("template", ["{t}.{nonce}", "{t}{body}{body}", "{t}.{secret}.{body}"])
def test_bad_signature_templates(template: str) -> None:
    with pytest.raises(ValueError):
        sign("s", b"{}", template=template)
