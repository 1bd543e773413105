"""A Servitly API simulator, for tests and integration work.

What it checks (seed 003 and Servitly's public reference):

- `POST /identity/users/patLogin` (`{"apiKey", "pat"}`) and `POST /identity/users/login?apiKey=…`
  (`{"email", "password"}`) answer `{"token", "tokenExpirationTimestamp" (ms), "refreshToken", "userId",
  "tenantId"}`; tokens live `token_lifetime_s` (short on purpose, configurable) on the simulator's clock;
- every call needs `X-Servitly-Tenant` (400 without); data calls need `Authorization: Bearer <token>`: an
  unknown or expired token answers 401 `{"message": "User not authenticated"}`, a token of another tenant 403;
- `POST /inventory/maintenanceWorks`: only the documented fields, int64 timestamps, string `properties`
  values, a `thingId` or a `locationId`, no `endTimestamp` in the future ("when the maintenance work
  completed"); 201 with the stored object and its `id`;
- `POST /inventory/historicalEvents`: `alertDefinitionId`, `startTimestamp`, `endTimestamp`, `locationId`,
  `thingId`, `notes`; the same checks; 201.

Control API under `/_sim/` (JSON): the shared ones of `harness` (state, requests, faults, down, reset) and
`POST expire_tokens` (every issued token expires now). Faults: the one vocabulary of `harness.Fault`.

    async with run_servitly_sim(tenant="acme", api_key=..., pat=..., token_lifetime_s=60) as sim:
        sim.url, sim.state.maintenance_works, sim.state.requests
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.core.clock import Clock, SystemClock
from gateway.sim.harness import Fault, FaultPlan, RecordedRequest, control_routes, serving
from gateway.sim.server import SimServer

_WORK_STRINGS = ("type", "description", "outcome", "userEmail", "thingId", "locationId")
_WORK_FIELDS = frozenset(("startTimestamp", "endTimestamp", "properties", *_WORK_STRINGS))
_EVENT_STRINGS = ("alertDefinitionId", "thingId", "locationId", "notes")
_EVENT_FIELDS = frozenset(("startTimestamp", "endTimestamp", *_EVENT_STRINGS))
_INT64_MAX = 2**63 - 1


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Token:
    tenant: str
    user_id: str
    expires_at: float  # simulator clock, seconds


@dataclass
class ServitlySimState:
    tenant: str = "acme"
    api_key: str = "sim-api-key"
    pat: str = "sim-pat"
    users: dict[str, str] = field(default_factory=lambda: {"gateway@factory.example": "sim-password"})
    token_lifetime_s: float = 3600.0
    clock: Clock = field(default_factory=SystemClock)
    things: set[str] | None = None  # None: any thingId is accepted
    locations: set[str] | None = None
    tokens: dict[str, _Token] = field(default_factory=dict)
    logins: int = 0
    maintenance_works: list[dict[str, Any]] = field(default_factory=list)
    historical_events: list[dict[str, Any]] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    faults: FaultPlan = field(default_factory=FaultPlan)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def reset(self) -> None:
        self.tokens.clear()
        self.logins = 0
        self.maintenance_works.clear()
        self.historical_events.clear()
        self.requests.clear()
        self.faults.clear()

    def expire_tokens(self) -> None:
        now = self.clock.now()
        for token in self.tokens.values():
            token.expires_at = min(token.expires_at, now)

    def issue(self, user_id: str) -> dict[str, Any]:
        self.logins += 1
        token = secrets.token_urlsafe(24)
        expires_at = self.clock.now() + self.token_lifetime_s
        self.tokens[token] = _Token(self.tenant, user_id, expires_at)
        return {
            "token": token,
            "tokenExpirationTimestamp": int(expires_at * 1000),
            "refreshToken": secrets.token_hex(16),
            "userId": user_id,
            "tenantId": f"tenant-{self.tenant}",
        }

    def new_id(self) -> str:
        return f"{next(self._ids):024x}"

    def snapshot(self) -> dict[str, Any]:
        return {
            "logins": self.logins,
            "maintenance_works": self.maintenance_works,
            "historical_events": self.historical_events,
            "requests": len(self.requests),
            "faults": self.faults.pending(),
        }


@dataclass
class ServitlySim:
    url: str
    state: ServitlySimState
    server: SimServer


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        raise _Refused(400, "Bad request: the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _Refused(400, "Bad request: the body must be a JSON object")
    return data


def _tenant(state: ServitlySimState, request: Request) -> str:
    tenant = request.headers.get("x-servitly-tenant")
    if not tenant:
        raise _Refused(400, "Bad request: missing X-Servitly-Tenant header")
    return tenant


def _login(state: ServitlySimState, request: Request, body: bytes) -> Response:
    tenant = _tenant(state, request)
    data = _json_object(body)
    if request.url.path.endswith("/patLogin"):
        unknown = sorted(set(data) - {"apiKey", "pat"})
        api_key, credential = data.get("apiKey"), data.get("pat")
        expected, user_id = state.pat, "pat-user"
    else:
        unknown = sorted(set(data) - {"email", "password", "devices"})
        api_key, credential = request.query_params.get("apiKey"), data.get("password")
        email = data.get("email")
        expected = state.users.get(email, "") if isinstance(email, str) else ""
        user_id = f"user-{email}"
    if unknown:
        raise _Refused(400, f"Bad request: unrecognized field(s) {', '.join(unknown)}")
    if not isinstance(api_key, str) or not isinstance(credential, str):
        raise _Refused(400, "Bad request: missing login fields")
    ok = tenant == state.tenant and hmac.compare_digest(api_key, state.api_key)
    if not (ok and expected and hmac.compare_digest(credential, expected)):
        raise _Refused(401, "Invalid credentials")
    return JSONResponse(state.issue(user_id))


def _authenticate(state: ServitlySimState, request: Request) -> None:
    tenant = _tenant(state, request)
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    token = state.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
    if token is None or token.expires_at <= state.clock.now():
        raise _Refused(401, "User not authenticated")
    if token.tenant != tenant:
        raise _Refused(403, "User not authorized")


def _timestamps(data: dict[str, Any]) -> None:
    for name in ("startTimestamp", "endTimestamp"):
        value = data.get(name)
        if name in data and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT64_MAX
        ):
            raise _Refused(400, f"Bad request: {name} must be an int64 timestamp in milliseconds")
    if "startTimestamp" in data and "endTimestamp" in data and data["endTimestamp"] < data["startTimestamp"]:
        raise _Refused(400, "Bad request: endTimestamp is before startTimestamp")


def _target(state: ServitlySimState, data: dict[str, Any]) -> None:
    if "thingId" not in data and "locationId" not in data:
        raise _Refused(400, "Bad request: thingId or locationId is required")
    if "thingId" in data and state.things is not None and data["thingId"] not in state.things:
        raise _Refused(400, f"Bad request: thing {data['thingId']} not found")
    if "locationId" in data and state.locations is not None and data["locationId"] not in state.locations:
        raise _Refused(400, f"Bad request: location {data['locationId']} not found")


def _strings(data: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if name in data and not isinstance(data[name], str):
            raise _Refused(400, f"Bad request: {name} must be a string")


def _maintenance_work(state: ServitlySimState, data: dict[str, Any]) -> Response:
    unknown = sorted(set(data) - _WORK_FIELDS)
    if unknown:
        raise _Refused(400, f"Bad request: unrecognized field(s) {', '.join(unknown)}")
    _timestamps(data)
    # "endTimestamp: The timestamp when the maintenance work completed": not a time still to come
    if "endTimestamp" in data and data["endTimestamp"] > state.clock.now() * 1000:
        raise _Refused(400, "Bad request: endTimestamp is in the future (the work has not completed)")
    _strings(data, _WORK_STRINGS)
    if "userEmail" in data and "@" not in data["userEmail"]:
        raise _Refused(400, "Bad request: userEmail is not an e-mail address")
    properties = data.get("properties", {})
    if not isinstance(properties, dict):
        raise _Refused(400, "Bad request: properties must be an object")
    for key, value in properties.items():
        if not isinstance(value, str):
            raise _Refused(400, f"Bad request: property {key} must be a string")
    _target(state, data)
    stored = {"id": state.new_id(), **data}
    state.maintenance_works.append(stored)
    return JSONResponse(stored, status_code=201)


def _historical_event(state: ServitlySimState, data: dict[str, Any]) -> Response:
    unknown = sorted(set(data) - _EVENT_FIELDS)
    if unknown:
        raise _Refused(400, f"Bad request: unrecognized field(s) {', '.join(unknown)}")
    _timestamps(data)
    _strings(data, _EVENT_STRINGS)
    _target(state, data)
    stored = {"id": state.new_id(), "eventSeverity": 5, **data}
    state.historical_events.append(stored)
    return JSONResponse(stored, status_code=201)


_ROUTES = {
    "/identity/users/patLogin": None,
    "/identity/users/login": None,
    "/inventory/maintenanceWorks": _maintenance_work,
    "/inventory/historicalEvents": _historical_event,
}


def _handle(state: ServitlySimState, request: Request, body: bytes) -> Response:
    path = request.url.path
    if path not in _ROUTES:
        raise _Refused(404, f"Not found: {path}")
    if request.method != "POST":
        raise _Refused(405, f"Method {request.method} not allowed")
    handler = _ROUTES[path]
    if handler is None:
        return _login(state, request, body)
    _authenticate(state, request)
    return handler(state, _json_object(body))


def build_app(state: ServitlySimState, server: SimServer) -> Starlette:
    def respond(request: Request, body: bytes) -> Response:
        try:
            return _handle(state, request, body)
        except _Refused as refused:
            return JSONResponse({"message": refused.message}, status_code=refused.status)

    async def api(request: Request) -> Response:
        return respond(request, await request.body())

    async def sim_expire(request: Request) -> Response:
        state.expire_tokens()
        return JSONResponse({"expired": len(state.tokens)})

    return Starlette(
        routes=[
            *control_routes(state, server),
            Route("/_sim/expire_tokens", sim_expire, methods=["POST"]),
            Route("/{path:path}", api, methods=["GET", "POST", "PUT", "DELETE"]),
        ]
    )


@contextlib.asynccontextmanager
async def run_servitly_sim(
    *, host: str = "127.0.0.1", port: int = 0, state: ServitlySimState | None = None, **options: Any
) -> AsyncIterator[ServitlySim]:
    """Serve the simulator in the caller's event loop until the block exits. `options` build the state."""
    state = state if state is not None else ServitlySimState(**options)
    async with serving(lambda server: build_app(state, server), state, host=host, port=port) as server:
        yield ServitlySim(url=server.url, state=state, server=server)


__all__ = ["Fault", "ServitlySim", "ServitlySimState", "build_app", "run_servitly_sim"]
