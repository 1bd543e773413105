"""The Mobility Work backend against the simulator, over real HTTP on loopback."""

from __future__ import annotations

import email.utils
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from pydantic import SecretStr

from gateway.cmms.mobility_work import MobilityWorkBackend, task_payload
from gateway.cmms.schema import HttpClientOptions, MobilityWorkConfig
from gateway.core.clock import ManualClock
from gateway.core.delivery import OutboxItem, Outcome
from gateway.core.errors import BackendError
from gateway.core.firings import Firing, TaskSpec, firing_uuid
from gateway.sim.mobility_work import Fault, MobilityWorkSim, run_mobility_work_sim

KEY = "test-key-5d1c0e6b"
FIRED_AT = 1_767_268_800.0  # 2026-01-01T12:00:00Z


def make_config(url: str, **kw: Any) -> MobilityWorkConfig:
    return MobilityWorkConfig(
        kind="mobility_work",
        url=url,
        api_key=SecretStr(kw.pop("api_key", KEY)),
        http=HttpClientOptions(connect_timeout=1.0, read_timeout=kw.pop("read_timeout", 5.0)),
        **kw,
    )


def make_item(n: int = 1, **task: Any) -> OutboxItem:
    spec = dict(equipment="EQ-0001", description="Press 1 overheated: check the cooling", assignees=(3,))
    spec.update(task)
    firing = Firing(
        key=f"press1_overheat:{n}",
        rule_id="press1_overheat",
        fired_at=FIRED_AT,
        task=TaskSpec(**spec),
        metadata={"line": "A", "gateway": "spoofed"},
    )
    return OutboxItem(
        outbox_id=n, firing_uuid=firing_uuid("inst-1", "gw1", firing.key), firing=firing, attempts=0
    )


@pytest.fixture
async def sim() -> AsyncIterator[MobilityWorkSim]:
    async with run_mobility_work_sim(api_key=KEY) as s:
        yield s


@pytest.fixture
async def backend(sim: MobilityWorkSim) -> AsyncIterator[MobilityWorkBackend]:
    b = MobilityWorkBackend(make_config(sim.url), gateway_id="gw1", clock=ManualClock(FIRED_AT))
    await b.start()
    yield b
    await b.aclose()


async def test_start_reads_network_settings(sim: MobilityWorkSim) -> None:
    b = MobilityWorkBackend(make_config(sim.url), gateway_id="gw1")
    try:
        info = await b.start()
    finally:
        await b.aclose()
    assert (info.timezone, info.currency, info.network_id, info.name) == (
        "Europe/Paris",
        "EUR",
        sim.state.network_id,
        "Mobility Work",
    )
    assert info.extra == {"legacyNetworkId": 686}
    assert sim.state.requests[0].headers["api-key"] == KEY


async def test_start_with_bad_key_raises_clearly_without_the_key(sim: MobilityWorkSim) -> None:
    b = MobilityWorkBackend(make_config(sim.url, api_key="wrong-key-123"), gateway_id="gw1")
    try:
        with pytest.raises(BackendError) as err:
            await b.start()
    finally:
        await b.aclose()
    assert "401" in str(err.value) and "api_key" in str(err.value)
    assert "wrong-key-123" not in str(err.value)


async def test_start_unreachable_returns_unknowns(free_port: Any, caplog: pytest.LogCaptureFixture) -> None:
    b = MobilityWorkBackend(make_config(f"http://127.0.0.1:{free_port()}"), gateway_id="gw1")
    try:
        with caplog.at_level(logging.DEBUG):
            info = await b.start()
    finally:
        await b.aclose()
    assert info.timezone is None and info.network_id is None
    assert KEY not in caplog.text


async def test_deliver_sends_the_documented_request(
    sim: MobilityWorkSim, backend: MobilityWorkBackend
) -> None:
    item = make_item(
        assignees=(3, "john.doe@example.com"),
        tags=("safety", 12),
        duration_s=5400,
        checklist="0d9f6c1e-3a57-4b0e-9c1c-2b8a7e0f4d11",
    )
    delivery = await backend.deliver(item)
    assert delivery.outcome is Outcome.DONE and delivery.status_code == 201
    assert len(sim.state.tasks) == 1
    body = sim.state.tasks[0].body
    assert body == {
        "equipment": {"type": "external", "value": "EQ-0001"},  # the task endpoint's word
        "description": "Press 1 overheated: check the cooling",
        "startDateTime": "2026-01-01T13:00:00+01:00",  # Europe/Paris, from the network settings
        "endDateTime": "2026-01-01T14:30:00+01:00",
        "allDay": False,
        "assignees": [{"type": "native", "value": 3}, {"type": "email", "value": "john.doe@example.com"}],
        "tags": [{"type": "code", "value": "safety"}, {"type": "native", "value": 12}],
        "checklist": "0d9f6c1e-3a57-4b0e-9c1c-2b8a7e0f4d11",
        "sendEmailToAssignees": False,
        "inheritEquipmentTags": False,
        "metadata": {"line": "A", "gateway": "gw1", "rule": "press1_overheat", "firing": item.firing_uuid},
    }
    headers = sim.state.requests[-1].headers
    assert headers["api-key"] == KEY
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("mw-gateway/") and headers["user-agent"].endswith(
        "(gw1) Mobility Work"
    )
    assert "Api-Key" not in str(delivery.request) and KEY not in str(delivery.request)


async def test_native_equipment_and_timezone_override(sim: MobilityWorkSim) -> None:
    b = MobilityWorkBackend(make_config(sim.url), gateway_id="gw1", timezone="America/New_York")
    try:
        await b.start()
        delivery = await b.deliver(make_item(equipment=7111))
    finally:
        await b.aclose()
    assert delivery.outcome is Outcome.DONE
    body = sim.state.tasks[0].body
    assert body["equipment"] == {"type": "native", "value": 7111}
    assert body["startDateTime"] == "2026-01-01T07:00:00-05:00"


def test_payload_parses_as_iso_with_offset() -> None:
    from zoneinfo import ZoneInfo

    body = task_payload(
        TaskSpec(equipment="X", description="abc", assignees=("a@b.c",)),
        fired_at=FIRED_AT,
        tz=ZoneInfo("Asia/Kolkata"),
        metadata={},
    )
    start = datetime.fromisoformat(body["startDateTime"])
    assert start.utcoffset() is not None and start.timestamp() == FIRED_AT
    assert body["startDateTime"].endswith("+05:30")


async def test_400_is_dead_with_the_server_body_verbatim(
    sim: MobilityWorkSim, backend: MobilityWorkBackend
) -> None:
    delivery = await backend.deliver(make_item(description="ab", assignees=()))
    assert delivery.outcome is Outcome.DEAD and delivery.status_code == 400
    assert delivery.error.startswith("HTTP 400: The request payload is not valid.")
    assert delivery.details["extended_message"]["property_errors"] == {
        "/description": [{"messageKey": "error.payload.min_length", "parameters": {"min": 3, "length": 2}}],
        "/assignees": [{"messageKey": "error.payload.min_items", "parameters": {"min": 1, "count": 0}}],
    }
    assert delivery.request is not None and delivery.request["json"]["description"] == "ab"
    assert sim.state.tasks == []


async def test_unknown_equipment_in_strict_mode_is_dead(
    sim: MobilityWorkSim, backend: MobilityWorkBackend
) -> None:
    sim.state.strict = True
    delivery = await backend.deliver(make_item(equipment=99999))
    assert delivery.outcome is Outcome.DEAD
    assert delivery.details["extended_message"]["property_errors"]["/equipment"] == [
        {"messageKey": "error.payload.equipment.unknown", "parameters": {"type": "native", "value": 99999}}
    ]


async def test_401_pauses_and_a_fixed_key_resumes(sim: MobilityWorkSim, backend: MobilityWorkBackend) -> None:
    sim.set_api_key("rotated")
    delivery = await backend.deliver(make_item(1))
    assert delivery.outcome is Outcome.PAUSE and delivery.status_code == 401
    assert delivery.details["code"] == "401001"
    sim.set_api_key(KEY)
    assert (await backend.deliver(make_item(2))).outcome is Outcome.DONE


async def test_quota_403_pauses(sim: MobilityWorkSim, backend: MobilityWorkBackend) -> None:
    sim.state.monthly_quota = 1
    assert (await backend.deliver(make_item(1))).outcome is Outcome.DONE
    delivery = await backend.deliver(make_item(2))
    assert delivery.outcome is Outcome.PAUSE and delivery.status_code == 403


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_retries(sim: MobilityWorkSim, backend: MobilityWorkBackend, status: int) -> None:
    sim.set_faults(Fault("http_5xx", status=status))
    delivery = await backend.deliver(make_item())
    assert delivery.outcome is Outcome.RETRY and delivery.status_code == status
    # 502/504 come from a proxy: the CMMS behind it may have committed (here it did not; we cannot know).
    assert sim.state.tasks == [] and delivery.maybe_committed is (status == 502)
    assert (await backend.deliver(make_item())).outcome is Outcome.DONE


async def test_429_retry_after_seconds(sim: MobilityWorkSim, backend: MobilityWorkBackend) -> None:
    sim.set_faults(Fault("http_429", retry_after="42"))
    delivery = await backend.deliver(make_item())
    assert delivery.outcome is Outcome.RETRY and delivery.status_code == 429
    assert delivery.retry_after_s == 42.0


async def test_429_retry_after_http_date(sim: MobilityWorkSim, backend: MobilityWorkBackend) -> None:
    sim.set_faults(Fault("http_429", retry_after=email.utils.formatdate(FIRED_AT + 90, usegmt=True)))
    delivery = await backend.deliver(make_item())
    assert delivery.outcome is Outcome.RETRY
    assert delivery.retry_after_s == 90.0  # against the backend's (manual) clock


async def test_latency_still_delivers(sim: MobilityWorkSim, backend: MobilityWorkBackend) -> None:
    sim.set_faults(Fault("latency", delay_s=0.2))
    delivery = await backend.deliver(make_item())
    assert delivery.outcome is Outcome.DONE and delivery.elapsed_s >= 0.2


async def test_timeout_retries_and_records_nothing(sim: MobilityWorkSim) -> None:
    b = MobilityWorkBackend(make_config(sim.url, read_timeout=0.3), gateway_id="gw1")
    try:
        await b.start()
        sim.set_faults(Fault("timeout"))
        delivery = await b.deliver(make_item())
    finally:
        await b.aclose()
    assert delivery.outcome is Outcome.RETRY and delivery.status_code is None
    assert "read timeout" in delivery.error and delivery.maybe_committed
    assert sim.state.tasks == []


async def test_reset_retries(sim: MobilityWorkSim, backend: MobilityWorkBackend) -> None:
    sim.set_faults(Fault("reset"))
    delivery = await backend.deliver(make_item())
    assert delivery.outcome is Outcome.RETRY and delivery.status_code is None
    assert sim.state.tasks == []
    assert (await backend.deliver(make_item())).outcome is Outcome.DONE


async def test_commit_lost_records_the_task_and_retries(
    sim: MobilityWorkSim, backend: MobilityWorkBackend
) -> None:
    item = make_item()
    sim.set_faults(Fault("commit_lost"))
    delivery = await backend.deliver(item)
    assert delivery.outcome is Outcome.RETRY and delivery.maybe_committed
    assert "may have been committed" in delivery.error
    assert [t.metadata["firing"] for t in sim.state.tasks] == [item.firing_uuid]
    # The retry creates the duplicate the ledger will report: two tasks for one firing.
    assert (await backend.deliver(item)).outcome is Outcome.DONE
    assert len(sim.state.task_for_firing(item.firing_uuid)) == 2


async def test_connection_refused_retries_then_recovers(
    sim: MobilityWorkSim, backend: MobilityWorkBackend
) -> None:
    await sim.down()
    delivery = await backend.deliver(make_item())
    assert delivery.outcome is Outcome.RETRY and not delivery.maybe_committed
    assert "cannot connect" in delivery.error
    await sim.up()
    assert (await backend.deliver(make_item())).outcome is Outcome.DONE


async def test_started_while_down_learns_timezone_later(sim: MobilityWorkSim) -> None:
    await sim.down()
    b = MobilityWorkBackend(make_config(sim.url), gateway_id="gw1")
    try:
        assert (await b.start()).timezone is None
        await sim.up()
        assert (await b.deliver(make_item())).outcome is Outcome.DONE
    finally:
        await b.aclose()
    assert sim.state.tasks[0].body["startDateTime"].endswith("+01:00")


async def test_one_keep_alive_connection(sim: MobilityWorkSim, backend: MobilityWorkBackend) -> None:
    for n in range(5):
        assert (await backend.deliver(make_item(n))).outcome is Outcome.DONE
    assert len(sim.state.tasks) == 5
    assert len({r.client for r in sim.state.requests}) == 1


@pytest.mark.parametrize(
    ("form", "sent", "outcome"),
    [
        ("external", {"type": "external", "value": "EQ-0001"}, Outcome.DONE),  # the task endpoint's words
        ("plain", "EQ-0001", Outcome.DONE),  # type inference
        # a network that proves the spare parts' word right for tasks too; our simulator follows the text
        ("externalReference", {"type": "externalReference", "value": "EQ-0001"}, Outcome.DEAD),
    ],
)
async def test_the_equipment_identifier_form_is_an_option(
    sim: MobilityWorkSim, form: str, sent: Any, outcome: Outcome
) -> None:
    b = MobilityWorkBackend(
        make_config(sim.url, equipment_identifier=form), gateway_id="gw1", clock=ManualClock(FIRED_AT)
    )
    await b.start()
    try:
        delivery = await b.deliver(make_item())
    finally:
        await b.aclose()
    assert delivery.outcome is outcome, delivery.error
    assert sim.state.requests[-1].body["equipment"] == sent


def test_the_default_equipment_identifier_is_the_task_endpoints_word() -> None:
    assert MobilityWorkConfig(kind="mobility_work", api_key=SecretStr("k")).equipment_identifier == "external"


async def test_unknown_network_settings_are_said_once_and_their_arrival_too(
    sim: MobilityWorkSim, caplog: pytest.LogCaptureFixture
) -> None:
    await sim.down()
    b = MobilityWorkBackend(make_config(sim.url), gateway_id="gw1", clock=ManualClock(FIRED_AT))
    try:
        with caplog.at_level(logging.DEBUG, logger="gateway.cmms.mobility_work"):
            await b.start()
            for _ in range(3):
                assert (await b.deliver(make_item())).outcome is Outcome.RETRY
            await sim.up()
            assert (await b.deliver(make_item())).outcome is Outcome.DONE
    finally:
        await b.aclose()
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert [level for level, _ in said] == [logging.WARNING, logging.INFO], said
    assert said[0][1].startswith("Mobility Work network settings: Mobility Work unreachable (")
    assert "timezone Europe/Paris" in said[1][1]


@pytest.mark.parametrize(("status", "outcome"), [(503, Outcome.RETRY), (422, Outcome.DEAD)])
async def test_an_absurdly_nested_json_answer_is_kept_as_text(
    sim: MobilityWorkSim, backend: MobilityWorkBackend, status: int, outcome: Outcome
) -> None:
    """Before: json's C decoder raised RecursionError on 100,000 nested arrays, which escaped the backend."""
    sim.set_faults(Fault("deep_json", status=status))
    delivery = await backend.deliver(make_item())
    assert delivery.outcome is outcome and delivery.status_code == status
    assert isinstance(delivery.details, str) and delivery.details.startswith("[[[[")


async def test_absurdly_nested_network_settings_start_in_degraded_mode(sim: MobilityWorkSim) -> None:
    sim.set_faults(Fault("deep_json", status=200, path="/network/settings"))
    backend = MobilityWorkBackend(make_config(sim.url), gateway_id="gw1", clock=ManualClock(FIRED_AT))
    await backend.start()
    try:
        assert backend.network is None
        assert (await backend.deliver(make_item())).outcome is Outcome.DONE
    finally:
        await backend.aclose()
