"""The Servitly simulator: logins, token lifetime, validation, faults and control API (plain HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.core.clock import ManualClock
from gateway.sim.servitly import ServitlySim, run_servitly_sim

TENANT = {"X-Servitly-Tenant": "acme"}
WORKS = "/inventory/maintenanceWorks"
EVENTS = "/inventory/historicalEvents"
# The seed's (003) example values, in one body.
SEED_WORK = {
    "startTimestamp": 1578438000000,
    "endTimestamp": 1578438000000,
    "type": "REPAIR",
    "description": "Main unit repair...",
    "outcome": "Impossible to reset error...",
    "userEmail": "tech@acme.example",
    "thingId": "thing-1",
    "properties": {"foo": "abc", "bar": "123"},
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[ServitlySim]:
    async with run_servitly_sim(
        tenant="acme", api_key="key", pat="pat", token_lifetime_s=60, clock=clock
    ) as s:
        yield s


@pytest.fixture
async def client(sim: ServitlySim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, timeout=5.0) as http:
        yield http


async def login(client: httpx.AsyncClient) -> dict[str, str]:
    response = await client.post(
        "/identity/users/patLogin", json={"apiKey": "key", "pat": "pat"}, headers=TENANT
    )
    assert response.status_code == 200, response.text
    return {**TENANT, "Authorization": f"Bearer {response.json()['token']}"}


async def test_pat_login_answers_a_token_with_its_expiry(
    sim: ServitlySim, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    response = await client.post(
        "/identity/users/patLogin", json={"apiKey": "key", "pat": "pat"}, headers=TENANT
    )
    answer = response.json()
    assert set(answer) == {"token", "tokenExpirationTimestamp", "refreshToken", "userId", "tenantId"}
    assert answer["tokenExpirationTimestamp"] == int((clock.now() + 60) * 1000)
    assert sim.state.logins == 1


async def test_credential_login_takes_the_api_key_as_a_query_parameter(client: httpx.AsyncClient) -> None:
    body = {"email": "gateway@factory.example", "password": "sim-password"}
    ok = await client.post("/identity/users/login", params={"apiKey": "key"}, json=body, headers=TENANT)
    no_key = await client.post("/identity/users/login", json=body, headers=TENANT)
    wrong = await client.post(
        "/identity/users/login", params={"apiKey": "key"}, json={**body, "password": "x"}, headers=TENANT
    )
    assert ok.status_code == 200 and ok.json()["userId"] == "user-gateway@factory.example"
    assert no_key.status_code == 400
    assert (wrong.status_code, wrong.json()) == (401, {"message": "Invalid credentials"})


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ({"apiKey": "key", "pat": "wrong"}, TENANT, 401),
        ({"apiKey": "wrong", "pat": "pat"}, TENANT, 401),
        ({"apiKey": "key", "pat": "pat"}, {"X-Servitly-Tenant": "globex"}, 401),
        ({"apiKey": "key", "pat": "pat"}, {}, 400),
        ({"apiKey": "key", "pat": "pat", "remember": True}, TENANT, 400),
    ],
    ids=["bad-pat", "bad-key", "other-tenant", "no-tenant", "unknown-field"],
)
async def test_bad_logins(
    client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str], status: int
) -> None:
    response = await client.post("/identity/users/patLogin", json=body, headers=headers)
    assert response.status_code == status


async def test_the_seed_work_is_accepted_and_stored(sim: ServitlySim, client: httpx.AsyncClient) -> None:
    response = await client.post(WORKS, json=SEED_WORK, headers=await login(client))
    assert response.status_code == 201
    assert response.json() == {"id": sim.state.maintenance_works[0]["id"], **SEED_WORK}


async def test_tokens_expire_on_the_simulator_clock(
    sim: ServitlySim, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    headers = await login(client)
    assert (await client.post(WORKS, json=SEED_WORK, headers=headers)).status_code == 201
    clock.advance(60)
    expired = await client.post(WORKS, json=SEED_WORK, headers=headers)
    assert (expired.status_code, expired.json()) == (401, {"message": "User not authenticated"})
    fresh = await login(client)
    assert (await client.post(WORKS, json=SEED_WORK, headers=fresh)).status_code == 201
    assert (await client.post("/_sim/expire_tokens")).status_code == 200
    assert (await client.post(WORKS, json=SEED_WORK, headers=fresh)).status_code == 401
    assert len(sim.state.maintenance_works) == 2


async def test_authentication_and_tenant_are_required(client: httpx.AsyncClient) -> None:
    headers = await login(client)
    assert (await client.post(WORKS, json=SEED_WORK, headers=TENANT)).status_code == 401
    assert (
        await client.post(WORKS, json=SEED_WORK, headers={**TENANT, "Authorization": "Bearer x"})
    ).status_code == 401
    other = {**headers, "X-Servitly-Tenant": "globex"}
    assert (await client.post(WORKS, json=SEED_WORK, headers=other)).json() == {
        "message": "User not authorized"
    }
    no_tenant = {"Authorization": headers["Authorization"]}
    assert (await client.post(WORKS, json=SEED_WORK, headers=no_tenant)).status_code == 400


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"title": "x"}, "unrecognized field(s) title"),
        ({"startTimestamp": "2026-01-01"}, "startTimestamp must be an int64 timestamp"),
        ({"startTimestamp": 1.5}, "startTimestamp must be an int64 timestamp"),
        ({"endTimestamp": 1}, "endTimestamp is before startTimestamp"),
        ({"properties": {"count": 3}}, "property count must be a string"),
        ({"properties": ["a"]}, "properties must be an object"),
        ({"userEmail": "nobody"}, "userEmail is not an e-mail address"),
        ({"thingId": None}, "thingId must be a string"),
    ],
)
async def test_invalid_works_get_400(
    sim: ServitlySim, client: httpx.AsyncClient, change: dict[str, Any], message: str
) -> None:
    response = await client.post(WORKS, json={**SEED_WORK, **change}, headers=await login(client))
    assert response.status_code == 400
    assert message in response.json()["message"]
    assert sim.state.maintenance_works == []


async def test_a_thing_or_a_location_is_required_and_can_be_checked(
    sim: ServitlySim, client: httpx.AsyncClient
) -> None:
    headers = await login(client)
    body = {k: v for k, v in SEED_WORK.items() if k != "thingId"}
    assert (await client.post(WORKS, json=body, headers=headers)).json()["message"].endswith("is required")
    assert (
        await client.post(WORKS, json={**body, "locationId": "loc-1"}, headers=headers)
    ).status_code == 201
    sim.state.things = {"thing-2"}
    unknown = await client.post(WORKS, json=SEED_WORK, headers=headers)
    assert unknown.json() == {"message": "Bad request: thing thing-1 not found"}


async def test_historical_events(sim: ServitlySim, client: httpx.AsyncClient) -> None:
    headers = await login(client)
    event = {"alertDefinitionId": "1234abcd", "startTimestamp": 1578438000000, "thingId": "t", "notes": "n"}
    response = await client.post(EVENTS, json=event, headers=headers)
    assert response.status_code == 201
    assert sim.state.historical_events == [{"id": response.json()["id"], "eventSeverity": 5, **event}]
    refused = await client.post(EVENTS, json={**event, "properties": {}}, headers=headers)
    assert refused.json()["message"] == "Bad request: unrecognized field(s) properties"


async def test_faults_and_the_control_api(sim: ServitlySim, client: httpx.AsyncClient) -> None:
    headers = await login(client)
    faults = [{"mode": "http_429", "retry_after": "4", "path": WORKS}, {"kind": "error", "status": 500}]
    assert (await client.post("/_sim/faults", json=faults)).status_code == 200
    limited = await client.post(WORKS, json=SEED_WORK, headers=headers)
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "4")
    assert (await client.post(WORKS, json=SEED_WORK, headers=headers)).status_code == 500
    assert (await client.post(WORKS, json=SEED_WORK, headers=headers)).status_code == 201
    assert sim.state.faults.pending() == []
    assert (await client.post("/_sim/faults", json=[{"kind": "latency"}, "nonsense"])).status_code == 400
    assert sim.state.faults.pending() == []  # a bad list adds nothing

    requests = (await client.get("/_sim/requests")).json()
    assert [(r["path"], r["status"]) for r in requests] == [
        ("/identity/users/patLogin", 200),
        (WORKS, 429),
        (WORKS, 500),
        (WORKS, 201),
    ]
    state = (await client.get("/_sim/state")).json()
    assert (state["logins"], len(state["maintenance_works"])) == (1, 1)
    assert (await client.post("/_sim/reset")).status_code == 200
    assert (sim.state.logins, sim.state.requests) == (0, [])
    assert (await client.post(WORKS, json=SEED_WORK, headers=headers)).status_code == 401  # tokens forgotten


async def test_unknown_paths_and_methods(client: httpx.AsyncClient) -> None:
    assert (await client.post("/inventory/things", json={}, headers=TENANT)).status_code == 404
    assert (await client.get(WORKS, headers=TENANT)).status_code == 405


async def test_a_maintenance_work_cannot_have_completed_in_the_future(
    sim: ServitlySim, client: httpx.AsyncClient
) -> None:
    # seed 003: "endTimestamp: The timestamp when the maintenance work completed."
    headers = await login(client)
    future = int(sim.state.clock.now() * 1000) + 3_600_000
    refused = await client.post(WORKS, json={**SEED_WORK, "endTimestamp": future}, headers=headers)
    assert refused.status_code == 400
    assert (
        refused.json()["message"] == "Bad request: endTimestamp is in the future (the work has not completed)"
    )
    assert sim.state.maintenance_works == []
