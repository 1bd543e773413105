"""Glue between a running gateway and its FleetMember: what the member needs, taken from the gateway.

The runtime calls `attach(gw)` once the store, the backend and the dispatcher exist, and `await
member.stop()` when it stops. Everything else lives behind FleetMember's narrow interfaces.
"""

from __future__ import annotations

from typing import Any

from gateway.core.samples import LinkState
from gateway.fleet.consumer import receiver_handler
from gateway.fleet.member import FleetMember


def summary_of(gw: Any) -> Any:
    async def summary() -> dict[str, Any]:
        counts = await gw.store.outbox.counts()
        links = [s.stats.link for s in gw.sources.values()]
        status = gw.dispatcher.status
        member: FleetMember | None = getattr(gw, "fleet", None)
        fleet_used = member.quota.fleet_used if member is not None and member.quota is not None else None
        return {
            "state": status.state.value,
            "sources_up": sum(1 for link in links if link is LinkState.UP),
            "sources_down": sum(1 for link in links if link is not LinkState.UP),
            "outbox_depth": counts.get("queued", 0) + counts.get("retrying", 0),
            "dead_letters": counts.get("dead", 0),
            "quota_month": status.quota_month,
            "quota_used": fleet_used if fleet_used is not None else status.quota_used,
            "quota_limit": status.quota_limit,
            "own_tasks": status.quota_used,
        }

    return summary


def receiver_of(gw: Any) -> Any:
    """The receiver direct HTTP delivery uses, for the current HTTP settings (made again after a reload that
    changed them): records through the engine consumer, stock levels onto the engine's input queue."""
    from gateway.runtime.views import PipelineLedger
    from gateway.web.receiver import WebhookReceiver

    made: dict[str, Any] = {}

    def get() -> Any:
        http = gw.config.http
        if made.get("http") is not http:
            made["http"] = http
            made["receiver"] = WebhookReceiver(
                PipelineLedger(gw.pipeline), http, clock=gw.clock, publish_input=gw.pipeline.publish
            )
        return made["receiver"]

    return get


def attach(gw: Any) -> FleetMember:
    """A FleetMember for `gw` (not started), with its quota guard set on the dispatcher."""
    from gateway.fleet.cli import require_nats

    require_nats()
    cfg = gw.config
    section = cfg.fleet
    network = gw.network.network_id or getattr(cfg.cmms, "network_name", None) or section.name
    member = FleetMember(
        section,
        cfg.gateway.id,
        handle=receiver_handler(receiver_of(gw)),
        summary=summary_of(gw),
        quota_limit=cfg.cmms.quota,
        network=str(network),
        timezone=gw.timezone,
        reserve_ratio=cfg.dispatcher.high_priority_reserve_ratio,
        local_used=gw.store.outbox.quota_used,
    )
    if member.quota is not None:
        gw.dispatcher.fleet_quota = member.quota
    return member
