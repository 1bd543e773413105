"""GET /metrics: the gateway in the Prometheus text format, from a CollectorRegistry of our own.

Event counts (firings, delivery attempts and their latency, webhooks) are counted by a listener on the
Gateway's events; everything else (source counters, outbox depth, quota, disk) is read from the running parts
when Prometheus scrapes. The database is queried once per scrape, in `refresh()`, before the text is made.

Families (all prefixed `mw_gateway_`, plus prometheus-client's `process_*` on Linux):

    source_samples_total{source}                 samples emitted by each source
    source_read_errors_total{source}             failed reads or decodes
    source_reconnects_total{source}              links re-established after being down
    source_up{source}                            1 when the link is up
    source_last_sample_age_seconds{source}       age of the last good sample (NaN before the first)
    rule_evaluations_total{rule}                 samples and ticks the rule was evaluated on
    rule_firings_total{rule,status}              firings, by what the store made of them (queued, suppressed)
    outbox_rows{state}                           outbox depth: queued, retrying, delivered, dead, dropped
    delivery_attempts_total{result}              done, retry, dead, pause
    delivery_latency_seconds{result}             histogram of one delivery attempt
    dispatcher_paused                            1 while paused on credentials or plan
    quota_used / quota_limit                     this month's tasks against the plan's quota
    webhooks_total{event,result}                 webhooks received, by event type and what we answered
    state_dir_bytes / disk_free_bytes            the state directory's size and the free space beside it
    info{version,gateway,cmms}                   constant 1
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import __version__
from gateway.disk import DiskStatus, check_disk

if TYPE_CHECKING:
    from gateway.app import Gateway

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "mw_gateway"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

FAMILIES = (
    "source_samples",
    "source_read_errors",
    "source_reconnects",
    "source_up",
    "source_last_sample_age_seconds",
    "rule_evaluations",
    "rule_firings",
    "outbox_rows",
    "delivery_attempts",
    "delivery_latency_seconds",
    "dispatcher_paused",
    "quota_used",
    "quota_limit",
    "webhooks",
    "state_dir_bytes",
    "disk_free_bytes",
    "info",
)


class GatewayMetrics:
    """The gateway's metrics. `attach()` subscribes to its events; `render()` makes the exposition text."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.registry = CollectorRegistry(auto_describe=True)
        self.firings = Counter(
            f"{PREFIX}_rule_firings",
            "Rule firings, by what the store made of them",
            ["rule", "status"],
            registry=self.registry,
        )
        self.attempts = Counter(
            f"{PREFIX}_delivery_attempts",
            "Delivery attempts toward the CMMS, by result",
            ["result"],
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_delivery_latency_seconds",
            "Duration of one delivery attempt",
            ["result"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.webhooks = Counter(
            f"{PREFIX}_webhooks",
            "Webhooks received, by event type and result",
            ["event", "result"],
            registry=self.registry,
        )
        for result in ("done", "retry", "dead", "pause"):
            self.attempts.labels(result=result)
        self._snapshot: dict[str, Any] = {}
        self.registry.register(_LiveCollector(self))
        ProcessCollector(namespace="", registry=self.registry)

    def attach(self) -> GatewayMetrics:
        self.gw.listeners.append(self.on_event)
        return self

    def on_event(self, kind: str, payload: Any) -> None:
        if kind == "firing":
            firing, result = payload
            self.firings.labels(
                rule=firing.rule_id, status=str(getattr(result.status, "value", result.status))
            ).inc()
        elif kind == "delivery":
            _item, delivery = payload
            result = str(delivery.outcome.value)
            self.attempts.labels(result=result).inc()
            self.latency.labels(result=result).observe(max(0.0, float(delivery.elapsed_s or 0.0)))
        elif kind == "webhook":
            event, result = payload
            self.webhooks.labels(event=str(event), result=str(result)).inc()

    async def refresh(self) -> None:
        """What needs the database or the disk, read once per scrape."""
        self._snapshot = {
            "outbox": await self.gw.store.outbox.counts(),
            "disk": check_disk(self.gw.config.state_dir),
        }

    async def render(self) -> bytes:
        await self.refresh()
        return bytes(generate_latest(self.registry))


class _LiveCollector(Collector):
    """Values read from the running parts at scrape time."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        gw = self.metrics.gw
        now = gw.clock.now()
        samples = CounterMetricFamily(
            f"{PREFIX}_source_samples", "Samples emitted by each source", labels=["source"]
        )
        errors = CounterMetricFamily(
            f"{PREFIX}_source_read_errors", "Failed reads or decodes", labels=["source"]
        )
        reconnects = CounterMetricFamily(
            f"{PREFIX}_source_reconnects", "Links re-established after being down", labels=["source"]
        )
        up = GaugeMetricFamily(f"{PREFIX}_source_up", "1 when the source's link is up", labels=["source"])
        age = GaugeMetricFamily(
            f"{PREFIX}_source_last_sample_age_seconds",
            "Seconds since the source's last good sample (NaN before the first)",
            labels=["source"],
        )
        for name, source in sorted(gw.sources.items()):
            st = source.stats
            samples.add_metric([name], st.samples)
            errors.add_metric([name], st.errors)
            reconnects.add_metric([name], st.reconnects)
            up.add_metric([name], 1.0 if st.link.value == "up" else 0.0)
            age.add_metric(
                [name], math.nan if st.last_sample_ts is None else max(0.0, now - st.last_sample_ts)
            )
        yield from (samples, errors, reconnects, up, age)

        evaluations = CounterMetricFamily(
            f"{PREFIX}_rule_evaluations", "Samples and ticks each rule was evaluated on", labels=["rule"]
        )
        for rule_id, count in sorted(_evaluations(gw).items()):
            evaluations.add_metric([rule_id], count)
        yield evaluations

        snapshot = self.metrics._snapshot
        outbox = GaugeMetricFamily(f"{PREFIX}_outbox_rows", "Outbox rows by state", labels=["state"])
        for state, count in sorted(snapshot.get("outbox", {}).items()):
            outbox.add_metric([state], count)
        yield outbox

        status = gw.dispatcher.status
        yield GaugeMetricFamily(
            f"{PREFIX}_dispatcher_paused",
            "1 while the CMMS refuses our credentials or plan",
            value=1.0 if status.state.value == "paused" else 0.0,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_quota_used", "Tasks counted against this month's CMMS quota", value=status.quota_used
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_quota_limit",
            "This month's CMMS task quota (NaN: none)",
            value=math.nan if status.quota_limit is None else status.quota_limit,
        )

        disk: DiskStatus | None = snapshot.get("disk")
        if disk is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_state_dir_bytes", "Bytes used by the state directory", value=disk.state_bytes
            )
            yield GaugeMetricFamily(
                f"{PREFIX}_disk_free_bytes",
                "Bytes free on the state directory's filesystem",
                value=disk.free_bytes,
            )
        info = GaugeMetricFamily(
            f"{PREFIX}_info", "The gateway's version, id and CMMS", labels=["version", "gateway", "cmms"]
        )
        info.add_metric([__version__, gw.config.gateway.id, gw.backend.kind], 1.0)
        yield info


def _evaluations(gw: Gateway) -> dict[str, int]:
    """Per-rule evaluation counts from the engine; disabled rules report 0 so the family is never empty."""
    out = {str(rule.id): 0 for rule in gw.rules.rules}
    out.update(gw.engine.evaluations())
    return out


class WebhookMetricsMiddleware:
    """Counts `POST /webhooks/...` by event type and result, as the receiver answered them.

    The event type is read from the body the receiver saw (`_event` for Mobility Work, `type` for
    CloudEvents); only for accepted requests, so an unauthenticated caller cannot fill the label space:
    refused ones are counted as event "unverified".
    """

    MAX_BODY = 1_048_576

    def __init__(self, app: ASGIApp, *, metrics: Callable[[], GatewayMetrics | None]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/webhooks/"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        status = 500

        async def receive_wrapper() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request" and size < self.MAX_BODY:
                chunk = message.get("body", b"")
                chunks.append(chunk)
                size += len(chunk)
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            metrics = self.metrics()
            if metrics is not None:
                accepted = 200 <= status < 300
                event = _event_of(b"".join(chunks)) if accepted else "unverified"
                metrics.on_event("webhook", (event, "accepted" if accepted else f"http_{status}"))


def _event_of(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return "unknown"
    if not isinstance(data, dict):
        return "unknown"
    event = data.get("_event") or data.get("type") or "unknown"
    return str(event)[:64]
