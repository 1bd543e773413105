"""The Servitly backend against the Servitly simulator, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.cmms.schema import HttpClientOptions, ServitlyConfig
from gateway.cmms.servitly import ServitlyBackend
from gateway.core.clock import ManualClock
from gateway.core.delivery import OutboxItem, Outcome
from gateway.core.errors import BackendError
from gateway.core.firings import Evidence, Firing, Priority, SparePart, TaskSpec, firing_uuid
from gateway.sim.servitly import Fault, ServitlySim, run_servitly_sim

TENANT = "acme"
API_KEY = "servitly-api-key"
PAT = "servitly-pat"
FIRED_AT = 1_767_225_600.0
WORKS = "/inventory/maintenanceWorks"


def make_item(
    *,
    key: str = "pump7-overheat:1767225300",
    extra: dict[str, Any] | None = None,
    equipment: str | int | None = 2507,
    assignees: tuple[str | int, ...] = (3, "maintenance@factory.example"),
) -> OutboxItem:
    task = TaskSpec(
        equipment=equipment,
        description="Pump 7 overheating (91.5 °C)",
        assignees=assignees,
        duration_s=14400.0,
        extra={"thing_id": "thing-pump7"} if extra is None else extra,
    )
    firing = Firing(
        key=key,
        rule_id="pump7-overheat",
        fired_at=FIRED_AT,
        task=task,
        priority=Priority.HIGH,
        evidence=(Evidence("pump7.temp", 91.5, FIRED_AT - 2.0, "good"),),
        metadata={"line": "1", "shift": 2},
        trigger="signal",
    )
    return OutboxItem(
        outbox_id=7, firing_uuid=firing_uuid("inst-1", "press-line-1", key), firing=firing, attempts=0
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(FIRED_AT)


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[ServitlySim]:
    async with run_servitly_sim(
        tenant=TENANT, api_key=API_KEY, pat=PAT, token_lifetime_s=600, clock=clock
    ) as s:
        yield s


@pytest.fixture
def make_backend(sim: ServitlySim, clock: ManualClock) -> Callable[..., ServitlyBackend]:
    def make(**overrides: Any) -> ServitlyBackend:
        values: dict[str, Any] = {
            "kind": "servitly",
            "url": sim.url,
            "tenant": TENANT,
            "api_key": API_KEY,
            "pat": PAT,
            "endpoint": "maintenanceWorks",  # most tests here; the default is historicalEvents
            "http": HttpClientOptions(connect_timeout=2.0, read_timeout=0.5),
            **overrides,
        }
        return ServitlyBackend(ServitlyConfig.model_validate(values), gateway_id="press-line-1", clock=clock)

    return make


@pytest.fixture
async def backend(make_backend: Callable[..., ServitlyBackend]) -> AsyncIterator[ServitlyBackend]:
    servitly = make_backend()
    yield servitly
    await servitly.aclose()


async def test_a_firing_becomes_a_maintenance_work(sim: ServitlySim, backend: ServitlyBackend) -> None:
    item = make_item()
    delivery = await backend.deliver(item)

    assert delivery.outcome is Outcome.DONE, delivery.error
    assert delivery.status_code == 201
    (work,) = sim.state.maintenance_works
    assert delivery.remote_id == work["id"]
    assert work == {
        "id": work["id"],
        "startTimestamp": 1_767_225_600_000,  # no endTimestamp: the work has not been done yet
        "type": "MAINTENANCE",
        "description": "Pump 7 overheating (91.5 °C)",
        "thingId": "thing-pump7",
        "userEmail": "maintenance@factory.example",
        "properties": {
            "line": "1",
            "shift": "2",
            "gateway": "press-line-1",
            "rule": "pump7-overheat",
            "firing": item.firing_uuid,
            "firingKey": "pump7-overheat:1767225300",
            "priority": "high",
            "evidence": '[{"signal":"pump7.temp","value":91.5,"ts":1767225598.0,"quality":"good"}]',
            "trigger": "signal",
            "equipment": "2507",
        },
    }
    login, call = sim.state.requests
    assert (login.path, login.json, login.headers["x-servitly-tenant"]) == (
        "/identity/users/patLogin",
        {"apiKey": API_KEY, "pat": PAT},
        TENANT,
    )
    assert call.path == WORKS
    assert call.headers["x-servitly-tenant"] == TENANT
    assert call.headers["authorization"].startswith("Bearer ")
    assert delivery.request == {"method": "POST", "path": WORKS, "json": call.json}
    assert PAT not in json.dumps(delivery.request) and API_KEY not in json.dumps(delivery.request)


async def test_location_type_and_user_from_the_rule(sim: ServitlySim, backend: ServitlyBackend) -> None:
    item = make_item(extra={"location_id": "loc-7", "type": "REPAIR", "user_email": "lead@factory.example"})
    assert (await backend.deliver(item)).outcome is Outcome.DONE
    (work,) = sim.state.maintenance_works
    assert (work["locationId"], work["type"], work["userEmail"]) == (
        "loc-7",
        "REPAIR",
        "lead@factory.example",
    )
    assert "thingId" not in work


async def test_equipment_mapped_to_a_thing_in_the_config(
    sim: ServitlySim, make_backend: Callable[..., ServitlyBackend]
) -> None:
    backend = make_backend(things={"2507": "thing-from-config"})
    try:
        delivery = await backend.deliver(make_item(extra={}, assignees=(3,)))
    finally:
        await backend.aclose()
    assert delivery.outcome is Outcome.DONE, delivery.error
    (work,) = sim.state.maintenance_works
    assert work["thingId"] == "thing-from-config"
    assert "userEmail" not in work


async def test_no_thing_nor_location_is_a_dead_letter_without_a_call(
    sim: ServitlySim, backend: ServitlyBackend
) -> None:
    delivery = await backend.deliver(make_item(extra={}, equipment="EQ-PUMP-07"))
    assert delivery.outcome is Outcome.DEAD
    assert "no thingId or locationId" in delivery.error
    assert "'EQ-PUMP-07'" in delivery.error
    assert sim.state.requests == []


async def test_historical_events_when_configured(
    sim: ServitlySim, make_backend: Callable[..., ServitlyBackend]
) -> None:
    backend = make_backend(endpoint="historicalEvents", alert_definition_id="def-maintenance")
    item = make_item()
    try:
        delivery = await backend.deliver(item)
    finally:
        await backend.aclose()
    assert delivery.outcome is Outcome.DONE, delivery.error
    assert sim.state.maintenance_works == []
    (event,) = sim.state.historical_events
    assert event["alertDefinitionId"] == "def-maintenance"
    assert (event["startTimestamp"], event["thingId"]) == (1_767_225_600_000, "thing-pump7")
    notes = event["notes"].splitlines()
    assert notes[0] == "Pump 7 overheating (91.5 °C)"
    assert f"firing: {item.firing_uuid}" in notes
    assert "firingKey: pump7-overheat:1767225300" in notes
    assert sim.state.requests[-1].path == "/inventory/historicalEvents"


async def test_the_default_endpoint_is_the_events_one(sim: ServitlySim, clock: ManualClock) -> None:
    # seed 003: maintenanceWorks is "Deprecated ... Use the EVENTS endpoints instead"
    config = ServitlyConfig.model_validate(
        {"kind": "servitly", "url": sim.url, "tenant": TENANT, "api_key": API_KEY, "pat": PAT}
    )
    assert config.endpoint == "historicalEvents"
    backend = ServitlyBackend(config, gateway_id="press-line-1", clock=clock)
    try:
        delivery = await backend.deliver(make_item())
    finally:
        await backend.aclose()
    assert delivery.outcome is Outcome.DONE, delivery.error
    (event,) = sim.state.historical_events
    assert sim.state.maintenance_works == []
    assert "endTimestamp" not in event


@pytest.mark.parametrize("endpoint", ["maintenanceWorks", "historicalEvents"])
async def test_no_completion_time_in_the_future(
    sim: ServitlySim, make_backend: Callable[..., ServitlyBackend], endpoint: str
) -> None:
    backend = make_backend(endpoint=endpoint)
    try:
        delivery = await backend.deliver(make_item())  # a 4 h task, fired now
    finally:
        await backend.aclose()
    assert delivery.outcome is Outcome.DONE, delivery.error
    assert "endTimestamp" not in sim.state.requests[-1].json
    assert sim.state.requests[-1].json["startTimestamp"] == 1_767_225_600_000


@pytest.mark.parametrize("endpoint", ["maintenanceWorks", "historicalEvents"])
async def test_expected_spare_parts_reach_servitly(
    sim: ServitlySim, make_backend: Callable[..., ServitlyBackend], endpoint: str
) -> None:
    item = make_item()
    task = dataclasses.replace(
        item.firing.task, spare_parts=(SparePart("LUBE-5L", 1.0), SparePart("FILTER-10", 2.0))
    )
    item = dataclasses.replace(item, firing=dataclasses.replace(item.firing, task=task))
    backend = make_backend(endpoint=endpoint)
    try:
        assert (await backend.deliver(item)).outcome is Outcome.DONE
    finally:
        await backend.aclose()
    expected = '[{"article":"LUBE-5L","quantity":1.0},{"article":"FILTER-10","quantity":2.0}]'
    if endpoint == "maintenanceWorks":
        assert sim.state.maintenance_works[0]["properties"]["spareParts"] == expected
    else:
        assert f"spareParts: {expected}" in sim.state.historical_events[0]["notes"].splitlines()


async def test_login_with_email_and_password(
    sim: ServitlySim, make_backend: Callable[..., ServitlyBackend]
) -> None:
    sim.state.users = {"gateway@factory.example": "s3cret"}
    backend = make_backend(pat=None, email="gateway@factory.example", password="s3cret")
    try:
        info = await backend.start()
        delivery = await backend.deliver(make_item())
    finally:
        await backend.aclose()
    assert delivery.outcome is Outcome.DONE, delivery.error
    login = sim.state.requests[0]
    assert (login.path, login.query, login.json) == (
        "/identity/users/login",
        f"apiKey={API_KEY}",
        {"email": "gateway@factory.example", "password": "s3cret"},
    )
    assert info.network_id == f"tenant-{TENANT}"
    assert backend.logins == 1


async def test_start_with_bad_credentials_raises(make_backend: Callable[..., ServitlyBackend]) -> None:
    backend = make_backend(pat="wrong")
    try:
        with pytest.raises(
            BackendError, match=r"patLogin \(pat, api_key\) refused, tenant acme: HTTP 401"
        ) as err:
            await backend.start()
    finally:
        await backend.aclose()
    assert "wrong" not in str(err.value)


async def test_start_with_servitly_unreachable_gives_unknowns(free_port: Callable[[], int]) -> None:
    config = ServitlyConfig(
        kind="servitly", url=f"http://127.0.0.1:{free_port()}", tenant=TENANT, api_key="k", pat="p"
    )
    backend = ServitlyBackend(config, gateway_id="gw", timezone="Europe/Paris")
    try:
        info = await backend.start()
        delivery = await backend.deliver(make_item())
    finally:
        await backend.aclose()
    assert (info.timezone, info.network_id) == ("Europe/Paris", None)
    assert delivery.outcome is Outcome.RETRY
    assert delivery.error.startswith("Servitly login: cannot connect")


async def test_a_token_near_its_expiry_is_renewed_before_the_call(
    sim: ServitlySim, backend: ServitlyBackend, clock: ManualClock
) -> None:
    assert (await backend.deliver(make_item(key="a"))).outcome is Outcome.DONE
    clock.advance(600 - 60)  # the token's lifetime less the refresh margin
    assert (await backend.deliver(make_item(key="b"))).outcome is Outcome.DONE
    assert [r.status for r in sim.state.requests] == [200, 201, 200, 201]  # no 401 on the way
    assert sim.state.logins == 2


async def test_an_expired_token_is_renewed_without_losing_the_call(
    sim: ServitlySim, backend: ServitlyBackend
) -> None:
    first, second = make_item(key="a"), make_item(key="b")
    assert (await backend.deliver(first)).outcome is Outcome.DONE
    sim.state.expire_tokens()  # the server drops it early: the backend learns it from a 401

    delivery = await backend.deliver(second)

    assert delivery.outcome is Outcome.DONE, delivery.error
    assert [(r.path, r.status) for r in sim.state.requests] == [
        ("/identity/users/patLogin", 200),
        (WORKS, 201),
        (WORKS, 401),
        ("/identity/users/patLogin", 200),
        (WORKS, 201),
    ]
    assert sim.state.requests[2].json == sim.state.requests[4].json  # the same call, resent
    assert [w["properties"]["firing"] for w in sim.state.maintenance_works] == [
        first.firing_uuid,
        second.firing_uuid,
    ]


async def test_a_401_right_after_a_fresh_login_pauses(sim: ServitlySim, backend: ServitlyBackend) -> None:
    assert (await backend.deliver(make_item(key="a"))).outcome is Outcome.DONE
    sim.state.faults.add(Fault("error", status=401, path=WORKS, count=2))  # e.g. permissions withdrawn
    delivery = await backend.deliver(make_item(key="b"))
    assert delivery.outcome is Outcome.PAUSE
    assert delivery.error.startswith("Servitly refused a token it had just issued: HTTP 401")
    assert sim.state.logins == 2
    assert len(sim.state.maintenance_works) == 1


async def test_concurrent_deliveries_share_one_login(sim: ServitlySim, backend: ServitlyBackend) -> None:
    results = await asyncio.gather(*(backend.deliver(make_item(key=f"k{i}")) for i in range(5)))
    assert [r.outcome for r in results] == [Outcome.DONE] * 5
    assert sim.state.logins == 1
    assert len(sim.state.maintenance_works) == 5


@pytest.mark.parametrize(
    ("fault", "outcome", "error_part", "retry_after"),
    [
        (Fault("rate_limit", path=WORKS, retry_after=5), Outcome.RETRY, "HTTP 429", 5.0),
        (Fault("error", path=WORKS, status=500), Outcome.RETRY, "HTTP 500", None),
        (Fault("error", path=WORKS, status=503), Outcome.RETRY, "HTTP 503", None),
        (Fault("error", path=WORKS, status=403), Outcome.PAUSE, "HTTP 403", None),
        (Fault("timeout", path=WORKS, delay_s=5.0), Outcome.RETRY, "read timeout", None),
        (Fault("error", path="patLogin", status=503), Outcome.RETRY, "Servitly patLogin", None),
        (Fault("rate_limit", path="patLogin", retry_after=9), Outcome.RETRY, "HTTP 429", 9.0),
    ],
    ids=["429", "500", "503", "403", "timeout", "login-503", "login-429"],
)
async def test_faults_are_classified(
    sim: ServitlySim,
    backend: ServitlyBackend,
    fault: Fault,
    outcome: Outcome,
    error_part: str,
    retry_after: float | None,
) -> None:
    sim.state.faults.add(fault)
    delivery = await backend.deliver(make_item())
    assert delivery.outcome is outcome
    assert error_part in delivery.error
    assert delivery.retry_after_s == retry_after
    assert sim.state.maintenance_works == []
    assert (await backend.deliver(make_item())).outcome is Outcome.DONE


async def test_a_lost_answer_may_have_been_committed(sim: ServitlySim, backend: ServitlyBackend) -> None:
    sim.state.faults.add(Fault("commit_lost", path=WORKS, delay_s=5.0))
    item = make_item()
    delivery = await backend.deliver(item)
    assert delivery.outcome is Outcome.RETRY
    assert delivery.maybe_committed is True
    # Servitly has no client-chosen id: the firing uuid in properties is what tells a duplicate apart
    assert [w["properties"]["firing"] for w in sim.state.maintenance_works] == [item.firing_uuid]


async def test_a_rejected_work_is_a_dead_letter_with_the_message(
    sim: ServitlySim, backend: ServitlyBackend
) -> None:
    sim.state.things = {"thing-press1"}
    delivery = await backend.deliver(make_item())
    assert delivery.outcome is Outcome.DEAD
    assert delivery.status_code == 400
    assert delivery.error == "HTTP 400: Bad request: thing thing-pump7 not found"
    assert delivery.details == {"message": "Bad request: thing thing-pump7 not found"}


async def test_a_wrong_tenant_pauses(sim: ServitlySim, make_backend: Callable[..., ServitlyBackend]) -> None:
    backend = make_backend(tenant="other")
    try:
        delivery = await backend.deliver(make_item())
    finally:
        await backend.aclose()
    assert delivery.outcome is Outcome.PAUSE
    assert "tenant other" in delivery.error and "Invalid credentials" in delivery.error


def test_the_config_wants_one_way_to_log_in() -> None:
    base = {"kind": "servitly", "url": "http://x", "tenant": TENANT, "api_key": API_KEY}
    with pytest.raises(ValueError, match="give pat"):
        ServitlyConfig.model_validate(base)
    with pytest.raises(ValueError, match="not both"):
        ServitlyConfig.model_validate({**base, "pat": PAT, "email": "a@b.c", "password": "x"})
    with pytest.raises(ValueError, match="give pat"):
        ServitlyConfig.model_validate({**base, "email": "a@b.c"})
    assert (
        ServitlyConfig.model_validate({**base, "pat": PAT, "token_refresh_margin": "2m"}).token_refresh_margin
        == 120
    )
