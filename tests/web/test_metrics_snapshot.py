"""/metrics over a fake snapshot and typed events: no gateway started, no socket."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from gateway.core.delivery import Delivery, OutboxItem, Outcome
from gateway.core.events import DeliveryDone, FiringRecorded
from gateway.core.firings import Firing, TaskSpec
from gateway.core.samples import LinkState
from gateway.store import FiringStatus, Recorded
from gateway.web.metrics import FAMILIES, PREFIX
from tests.web.fakes import NOW, dispatcher, fake, source


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_every_family_is_there_and_reads_the_snapshot():
    f = fake(
        sources=(source("press1"), source("pump7", LinkState.DOWN, last_sample_ts=None)),
        dispatcher=dispatcher(state="paused", quota_used=7, quota_limit=None),
        refused={"press1.temp": 3},
    )
    async with f.client() as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert [n for n in FAMILIES if f"{PREFIX}_{n}" not in names] == []
    got = _samples(response.text)
    assert got[(f"{PREFIX}_source_up", (("source", "press1"),))] == 1.0
    assert got[(f"{PREFIX}_source_up", (("source", "pump7"),))] == 0.0
    assert got[(f"{PREFIX}_source_last_sample_age_seconds", (("source", "press1"),))] == 2.0
    assert math.isnan(got[(f"{PREFIX}_source_last_sample_age_seconds", (("source", "pump7"),))])
    assert got[(f"{PREFIX}_source_samples_total", (("source", "press1"),))] == 120
    assert got[(f"{PREFIX}_rule_evaluations_total", (("rule", "press1-lubrication"),))] == 120
    assert got[(f"{PREFIX}_engine_refused_values_total", (("signal", "press1.temp"),))] == 3
    assert got[(f"{PREFIX}_outbox_rows", (("state", "delivered"),))] == 1
    assert got[(f"{PREFIX}_dispatcher_paused", ())] == 1.0
    assert got[(f"{PREFIX}_quota_used", ())] == 7
    assert math.isnan(got[(f"{PREFIX}_quota_limit", ())])
    assert got[(f"{PREFIX}_state_dir_bytes", ())] == 4096
    info = [k for k in got if k[0] == f"{PREFIX}_info"]
    assert dict(info[0][1])["gateway"] == "gw-fake" and dict(info[0][1])["cmms"] == "mobility_work"


async def test_events_are_counted():
    f = fake()
    async with f.client() as client:
        firing = Firing("press1-lubrication:1000", "press1-lubrication", NOW, TaskSpec("EQ-1", "Lubricate"))
        f.events.publish(FiringRecorded(firing, Recorded(firing.key, "u-1", FiringStatus.SUPPRESSED, "u-0")))
        item = OutboxItem(outbox_id=1, firing_uuid="u-1", firing=firing, attempts=1)
        f.events.publish(DeliveryDone(item, Delivery(Outcome.RETRY, status_code=503, elapsed_s=0.3)))
        await client.post("/webhooks/mobility-work", content=b'{"_event": "TaskWasScheduled", "taskId": 5}')
        await client.post("/webhooks/mobility-work", content=b"not json")
        got = _samples((await client.get("/metrics")).text)
    assert (
        got[(f"{PREFIX}_rule_firings_total", (("rule", "press1-lubrication"), ("status", "suppressed")))] == 1
    )
    assert got[(f"{PREFIX}_delivery_attempts_total", (("result", "retry"),))] == 1
    assert got[(f"{PREFIX}_delivery_latency_seconds_count", (("result", "retry"),))] == 1
    webhooks = f"{PREFIX}_webhooks_total"
    assert got[(webhooks, (("event", "TaskWasScheduled"), ("result", "accepted")))] == 1
    assert got[(webhooks, (("event", "unverified"), ("result", "http_400")))] == 1
