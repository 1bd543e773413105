"""A Mobility Work API simulator: strict validation, fault injection, signed webhooks, a control API.

In-process (tests, the demo):

    async with run_mobility_work_sim(api_key="k", webhook_url=..., webhook_secret=...) as sim:
        sim.url, sim.state.tasks, sim.state.requests
        sim.set_faults(Fault("http_5xx", count=2))
        await sim.send_webhook("TaskWasStarted", task_id=sim.state.tasks[0].id)

Standalone: `mw-gateway mw-sim --port 8471` (`main(argv)`), driven over HTTP with the `/_sim/` control API
(docs/mobility-work.md).

The parts: `harness` (faults, the record of calls, the shared `/_sim/` routes) and `server` (listening,
dropping connections, down/up) are shared by every simulator; `mw_state` is what this one knows,
`mw_validation`/`mw_bulk_checks` what the document accepts, `mw_webhooks`/`mw_deliveries` what it sends,
`mw_control` its own `/_sim/` routes. This module is the API endpoints and the runners.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from gateway.sim import mw_bulk_checks as b
from gateway.sim import mw_validation as v
from gateway.sim.harness import Fault, FaultInjector, control_routes
from gateway.sim.harness import json_response as _json
from gateway.sim.mw_control import mw_control_routes
from gateway.sim.mw_deliveries import WebhookSender, build_webhook
from gateway.sim.mw_state import (
    DEFAULT_API_KEY,
    DEFAULT_NETWORK_ID,
    PLANS,
    BulkRequest,
    SimState,
    WebhookDelivery,
)
from gateway.sim.mw_webhooks import SimEquipment, SimSparePart, SimTask, SimUser
from gateway.sim.server import SimServer
from gateway.web.signature import DEFAULT_TEMPLATE

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_NETWORK_ID",
    "PLANS",
    "Fault",
    "MobilityWorkSim",
    "SimEquipment",
    "SimSparePart",
    "SimState",
    "SimTask",
    "SimUser",
    "WebhookDelivery",
    "main",
    "run_mobility_work_sim",
]


def mw_error(status: int, message: str) -> dict[str, Any]:
    """The document's error shape, for the simulated 5xx/429 answers."""
    return {"http_status_code": status, "code": f"{status}000", "message": message}


class MobilityWorkSim:
    """The simulator: the API endpoints over `SimState`, in a `SimServer`."""

    def __init__(self, state: SimState, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state
        self.server = SimServer(host=host, port=port)
        self.webhooks = WebhookSender(state)
        self.app: ASGIApp = FaultInjector(
            self._build_app(), state, self.server, error_body=mw_error, request_ids=True
        )
        self.server.app = self.app

    # --- lifecycle --------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.server.url

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def is_up(self) -> bool:
        return self.server.is_up

    async def start(self) -> None:
        await self.server.start()
        self.state.url = self.server.url

    async def down(self, seconds: float | None = None) -> None:
        """Stop listening (connections are refused) and drop open connections; back up after `seconds`."""
        await self.server.down(seconds)

    async def up(self) -> None:
        await self.server.up()

    async def stop(self) -> None:
        await self.server.stop()
        await self.webhooks.close()

    async def wait_idle(self) -> None:
        """Wait for background work (automatic webhooks) to finish."""
        await self.server.wait_idle()

    # --- test helpers -----------------------------------------------------------------------------------
    def set_faults(self, *faults: Fault) -> None:
        self.state.faults.set(*faults)

    def add_fault(self, fault: Fault) -> None:
        self.state.faults.add(fault)

    def clear_faults(self) -> None:
        self.state.faults.clear()

    def set_api_key(self, key: str) -> None:
        self.state.api_key = key

    def set_webhook_target(self, url: str | None, secret: str | None = None) -> None:
        self.state.webhook_url = url
        self.state.webhook_secret = secret

    def reset(self) -> None:
        """Forget tasks, requests, bulk calls, deliveries and faults (keeps key, network and seeds)."""
        self.state.reset()

    # --- webhooks ---------------------------------------------------------------------------------------
    def build_webhook(self, event: str, **params: Any) -> dict[str, Any]:
        """The body of one event, shaped like the document samples; updates the simulated world."""
        return build_webhook(self.state, event, **params)

    async def send_webhook(self, event: str, **params: Any) -> WebhookDelivery:
        """Build and deliver one event to the webhook target (signed when a secret is set)."""
        return await self.webhooks.send(event, **params)

    async def deliver_payload(
        self, event: str, body: bytes, *, signature: str | None = None
    ) -> WebhookDelivery:
        return await self.webhooks.deliver(event, body, signature=signature)

    async def resend_webhook(self, delivery_id: int, *, same_signature: bool = False) -> WebhookDelivery:
        """Send a recorded delivery again (same body and `_idempotencyKey`); `same_signature`: a replay."""
        return await self.webhooks.resend(delivery_id, same_signature=same_signature)

    # --- the ASGI app -----------------------------------------------------------------------------------
    def _build_app(self) -> ASGIApp:
        routes = [
            Route("/partners/v1/tasks", self._create_task, methods=["POST"]),
            Route("/partners/v1/tasks/", self._create_task, methods=["POST"]),
            Route("/partners/v1/network/settings", self._network_settings, methods=["GET"]),
            Route("/partners/v1/spare-parts", self._bulk(b.check_spare_part_create), methods=["POST"]),
            Route(
                "/partners/v1/spare-parts/stock",
                self._bulk(b.check_stock_update, premium=True),
                methods=["PUT"],
            ),
            Route(
                "/partners/v1/spare-parts/attributes",
                self._bulk(b.check_spare_part_attributes),
                methods=["POST"],
            ),
            Route("/partners/v1/equipments", self._bulk(b.check_equipment_create), methods=["POST"]),
            Route(
                "/partners/v1/equipment/attributes",
                self._bulk(b.check_equipment_attributes, premium=True),
                methods=["POST"],
            ),
            Route(
                "/partners/v1/locations/create/bulk",
                self._bulk(b.check_location_create, premium=True),
                methods=["POST"],
            ),
            Route(
                "/partners/v1/spare-parts/relocate/bulk",
                self._bulk(b.check_relocation, premium=True),
                methods=["POST"],
            ),
            *control_routes(self.state, self.server),
            *mw_control_routes(self),
        ]
        return Starlette(routes=routes)

    def _authorized(self, request: Request) -> bool:
        given = request.headers.get("api-key", "")
        return bool(given) and hmac.compare_digest(given.encode(), self.state.api_key.encode())

    async def _read_json(self, request: Request) -> tuple[Any, v.Errors | None]:
        errors = v.Errors()
        ctype = request.headers.get("content-type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            errors.add_global("error.payload.content_type", expected="application/json", actual=ctype)
            return None, errors
        raw = await request.body()
        try:
            return json.loads(raw), None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            errors.add_global("error.payload.invalid_json", reason=str(exc))
            return None, errors

    async def _network_settings(self, request: Request) -> Response:
        if not self._authorized(request):
            return _json(401, v.unauthorized_body())
        return _json(200, self.state.settings())

    async def _create_task(self, request: Request) -> Response:
        s = self.state
        if not self._authorized(request):
            return _json(401, v.unauthorized_body())
        body, errors = await self._read_json(request)
        if errors:
            return _json(400, errors.body())
        strict = s.strict
        errors, task = v.validate_task(
            body,
            equipment_known=(lambda i: s.find_equipment(i) is not None) if strict else None,
            assignee_known=(lambda i: s.find_user(i) is not None) if strict else None,
            tag_known=(lambda i: i in s.tags) if strict else None,
        )
        if errors or task is None:
            return _json(400, errors.body())
        now = time.time()
        if s.monthly_quota is not None and s.tasks_this_month(now) >= s.monthly_quota:
            return _json(403, v.forbidden_body("Monthly task quota of the subscription plan reached."))
        sim_task = SimTask(
            id=secrets.token_hex(4),
            body=body,
            equipment=s.equipment_for(task.equipment),
            assignees=task.assignees,
            tags=task.tags,
            metadata=task.metadata,
            created_at=now,
        )
        s.tasks.append(sim_task)
        if s.webhook_url and s.auto_webhooks:
            self.server.spawn(self._auto_scheduled(sim_task.id))
        return _json(201, None, headers={"X-Sim-Task-Id": sim_task.id})

    async def _auto_scheduled(self, task_id: str) -> None:
        try:
            await self.send_webhook("TaskWasScheduled", task_id=task_id)
        except Exception:  # a sim's background sender: log and go on
            log.exception("mw-sim: sending TaskWasScheduled failed")

    def _bulk(self, check: b.ItemCheck, *, premium: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            s = self.state
            if not self._authorized(request):
                return _json(401, v.unauthorized_body())
            if premium and s.plan == "starter":
                return _json(403, v.forbidden_body("Subscription plan does not allow to use that API"))
            body, errors = await self._read_json(request)
            if errors:
                return _json(400, errors.body())
            errors = b.validate_bulk(body, check)
            if errors:
                return _json(400, errors.body())
            s.bulk.append(BulkRequest(path=request.url.path, items=list(body), at=time.time()))
            return _json(202, None)

        return endpoint


# --- runners


@contextlib.asynccontextmanager
async def run_mobility_work_sim(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str = DEFAULT_API_KEY,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    network_timezone: str = "Europe/Paris",
    network_name: str = "Mobility Work",
    currency: str = "EUR",
    plan: str = "ultimate",
    monthly_quota: int | None = None,
    strict: bool = False,
    equipment: list[SimEquipment] | None = None,
    users: list[SimUser] | None = None,
    auto_webhooks: bool = True,
    signature_template: str = DEFAULT_TEMPLATE,
) -> AsyncIterator[MobilityWorkSim]:
    """Run the simulator in the caller's event loop on host:port (0 = a free port)."""
    if plan not in PLANS:
        raise ValueError(f"plan must be one of {', '.join(PLANS)}")
    state = SimState(
        api_key=api_key,
        timezone=network_timezone,
        network_name=network_name,
        currency=currency,
        plan=plan,
        monthly_quota=monthly_quota,
        strict=strict,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        auto_webhooks=auto_webhooks,
        signature_template=signature_template,
    )
    if equipment is not None:
        state.equipment = list(equipment)
    if users is not None:
        state.users = list(users)
    sim = MobilityWorkSim(state, host=host, port=port)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    """`mw-gateway mw-sim`: run the simulator until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="mw-gateway mw-sim", description="Mobility Work API simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8471)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--webhook-secret", default=None)
    parser.add_argument("--timezone", default="Europe/Paris")
    parser.add_argument("--plan", choices=PLANS, default="ultimate")
    parser.add_argument("--monthly-quota", type=int, default=None)
    parser.add_argument("--strict", action="store_true", help="only seeded equipment and users are known")
    args = parser.parse_args(argv)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        async with run_mobility_work_sim(
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            webhook_url=args.webhook_url,
            webhook_secret=args.webhook_secret,
            network_timezone=args.timezone,
            plan=args.plan,
            monthly_quota=args.monthly_quota,
            strict=args.strict,
        ) as sim:
            print(f"Mobility Work simulator listening on {sim.url}", flush=True)
            print(f"API key: {args.api_key}", flush=True)
            print(f"control API: {sim.url}/_sim/state", flush=True)
            if args.webhook_url:
                print(
                    f"webhooks to {args.webhook_url} ({'signed' if args.webhook_secret else 'unsigned'})",
                    flush=True,
                )
            await stop.wait()

    try:
        asyncio.run(serve())
    except OSError as exc:
        print(f"mw-sim: cannot listen on {args.host}:{args.port}: {exc}")
        return 1
    except KeyboardInterrupt:
        pass
    return 0
