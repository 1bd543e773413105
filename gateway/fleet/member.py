"""This gateway as a member of the fleet: the outbound NATS connection, the relayed-webhook consumer, the
heartbeat and the fleet quota, behind narrow interfaces (the runtime supplies callables, nothing more):

- `handle(headers, body, path, received_at) -> status`: the webhook receiver direct HTTP delivery uses;
- `summary() -> dict`: this gateway's status summary for the heartbeat;
- `local_used(month) -> int`: this gateway's own tasks of a month (its outbox), for the local share.

NATS being away at start-up is not an error: the member keeps connecting in the background, the quota uses
the local share meanwhile, and the relay keeps the webhooks until the consumer comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from gateway.fleet import names
from gateway.fleet.config import FleetSection
from gateway.fleet.consumer import FleetConsumer, Handler
from gateway.fleet.quota import FleetQuota
from gateway.fleet.status import Heartbeat

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue

log = logging.getLogger(__name__)


class FleetMember:
    def __init__(
        self,
        section: FleetSection,
        gateway_id: str,
        *,
        handle: Handler | None,
        summary: Callable[[], Awaitable[dict[str, Any]]],
        quota_limit: int | None,
        network: str,
        timezone: str,
        reserve_ratio: float,
        local_used: Callable[[str], Awaitable[int]] | None = None,
    ) -> None:
        self.section = section
        self.gateway_id = gateway_id
        self.handle = handle if section.webhooks == "relay" else None
        self.summary = summary
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.consumer: FleetConsumer | None = None
        self.heartbeat: Heartbeat | None = None
        self._quota_kv: KeyValue | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.quota: FleetQuota | None = None
        if section.quota == "shared" and quota_limit is not None:
            self.quota = FleetQuota(
                self._get_quota_kv,
                network=network,
                limit=quota_limit,
                reserve_ratio=reserve_ratio,
                share=section.quota_share,
                timezone=timezone,
                connected=self.connected,
                local_used=local_used,
                timeout=section.request_timeout,
            )

    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def _get_quota_kv(self) -> KeyValue:
        if self._quota_kv is None:
            if self.js is None:
                raise ConnectionError("not connected to NATS")
            from gateway.fleet.bus import ensure_bucket

            self._quota_kv = await ensure_bucket(self.js, self.section, names.quota_bucket(self.section.name))
        return self._quota_kv

    async def start(self) -> None:
        """Try to connect now (bounded by connect_timeout), so the first reservations already go to the
        fleet; when NATS is away, keep trying in the background."""
        from gateway.fleet.bus import connect

        with contextlib.suppress(Exception):
            self.nc = await connect(self.section, name=self.gateway_id)
            self.js = self.nc.jetstream(timeout=self.section.request_timeout)
            if self.quota is not None:
                await asyncio.wait_for(self._get_quota_kv(), self.section.request_timeout * 2)
        self._tasks.append(asyncio.create_task(self._run(), name="fleet"))

    async def _connect(self) -> None:
        from gateway.fleet.bus import connect

        delay = 0.5
        while self.nc is None:
            try:
                self.nc = await connect(self.section, name=self.gateway_id)
            except Exception as exc:
                log.warning("fleet: NATS unreachable (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        log.info("fleet: connected to NATS (fleet %s, gateway %s)", self.section.name, self.gateway_id)

    async def _run(self) -> None:
        from gateway.fleet.bus import ensure_bucket

        await self._connect()
        assert self.nc is not None
        if self.js is None:
            self.js = self.nc.jetstream(timeout=self.section.request_timeout)
        status_kv: KeyValue | None = None
        while status_kv is None:
            try:
                status_kv = await ensure_bucket(self.js, self.section, names.status_bucket(self.section.name))
            except Exception as exc:
                log.debug("fleet: status bucket not available yet: %s", exc)
                await asyncio.sleep(1.0)
        self.heartbeat = Heartbeat(status_kv, self.gateway_id, self.summary, interval=self.section.heartbeat)
        self._tasks.append(asyncio.create_task(self.heartbeat.run(), name="fleet-heartbeat"))
        if self.handle is not None:
            self.consumer = FleetConsumer(self.js, self.section, self.gateway_id, self.handle)
            self._tasks.append(asyncio.create_task(self.consumer.run(), name="fleet-consumer"))

    async def stop_intake(self) -> None:
        """Stop consuming relayed webhooks (unacknowledged ones are redelivered after ack_wait)."""
        if self.consumer is not None:
            for task in [t for t in self._tasks if t.get_name() == "fleet-consumer"]:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                self._tasks.remove(task)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
            self.nc = None

    def reloaded(self, section: FleetSection | None, quota_limit: int | None) -> None:
        """A reload: the quota follows the plan; anything else of `fleet:` needs a restart (said once)."""
        if self.quota is not None and quota_limit is not None:
            self.quota.limit = quota_limit
        if section != self.section:
            log.warning("fleet: the fleet: section changed; it takes effect at the next restart")

    def status(self) -> dict[str, Any]:
        return {
            "fleet": self.section.name,
            "connected": self.connected(),
            "webhooks": self.section.webhooks,
            "consumed": dict(self.consumer.stats.counts) if self.consumer else {},
            "quota": self.section.quota,
            "quota_offline": bool(self.quota and self.quota.offline),
            "fleet_quota_used": self.quota.fleet_used if self.quota else None,
        }
