"""Fleet test set-up: a relay over HTTP; gateways = real stores + webhook receivers + fleet consumers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from nats.aio.client import Client

from gateway.config import HttpSection
from gateway.core.clock import Clock, SystemClock
from gateway.fleet.bus import connect, ensure_stream
from gateway.fleet.config import BusSection, RelayConfig
from gateway.fleet.consumer import FleetConsumer, receiver_handler
from gateway.fleet.relay import Relay
from gateway.sim.nats_cluster import free_port
from gateway.store import Store
from gateway.web.receiver import WebhookReceiver
from tests.web.webhook_server import serve_app

SECRET = "whsec-fleet-5e1"
TASK_BODY = {
    "equipment": 9,
    "description": "fleet task",
    "startDateTime": "2026-12-01T09:00:00+00:00",
    "endDateTime": "2026-12-01T10:00:00+00:00",
    "allDay": False,
    "assignees": [3],
}


def new_bus(urls: list[str], **extra: Any) -> BusSection:
    return BusSection(nats=tuple(urls), name=f"t{uuid.uuid4().hex[:8]}", **extra)


@dataclass
class FleetGateway:
    name: str
    store: Store
    receiver: WebhookReceiver
    bus: BusSection
    nc: Client | None = None
    consumer: FleetConsumer | None = None
    task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.nc = await connect(self.bus, name=self.name)
        self.consumer = FleetConsumer(
            self.nc.jetstream(timeout=self.bus.request_timeout),
            self.bus,
            self.name,
            receiver_handler(lambda: self.receiver),
            retry_delay=0.2,
            ack_wait=3.0,  # a batch fetched by a consumer that was stopped comes again after this
        )
        with contextlib.suppress(Exception):  # the cluster may be degraded: run() keeps trying
            await self.consumer.ensure()
        self.task = asyncio.create_task(self.consumer.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        if self.nc is not None:
            await self.nc.close()
            self.nc = None

    async def tasks(self) -> dict[str, Any]:
        return {t.task_id: t for t in await self.store.ledger.tasks()}


@contextlib.asynccontextmanager
async def fleet_gateway(
    tmp: Path, name: str, bus: BusSection, *, clock: Clock | None = None, start: bool = True
) -> AsyncIterator[FleetGateway]:
    store = await Store.open(tmp / name, gateway_id=name, clock=clock or SystemClock())
    receiver = WebhookReceiver(store.ledger, HttpSection(webhook_secret=SECRET), clock=store.clock)
    gw = FleetGateway(name, store, receiver, bus)
    try:
        if start:
            await gw.start()
        yield gw
    finally:
        await gw.stop()
        await store.close()


@dataclass
class RunningRelay:
    url: str
    relay: Relay
    nc: Client
    sent: list[int] = field(default_factory=list)


@contextlib.asynccontextmanager
async def running_relay(
    bus: BusSection, *, gateways: tuple[str, ...] = (), **extra: Any
) -> AsyncIterator[RunningRelay]:
    config = RelayConfig(webhook_secret=SECRET, fleet=bus, gateways=gateways, **extra)
    nc = await connect(bus, name="relay")
    js = nc.jetstream(timeout=bus.request_timeout)
    await ensure_stream(js, bus)
    relay = Relay(config, nc, js)
    try:
        async with serve_app(relay.app(), free_port()) as url:
            yield RunningRelay(url, relay, nc)
    finally:
        await nc.close()


async def create_task(client: httpx.AsyncClient, gateway: str, n: int) -> str:
    body = {**TASK_BODY, "metadata": {"gateway": gateway, "firing": str(uuid.uuid4()), "rule": f"r{n}"}}
    r = await client.post("/partners/v1/tasks", json=body)
    assert r.status_code == 201, r.text
    return str(r.headers["X-Sim-Task-Id"])
