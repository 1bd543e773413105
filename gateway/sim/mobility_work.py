"""A Mobility Work API simulator: strict validation, fault injection, signed webhooks, a control API.

In-process (tests, the demo):

    async with run_mobility_work_sim(api_key="k", webhook_url=..., webhook_secret=...) as sim:
        sim.url, sim.state.tasks, sim.state.requests
        sim.set_faults(Fault("http_5xx", count=2))
        await sim.send_webhook("TaskWasStarted", task_id=sim.state.tasks[0].id)

Standalone: `mw-gateway mw-sim --port 8471` (`main(argv)`), driven over HTTP with the `/_sim/` control API
(docs/mobility-work.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import random
import secrets
import signal
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.sim import mw_validation as v
from gateway.sim import mw_webhooks as wh
from gateway.sim.mw_webhooks import SimEquipment, SimSparePart, SimTask, SimUser
from gateway.web.signature import DEFAULT_TEMPLATE, HEADER, sign

log = logging.getLogger(__name__)

DEFAULT_API_KEY = "sim-913a8f7cef6ff084f1635511b9c7d07c3bab2816"
DEFAULT_NETWORK_ID = "4d4b9269-db6b-4b8f-8577-d01ef451d291"
PLANS = ("starter", "premium", "ultimate")

FaultMode = Literal["latency", "http_5xx", "http_429", "timeout", "reset", "commit_lost"]
FAULT_MODES: tuple[str, ...] = ("latency", "http_5xx", "http_429", "timeout", "reset", "commit_lost")


@dataclass
class Fault:
    """One fault rule. Applies to the next `count` matching calls, or to each with `probability` (seeded).

    latency      delay the call by latency_s, then answer normally
    http_5xx     answer `status` (default 503) without processing
    http_429     answer 429 with Retry-After: retry_after (seconds or an HTTP date)
    timeout      hang before processing until the client gives up (or hang_s), record nothing
    reset        drop the connection (TCP RST) without processing
    commit_lost  process the call (a task IS recorded), then drop the connection without a response
    """

    mode: FaultMode
    count: int | None = None
    probability: float | None = None
    seed: int | None = None
    path: str = "/partners/"  # applies to request paths starting with this
    method: str | None = None  # e.g. "POST"; None = any
    status: int = 503
    retry_after: str | None = "1"
    latency_s: float = 0.0
    hang_s: float = 3600.0
    hits: int = 0
    _rng: random.Random | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}: one of {', '.join(FAULT_MODES)}")
        if self.count is None and self.probability is None:
            self.count = 1
        if self.probability is not None and not 0 <= self.probability <= 1:
            raise ValueError("probability must be within 0..1")
        self._rng = random.Random(self.seed)

    def matches(self, method: str, path: str) -> bool:
        if not path.startswith(self.path) or (self.method and self.method.upper() != method.upper()):
            return False
        if self.count is not None:
            if self.count <= 0:
                return False
            self.count -= 1
            self.hits += 1
            return True
        assert self._rng is not None and self.probability is not None
        if self._rng.random() < self.probability:
            self.hits += 1
            return True
        return False

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.count <= 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_rng", None)
        return data

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Fault:
        allowed = {k for k in Fault.__dataclass_fields__ if not k.startswith("_") and k != "hits"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        return Fault(**dict(data))


@dataclass
class RecordedRequest:
    seq: int
    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the text when it is not JSON
    status: int | None  # None when no response was sent (reset, timeout, commit_lost)
    fault: str | None = None
    request_id: str = ""
    client: str = ""  # "host:port" of the TCP connection (keep-alive shows as one)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BulkRequest:
    path: str
    items: list[Any]
    at: float


@dataclass
class WebhookDelivery:
    id: int
    event: str
    url: str
    body: bytes
    headers: dict[str, str]
    status: int | None = None
    error: str | None = None
    at: float = 0.0

    @property
    def payload(self) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(self.body))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event": self.event,
            "url": self.url,
            "status": self.status,
            "error": self.error,
            "headers": self.headers,
            "payload": self.payload,
            "at": self.at,
        }


def _default_equipment() -> list[SimEquipment]:
    return [
        SimEquipment(
            id=7111,
            uuid="ff77ef5b-19d4-4c50-96da-6a16f9c43644",
            item_code="EQ-0001",
            name="Machine Tool #1",
            cost_center="Outpost",
        )
    ]


def _default_users() -> list[SimUser]:
    return [
        SimUser(
            id=3,
            uuid="ee84d563-da9c-47ee-a79f-7147814509e0",
            email="john.doe@example.com",
            first_name="John",
            last_name="Doe",
        )
    ]


@dataclass
class SimState:
    """Everything the simulator knows; tests read it directly."""

    api_key: str = DEFAULT_API_KEY
    network_id: str = DEFAULT_NETWORK_ID
    legacy_network_id: int = 686
    network_name: str = "Mobility Work"
    timezone: str = "Europe/Paris"
    currency: str = "EUR"
    plan: str = "ultimate"
    monthly_quota: int | None = None  # tasks per calendar month (UTC); None = unlimited
    strict: bool = False  # True: equipment, assignees and tags must be known (seeded)
    equipment: list[SimEquipment] = field(default_factory=_default_equipment)
    users: list[SimUser] = field(default_factory=_default_users)
    tags: list[tuple[str, Any]] = field(default_factory=list)  # known (type, value) pairs for strict mode
    spare_parts: dict[str, SimSparePart] = field(default_factory=dict)  # by article code
    tasks: list[SimTask] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    bulk: list[BulkRequest] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    webhook_url: str | None = None
    webhook_secret: str | None = None
    signature_template: str = DEFAULT_TEMPLATE
    auto_webhooks: bool = True  # send TaskWasScheduled after each accepted task when a target is set
    deliveries: list[WebhookDelivery] = field(default_factory=list)
    _next_activity: int = 19823

    # --- lookups ----------------------------------------------------------------------------------------
    def find_equipment(self, ident: tuple[str, Any]) -> SimEquipment | None:
        kind, value = ident
        for eq in self.equipment:
            if (kind == "native" and value in (eq.id, eq.uuid)) or (
                kind == "external" and value == eq.item_code
            ):
                return eq
        return None

    def equipment_for(self, ident: tuple[str, Any]) -> SimEquipment:
        """The known equipment, or (permissive mode) a new one made up on the spot."""
        found = self.find_equipment(ident)
        if found is not None:
            return found
        kind, value = ident
        native = value if kind == "native" and isinstance(value, int) else 10_000 + len(self.equipment)
        eq = SimEquipment(
            id=native,
            uuid=str(uuid.uuid4()),
            item_code=str(value) if kind == "external" else f"EQ-{native}",
            name=f"Equipment {value}",
        )
        self.equipment.append(eq)
        return eq

    def find_user(self, ident: tuple[str, Any]) -> SimUser | None:
        kind, value = ident
        for user in self.users:
            if (kind == "native" and value in (user.id, user.uuid)) or (
                kind == "email" and isinstance(value, str) and value.lower() == user.email.lower()
            ):
                return user
        return None

    def user_for(self, ref: str | int | None) -> SimUser:
        if ref is None:
            return self.users[0] if self.users else _default_users()[0]
        kind = "email" if isinstance(ref, str) and "@" in ref else "native"
        return self.find_user((kind, ref)) or self.users[0]

    def spare_part(self, article: str) -> SimSparePart:
        part = self.spare_parts.get(article)
        if part is None:
            part = SimSparePart(
                article_code=article, uuid=str(uuid.uuid4()), name=f"Spare part {article}", stock=100
            )
            self.spare_parts[article] = part
        return part

    def task(self, task_id: str | None) -> SimTask:
        if not self.tasks:
            raise KeyError("no task recorded yet")
        if task_id is None:
            return self.tasks[-1]
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(f"unknown task {task_id!r}")

    def task_for_firing(self, firing: str) -> list[SimTask]:
        return [t for t in self.tasks if t.metadata.get("firing") == firing]

    def tasks_this_month(self, now: float) -> int:
        month = time.strftime("%Y-%m", time.gmtime(now))
        return sum(1 for t in self.tasks if time.strftime("%Y-%m", time.gmtime(t.created_at)) == month)

    def pick_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                return fault
        return None

    def next_activity_id(self) -> int:
        self._next_activity += 1
        return self._next_activity

    def settings(self) -> dict[str, Any]:
        return {
            "networkId": self.network_id,
            "legacyNetworkId": self.legacy_network_id,
            "name": self.network_name,
            "timezone": self.timezone,
            "currency": self.currency,
        }


def _dumps(obj: Any) -> bytes:
    # "the API will always return using a minified format"
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _json(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        _dumps(obj), status_code=status, media_type="application/json", headers=dict(headers or {})
    )


def _transport_registry_protocol(registry: dict[Any, asyncio.Transport]) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, remembering each connection's transport so a fault can drop it."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TrackedH11Protocol(H11Protocol):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            if sock is not None:  # the accepted socket has proto 0, so asyncio did not set this
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.client:
                registry[tuple(self.client)] = transport

        def connection_lost(self, exc: Exception | None) -> None:
            if self.client:
                registry.pop(tuple(self.client), None)
            super().connection_lost(exc)

    return cast(type[asyncio.Protocol], TrackedH11Protocol)


class MobilityWorkSim:
    """The simulator: an ASGI app over `SimState`, plus the server it runs in."""

    def __init__(self, state: SimState, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state
        self.host = host
        self.port = port
        self._transports: dict[Any, asyncio.Transport] = {}
        self._server: uvicorn.Server | None = None
        self._sock: socket.socket | None = None
        self._closing = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._webhook_client: httpx.AsyncClient | None = None
        self._delivery_lock = asyncio.Lock()
        self._seq = 0
        self.app: ASGIApp = self._build_app()

    # --- lifecycle --------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self._closing = asyncio.Event()
        await self._listen()

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            http=_transport_registry_protocol(self._transports),
            timeout_graceful_shutdown=2,
            timeout_keep_alive=30,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server, self._sock = server, sock

    async def _unlisten(self) -> None:
        server, sock = self._server, self._sock
        self._server = self._sock = None
        if server is not None:
            with contextlib.suppress(Exception):
                await server.shutdown(sockets=[sock] if sock else None)

    async def down(self, seconds: float | None = None) -> None:
        """Stop listening (connections are refused) and drop open connections; back up after `seconds`."""
        server = self._server
        if server is not None:
            for sock_server in server.servers:
                sock_server.close()  # refuse new connections first
        for transport in list(self._transports.values()):
            transport.abort()
        for _ in range(200):  # let connection_lost run, so clients see the drops before is_up flips
            if not self._transports:
                break
            await asyncio.sleep(0.005)
        await self._unlisten()
        if seconds is not None:
            self._spawn(self._up_later(seconds))

    async def _up_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.up()

    async def up(self) -> None:
        if self._server is None:
            await self._listen()

    async def stop(self) -> None:
        self._closing.set()
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(BaseException):
                await task
        await self._unlisten()
        if self._webhook_client is not None:
            await self._webhook_client.aclose()
            self._webhook_client = None

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def wait_idle(self) -> None:
        """Wait for background work (automatic webhooks) to finish."""
        while self._background:
            pending = [t for t in self._background if not t.done() and t is not asyncio.current_task()]
            if not pending:
                return
            await asyncio.wait(pending)

    # --- test helpers -----------------------------------------------------------------------------------
    def set_faults(self, *faults: Fault) -> None:
        self.state.faults = list(faults)

    def add_fault(self, fault: Fault) -> None:
        self.state.faults.append(fault)

    def clear_faults(self) -> None:
        self.state.faults = []

    def set_api_key(self, key: str) -> None:
        self.state.api_key = key

    def set_webhook_target(self, url: str | None, secret: str | None = None) -> None:
        self.state.webhook_url = url
        self.state.webhook_secret = secret

    def reset(self) -> None:
        """Forget tasks, requests, bulk calls, deliveries and faults (keeps key, network and seeds)."""
        self.state.tasks.clear()
        self.state.requests.clear()
        self.state.bulk.clear()
        self.state.deliveries.clear()
        self.state.faults.clear()

    # --- webhooks ---------------------------------------------------------------------------------------
    def build_webhook(
        self,
        event: str,
        *,
        task_id: str | None = None,
        by: str | int | None = None,
        article: str | None = None,
        quantity: float | None = None,
        description: str | None = None,
        minutes: int = 30,
        threshold: float | None = None,
        at: float | None = None,
    ) -> dict[str, Any]:
        """The body of one event, shaped like the document samples; updates the simulated world."""
        s = self.state
        now = time.time() if at is None else at
        user = s.user_for(by)
        net = s.network_id
        if event in wh.TASK_EVENTS:
            task = s.task(task_id)
            task.status = {
                "TaskWasScheduled": "scheduled",
                "TaskWasStarted": "started",
                "TaskWasCompleted": "completed",
                "TaskWasCanceled": "canceled",
            }[event]
            return wh.task_event(event, task, user=user, at=now, network_id=net)
        if event == "ActivityWasAddedOnTask":
            task = s.task(task_id)
            activity = s.next_activity_id()
            task.activities.append(activity)
            return wh.activity_event(
                task,
                user=user,
                activity_id=activity,
                at=now,
                network_id=net,
                description=description or "activity reported",
                minutes=minutes,
            )
        if article is None:
            raise ValueError(f"{event} needs an article code")
        part = s.spare_part(article)
        if event in ("SparePartWasConsumed", "SparePartConsumptionWasCanceled"):
            ctask = s.task(task_id) if (task_id is not None or s.tasks) else None
            qty = 1.0 if quantity is None else quantity
            previous = part.stock
            if event == "SparePartWasConsumed":
                part.stock = previous - qty
                return wh.consumed_event(
                    ctask, part, user=user, quantity=qty, previous_stock=previous, at=now, network_id=net
                )
            part.stock = previous + qty
            activity_id = ctask.activities[-1] if ctask is not None and ctask.activities else None
            return wh.consumption_canceled_event(
                ctask, part, quantity=qty, activity_id=activity_id, at=now, network_id=net
            )
        if event in ("SparePartWasRestocked", "SparePartWasManuallyRecounted"):
            qty = 1.0 if quantity is None else quantity
            previous = part.stock
            part.stock = previous + qty if event == "SparePartWasRestocked" else qty
            return wh.stock_change_event(
                event, part, user=user, quantity=qty, previous_stock=previous, at=now, network_id=net
            )
        if event in ("SparePartWasOutOfStock", "SparePartStockWasUnderMinThreshold"):
            if event == "SparePartWasOutOfStock":
                part.stock = 0
            return wh.stock_level_event(event, part, threshold=threshold, at=now, network_id=net)
        raise ValueError(f"unknown event {event!r}: one of {', '.join(wh.EVENTS)}")

    async def send_webhook(self, event: str, **params: Any) -> WebhookDelivery:
        """Build and deliver one event to the webhook target (signed when a secret is set)."""
        payload = self.build_webhook(event, **params)
        return await self.deliver_payload(event, _dumps(payload))

    async def deliver_payload(
        self, event: str, body: bytes, *, signature: str | None = None
    ) -> WebhookDelivery:
        s = self.state
        if not s.webhook_url:
            raise RuntimeError("no webhook target configured")
        headers = {"Content-Type": "application/json", "User-Agent": wh.WEBHOOK_USER_AGENT}
        if signature is not None:
            headers[HEADER] = signature
        elif s.webhook_secret:
            headers[HEADER] = sign(s.webhook_secret, body, template=s.signature_template)
        async with self._delivery_lock:
            delivery = WebhookDelivery(
                id=len(s.deliveries) + 1,
                event=event,
                url=s.webhook_url,
                body=body,
                headers=headers,
                at=time.time(),
            )
            s.deliveries.append(delivery)
        if self._webhook_client is None:
            self._webhook_client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0))
        try:
            response = await self._webhook_client.post(s.webhook_url, content=body, headers=headers)
            delivery.status = response.status_code
        except httpx.HTTPError as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
        return delivery

    async def resend_webhook(self, delivery_id: int, *, same_signature: bool = False) -> WebhookDelivery:
        """Send a recorded delivery again, same body and `_idempotencyKey` (a duplicate). A fresh timestamp
        and nonce like a real retry, or with `same_signature=True` the very same header (a replay)."""
        original = next((d for d in self.state.deliveries if d.id == delivery_id), None)
        if original is None:
            raise KeyError(f"unknown delivery {delivery_id}")
        signature = original.headers.get(HEADER) if same_signature else None
        return await self.deliver_payload(original.event, original.body, signature=signature)

    # --- the ASGI app -----------------------------------------------------------------------------------
    def _build_app(self) -> ASGIApp:
        routes = [
            Route("/partners/v1/tasks", self._create_task, methods=["POST"]),
            Route("/partners/v1/tasks/", self._create_task, methods=["POST"]),
            Route("/partners/v1/network/settings", self._network_settings, methods=["GET"]),
            Route("/partners/v1/spare-parts", self._bulk(v.check_spare_part_create), methods=["POST"]),
            Route(
                "/partners/v1/spare-parts/stock",
                self._bulk(v.check_stock_update, premium=True),
                methods=["PUT"],
            ),
            Route(
                "/partners/v1/spare-parts/attributes",
                self._bulk(v.check_spare_part_attributes),
                methods=["POST"],
            ),
            Route("/partners/v1/equipments", self._bulk(v.check_equipment_create), methods=["POST"]),
            Route(
                "/partners/v1/equipment/attributes",
                self._bulk(v.check_equipment_attributes, premium=True),
                methods=["POST"],
            ),
            Route(
                "/partners/v1/locations/create/bulk",
                self._bulk(v.check_location_create, premium=True),
                methods=["POST"],
            ),
            Route(
                "/partners/v1/spare-parts/relocate/bulk",
                self._bulk(v.check_relocation, premium=True),
                methods=["POST"],
            ),
            *control_routes(self),
        ]
        return _FaultsAndRecording(Starlette(routes=routes), self)

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
            self._spawn(self._auto_scheduled(sim_task.id))
        return _json(201, None, headers={"X-Sim-Task-Id": sim_task.id})

    async def _auto_scheduled(self, task_id: str) -> None:
        try:
            await self.send_webhook("TaskWasScheduled", task_id=task_id)
        except Exception:  # a sim's background sender: log and go on
            log.exception("mw-sim: sending TaskWasScheduled failed")

    def _bulk(self, check: v.ItemCheck, *, premium: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            s = self.state
            if not self._authorized(request):
                return _json(401, v.unauthorized_body())
            if premium and s.plan == "starter":
                return _json(403, v.forbidden_body("Subscription plan does not allow to use that API"))
            body, errors = await self._read_json(request)
            if errors:
                return _json(400, errors.body())
            errors = v.validate_bulk(body, check)
            if errors:
                return _json(400, errors.body())
            s.bulk.append(BulkRequest(path=request.url.path, items=list(body), at=time.time()))
            return _json(202, None)

        return endpoint

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def transport_for(self, scope: Scope) -> asyncio.Transport | None:
        client = scope.get("client")
        return self._transports.get(tuple(client)) if client else None

    @property
    def closing(self) -> asyncio.Event:
        return self._closing


class _FaultsAndRecording:
    """ASGI middleware: record every API call and apply the configured faults."""

    def __init__(self, app: ASGIApp, sim: MobilityWorkSim) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sim"):
            await self.app(scope, receive, send)
            return
        state = self.sim.state
        method, path = scope["method"], scope["path"]
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            parsed: Any = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed = raw.decode("utf-8", "replace")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        record = RecordedRequest(
            seq=self.sim.next_seq(),
            at=time.time(),
            method=method,
            path=path,
            headers=headers,
            body=parsed,
            status=None,
            request_id=str(uuid.uuid4()),
            client=":".join(str(x) for x in scope.get("client") or ()),
        )
        state.requests.append(record)

        fault = state.pick_fault(method, path)
        if fault is not None:
            record.fault = fault.mode
            log.debug("mw-sim: fault %s on %s %s", fault.mode, method, path)

        sent_body = False

        async def replay() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        async def send_recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"request-id", record.request_id.encode())],
                }
            await send(message)

        if fault is None or fault.mode == "latency":
            if fault is not None:
                await asyncio.sleep(fault.latency_s)
            await self.app(scope, replay, send_recorded)
        elif fault.mode == "http_5xx":
            await _json(
                fault.status,
                {
                    "http_status_code": fault.status,
                    "code": f"{fault.status}000",
                    "message": "Internal error (simulated)",
                },
            )(scope, replay, send_recorded)
        elif fault.mode == "http_429":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            await _json(
                429,
                {"http_status_code": 429, "code": "429000", "message": "Too many requests (simulated)"},
                headers=extra,
            )(scope, replay, send_recorded)
        elif fault.mode == "timeout":
            if await self._hang(receive, fault.hang_s) == "elapsed":
                await self.app(scope, replay, send_recorded)
        elif fault.mode == "reset":
            self._drop(scope, rst=True)
            await self._hang(receive, 5.0)
        else:  # commit_lost: process, swallow the response, drop the connection

            async def swallow(message: Message) -> None:
                if message["type"] == "http.response.start":
                    record.status = None

            await self.app(scope, replay, swallow)
            self._drop(scope, rst=False)
            await self._hang(receive, 5.0)

    async def _hang(self, receive: Receive, seconds: float) -> str:
        """Wait until the client goes away, the simulator stops, or `seconds` pass ("elapsed")."""

        async def until_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        waiters = [asyncio.ensure_future(until_disconnect()), asyncio.ensure_future(self.sim.closing.wait())]
        try:
            done, _ = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            for w in waiters:
                with contextlib.suppress(BaseException):
                    await w
        return "elapsed" if not done else "ended"

    def _drop(self, scope: Scope, *, rst: bool) -> None:
        transport = self.sim.transport_for(scope)
        if transport is None:
            return
        if rst:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


# --- the control API


def control_routes(sim: MobilityWorkSim) -> list[Route]:
    s = sim.state

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        data = json.loads(raw) if raw.strip() else {}
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return data

    def handler(fn: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                result = await fn(request)
            except (ValueError, KeyError, TypeError, RuntimeError) as exc:
                return _json(400, {"error": str(exc)})
            return _json(200, result)

        return wrapped

    async def get_state(request: Request) -> Any:
        return {
            "url": sim.url,
            "network": s.settings(),
            "plan": s.plan,
            "monthly_quota": s.monthly_quota,
            "strict": s.strict,
            "tasks": len(s.tasks),
            "requests": len(s.requests),
            "bulk": len(s.bulk),
            "deliveries": len(s.deliveries),
            "faults": [f.to_json() for f in s.faults],
            "webhook_url": s.webhook_url,
        }

    async def get_tasks(request: Request) -> Any:
        return [t.to_json() for t in s.tasks]

    async def get_requests(request: Request) -> Any:
        return [r.to_json() for r in s.requests]

    async def get_bulk(request: Request) -> Any:
        return [{"path": b.path, "count": len(b.items), "items": b.items, "at": b.at} for b in s.bulk]

    async def faults(request: Request) -> Any:
        if request.method == "DELETE":
            sim.clear_faults()
        elif request.method == "POST":
            raw = json.loads(await request.body() or b"[]")
            items = raw if isinstance(raw, list) else [raw]
            new = [Fault.from_json(item) for item in items]
            if request.query_params.get("append") in ("1", "true"):
                s.faults.extend(new)
            else:
                sim.set_faults(*new)
        return [f.to_json() for f in s.faults]

    async def key(request: Request) -> Any:
        data = await body_of(request)
        sim.set_api_key(str(data["api_key"]))
        return {"ok": True}

    async def config(request: Request) -> Any:
        data = await body_of(request)
        allowed = {
            "plan",
            "monthly_quota",
            "strict",
            "timezone",
            "currency",
            "network_name",
            "auto_webhooks",
            "signature_template",
        }
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        if "plan" in data and data["plan"] not in PLANS:
            raise ValueError(f"plan must be one of {', '.join(PLANS)}")
        for name, value in data.items():
            setattr(s, name, value)
        return await get_state(request)

    async def seed(request: Request) -> Any:
        data = await body_of(request)
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
        data = await body_of(request)
        sim.set_webhook_target(data.get("url"), data.get("secret"))
        return {"url": s.webhook_url, "signed": bool(s.webhook_secret)}

    async def webhooks(request: Request) -> Any:
        if request.method == "GET":
            return [d.to_json() for d in s.deliveries]
        data = await body_of(request)
        event = data.pop("event")
        delivery = await sim.send_webhook(event, **data)
        return delivery.to_json()

    async def resend(request: Request) -> Any:
        data = await body_of(request)
        delivery = await sim.resend_webhook(
            int(data["delivery_id"]), same_signature=bool(data.get("same_signature", False))
        )
        return delivery.to_json()

    async def down(request: Request) -> Any:
        data = await body_of(request)
        seconds = float(data.get("seconds", 5.0))

        async def later() -> None:
            await asyncio.sleep(0.05)  # let this response leave first
            await sim.down(seconds)

        sim._spawn(later())
        return {"down_for_s": seconds}

    async def reset(request: Request) -> Any:
        sim.reset()
        return {"ok": True}

    return [
        Route("/_sim/state", handler(get_state), methods=["GET"]),
        Route("/_sim/tasks", handler(get_tasks), methods=["GET"]),
        Route("/_sim/requests", handler(get_requests), methods=["GET"]),
        Route("/_sim/bulk", handler(get_bulk), methods=["GET"]),
        Route("/_sim/faults", handler(faults), methods=["GET", "POST", "DELETE"]),
        Route("/_sim/key", handler(key), methods=["POST"]),
        Route("/_sim/config", handler(config), methods=["POST"]),
        Route("/_sim/seed", handler(seed), methods=["POST"]),
        Route("/_sim/webhook-target", handler(webhook_target), methods=["POST"]),
        Route("/_sim/webhooks", handler(webhooks), methods=["GET", "POST"]),
        Route("/_sim/webhooks/resend", handler(resend), methods=["POST"]),
        Route("/_sim/down", handler(down), methods=["POST"]),
        Route("/_sim/reset", handler(reset), methods=["POST"]),
    ]


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
