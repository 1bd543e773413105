"""GET /metrics: the gateway in the Prometheus text format, from a CollectorRegistry of our own.

Event counts (firings, delivery attempts and their latency, webhooks) are counted from the typed events
(FiringRecorded, DeliveryDone, WebhookAnswered); everything else (source counters, outbox depth, quota, disk)
is read from a StatusSnapshot when Prometheus scrapes. The database is queried once per scrape, in
`refresh()`, before the text is made.

Families (all prefixed `mw_gateway_`, plus prometheus-client's `process_*` on Linux):

    source_samples_total{source}                 samples emitted by each source
    source_read_errors_total{source}             failed reads or decodes
    source_reconnects_total{source}              links re-established after being down
    source_up{source}                            1 when the link is up
    source_last_sample_age_seconds{source}       age of the last good sample (NaN before the first)
    rule_evaluations_total{rule}                 samples and ticks the rule was evaluated on
    engine_refused_values_total{signal}          values the engine refused (docs/rules.md), bad samples now
    rule_firings_total{rule,status}              firings, by what the store made of them (queued, suppressed,
                                                 shadow, awaiting_approval)
    outbox_rows{state}                           outbox depth: queued, retrying, delivered, dead, dropped,
                                                 shadow, awaiting_approval, rejected
    outbox_awaiting_approval                     rows of `mode: approve` rules waiting for a person
    outbox_awaiting_approval_oldest_age_seconds  how long the oldest of them has waited (0: none waits)
    delivery_attempts_total{result}              done, retry, dead, pause
    delivery_latency_seconds{result}             histogram of one delivery attempt
    dispatcher_paused                            1 while paused on credentials or plan
    quota_used / quota_limit                     this month's tasks against the plan's quota
    webhooks_total{event,result}                 webhooks received, by event type (a documented type,
                                                 "other" or "unknown") and what we answered
    state_dir_bytes / disk_free_bytes            the state directory's size and the free space beside it
    info{version,gateway,cmms}                   constant 1
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import __version__
from gateway.core.events import DeliveryDone, EventBus, FiringRecorded, WebhookAnswered
from gateway.core.samples import LinkState
from gateway.core.views import DiskView, StatusSnapshot
from gateway.web.webhooks import EVENT_SCOPE_KEY

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
    "engine_refused_values",
    "rule_firings",
    "outbox_rows",
    "outbox_awaiting_approval",
    "outbox_awaiting_approval_oldest_age_seconds",
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
    """The gateway's metrics. `attach(events)` subscribes to the events; `render()` makes the exposition text
    from a fresh snapshot and the outbox counts."""

    def __init__(
        self,
        snapshot: Callable[[], StatusSnapshot],
        outbox_counts: Callable[[], Awaitable[dict[str, int]]],
        disk: Callable[[], DiskView],
        *,
        approval_queue: Callable[[], Awaitable[tuple[int, float | None]]] | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.approval_queue = approval_queue
        self._approvals: tuple[int, float | None] = (0, None)
        self.outbox_counts = outbox_counts
        self.disk = disk
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
        self._outbox: dict[str, int] = {}
        self._disk: DiskView | None = None
        self._snap: StatusSnapshot | None = None
        self.registry.register(_LiveCollector(self))
        ProcessCollector(namespace="", registry=self.registry)

    def attach(self, events: EventBus) -> GatewayMetrics:
        events.subscribe(FiringRecorded, self.on_firing)
        events.subscribe(DeliveryDone, self.on_delivery)
        events.subscribe(WebhookAnswered, self.on_webhook)
        return self

    def on_firing(self, event: FiringRecorded) -> None:
        self.firings.labels(rule=event.firing.rule_id, status=str(event.result.status)).inc()

    def on_delivery(self, event: DeliveryDone) -> None:
        result = str(event.delivery.outcome.value)
        self.attempts.labels(result=result).inc()
        self.latency.labels(result=result).observe(max(0.0, float(event.delivery.elapsed_s or 0.0)))

    def on_webhook(self, event: WebhookAnswered) -> None:
        self.webhooks.labels(event=event.event, result=event.result).inc()

    async def refresh(self) -> None:
        """What needs the database or the disk, read once per scrape; the snapshot of the running parts."""
        self._outbox = await self.outbox_counts()
        if self.approval_queue is not None:
            self._approvals = await self.approval_queue()
        self._disk = self.disk()
        self._snap = self.snapshot()

    async def render(self) -> bytes:
        await self.refresh()
        return bytes(generate_latest(self.registry))


class _LiveCollector(Collector):
    """Values read from the running parts at scrape time."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snap = self.metrics._snap
        if snap is None:
            return
        now = snap.now
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
        for st in sorted(snap.sources, key=lambda s: s.name):
            name = st.name
            samples.add_metric([name], st.samples)
            errors.add_metric([name], st.errors)
            reconnects.add_metric([name], st.reconnects)
            up.add_metric([name], 1.0 if st.link is LinkState.UP else 0.0)
            age.add_metric(
                [name], math.nan if st.last_sample_ts is None else max(0.0, now - st.last_sample_ts)
            )
        yield from (samples, errors, reconnects, up, age)

        evaluations = CounterMetricFamily(
            f"{PREFIX}_rule_evaluations", "Samples and ticks each rule was evaluated on", labels=["rule"]
        )
        for rule_id, count in sorted(snap.evaluations.items()):
            evaluations.add_metric([rule_id], count)
        yield evaluations
        refused = CounterMetricFamily(
            f"{PREFIX}_engine_refused_values",
            "Values the engine refused (NaN, infinities, beyond 64 bits, odd types), taken as bad samples",
            labels=["signal"],
        )
        for signal, count in sorted(snap.refused.items()):
            refused.add_metric([signal], count)
        yield refused

        outbox = GaugeMetricFamily(f"{PREFIX}_outbox_rows", "Outbox rows by state", labels=["state"])
        for state, count in sorted(self.metrics._outbox.items()):
            outbox.add_metric([state], count)
        yield outbox
        waiting, oldest = self.metrics._approvals
        yield GaugeMetricFamily(
            f"{PREFIX}_outbox_awaiting_approval",
            "Outbox rows of mode: approve rules waiting for a person",
            value=waiting,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_outbox_awaiting_approval_oldest_age_seconds",
            "Seconds the oldest row awaiting approval has waited (0 when none waits)",
            value=0.0 if oldest is None else max(0.0, now - oldest),
        )

        status = snap.dispatcher
        yield GaugeMetricFamily(
            f"{PREFIX}_dispatcher_paused",
            "1 while the CMMS refuses our credentials or plan",
            value=1.0 if status.paused else 0.0,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_quota_used", "Tasks counted against this month's CMMS quota", value=status.quota_used
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_quota_limit",
            "This month's CMMS task quota (NaN: none)",
            value=math.nan if status.quota_limit is None else status.quota_limit,
        )

        disk = self.metrics._disk
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
        info.add_metric([__version__, snap.gateway_id, snap.cmms], 1.0)
        yield info


class WebhookMetricsMiddleware:
    """Counts `POST /webhooks/...` by event type and result, as the receiver answered them.

    The event type is the label the webhook route put in the scope for an accepted request (a documented
    event type, "other" or "unknown": gateway/web/webhooks.py `event_label`), so an unauthenticated caller
    cannot fill the label space; refused requests count as event "unverified". The body is not copied here
    (it was, up to 1 MiB per request: twice the memory of every slow body).
    """

    def __init__(self, app: ASGIApp, *, events: EventBus) -> None:
        self.app = app
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/webhooks/"):
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            accepted = 200 <= status < 300
            event = str(scope.get(EVENT_SCOPE_KEY, "unknown")) if accepted else "unverified"
            self.events.publish(WebhookAnswered(event, "accepted" if accepted else f"http_{status}"))
