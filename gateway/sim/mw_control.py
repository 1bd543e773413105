"""The Mobility Work simulator's own `/_sim/` routes, beside the shared ones of `harness.control_routes`
(state, requests, faults, down, reset): tasks, bulk, key, config, seed, webhook target, webhooks."""

from __future__ import annotations

from typing import Any, Protocol

from starlette.requests import Request
from starlette.routing import Route

from gateway.sim.harness import control_handler, json_object
from gateway.sim.mw_state import PLANS, SimState, WebhookDelivery
from gateway.sim.mw_webhooks import SimEquipment, SimUser


class MobilityWorkSim(Protocol):
    """What these routes drive (gateway/sim/mobility_work.py: MobilityWorkSim), named here so that the two
    modules do not import each other."""

    state: SimState

    def set_api_key(self, key: str) -> None: ...

    def set_webhook_target(self, url: str | None, secret: str | None = None) -> None: ...

    async def send_webhook(self, event: str, **params: Any) -> WebhookDelivery: ...

    async def resend_webhook(self, delivery_id: int, *, same_signature: bool = False) -> WebhookDelivery: ...


_SETTINGS = frozenset(
    (
        "plan",
        "monthly_quota",
        "strict",
        "timezone",
        "currency",
        "network_name",
        "auto_webhooks",
        "signature_template",
    )
)


def mw_control_routes(sim: MobilityWorkSim) -> list[Route]:
    s = sim.state

    async def get_tasks(request: Request) -> Any:
        return [t.to_json() for t in s.tasks]

    async def get_bulk(request: Request) -> Any:
        return [{"path": b.path, "count": len(b.items), "items": b.items, "at": b.at} for b in s.bulk]

    async def key(request: Request) -> Any:
        data = await json_object(request)
        sim.set_api_key(str(data["api_key"]))
        return {"ok": True}

    async def config(request: Request) -> Any:
        data = await json_object(request)
        unknown = set(data) - _SETTINGS
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        if "plan" in data and data["plan"] not in PLANS:
            raise ValueError(f"plan must be one of {', '.join(PLANS)}")
        for name, value in data.items():
            setattr(s, name, value)
        return s.snapshot()

    async def seed(request: Request) -> Any:
        data = await json_object(request)
        for eq in data.get("equipment", []):
            s.equipment.append(SimEquipment(**eq))
        for user in data.get("users", []):
            s.users.append(SimUser(**user))
        for tag in data.get("tags", []):
            s.tags.append((tag["type"], tag["value"]))
        if data.get("replace"):
            s.equipment = [SimEquipment(**eq) for eq in data.get("equipment", [])]
            s.users = [SimUser(**u) for u in data.get("users", [])]
        return {"equipment": len(s.equipment), "users": len(s.users), "tags": len(s.tags)}

    async def webhook_target(request: Request) -> Any:
        data = await json_object(request)
        sim.set_webhook_target(data.get("url"), data.get("secret"))
        return {"url": s.webhook_url, "signed": bool(s.webhook_secret)}

    async def webhooks(request: Request) -> Any:
        if request.method == "GET":
            return [d.to_json() for d in s.deliveries]
        data = await json_object(request)
        event = data.pop("event")
        delivery = await sim.send_webhook(event, **data)
        return delivery.to_json()

    async def resend(request: Request) -> Any:
        data = await json_object(request)
        delivery = await sim.resend_webhook(
            int(data["delivery_id"]), same_signature=bool(data.get("same_signature", False))
        )
        return delivery.to_json()

    return [
        Route("/_sim/tasks", control_handler(get_tasks), methods=["GET"]),
        Route("/_sim/bulk", control_handler(get_bulk), methods=["GET"]),
        Route("/_sim/key", control_handler(key), methods=["POST"]),
        Route("/_sim/config", control_handler(config), methods=["POST"]),
        Route("/_sim/seed", control_handler(seed), methods=["POST"]),
        Route("/_sim/webhook-target", control_handler(webhook_target), methods=["POST"]),
        Route("/_sim/webhooks", control_handler(webhooks), methods=["GET", "POST"]),
        Route("/_sim/webhooks/resend", control_handler(resend), methods=["POST"]),
    ]
