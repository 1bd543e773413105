"""An AMAGE work-order API simulator, for tests and integration work.

It validates what the AMAGE document (seed 002) says, as strictly as the document allows:

- every call is signed: `device-uuid`, `api-key`, `api-sign` headers, with or without the `amage-` prefix;
  the sign is the SHA-256 hex digest of `sign_template` (default `{path}{key_secret}`), else 401;
- `POST {base}/add`: only the documented fields, with the documented types, state and priority names and
  `YYYY-MM-DDTHH:MM:SS` dates; a `uuid` already used answers HTTP 400 `{"success": false, "errorCode":
  "BAD_REQUEST", "message": "Work order with uuid … already exists"}` (the document is silent on duplicates:
  that is the assumption docs/backends.md describes);
- `POST {base}/add-workorder-elementtype-plan/{uuid}`: the work order must exist;
- `POST {base}/asset-plan/{work-order-uuid}/join-asset-to-plan-by-uuid/{uuid}` (the resource plan; the
  document describes no body): the work order must exist, the resource too once `asset` records are
  declared; the same resource twice answers an error, as the document says ("If a resource is added multiple
  times to a given work order, the query will return an error");
- a reference (`typeUuid`, `assignedUserUuid`, `elementTypeUuid`, …) to an unknown record answers HTTP 400
  with `errorCode: "NOT_FOUND"`, as the document describes, when the simulator was told which records exist.

Control API under `/_sim/` (JSON): the shared ones of `harness` (state, requests, faults, down, reset) and
`POST records` (`{"user": [uuid, …], "elementType": {code: uuid}, "asset": [uuid, …], …}`). Faults: the
one vocabulary of `harness.Fault`.

    async with run_amage_sim(device_uuid=..., api_key=..., key_secret=...) as sim:
        sim.url, sim.state.work_orders, sim.state.requests
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.sim.harness import Fault, FaultPlan, RecordedRequest, control_routes, serving
from gateway.sim.server import SimServer

BASE_PATH = "/rest/amage/v1/work-orders"
STATES = ("NEW", "SCHEDULED", "IN_PROGRESS", "ON_HOLD", "FINISHED", "VOID")
PRIORITIES = ("LOW", "NORMAL", "HIGH")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

# Work-order fields of the document, by type; the *Uuid ones name the kind of record they refer to.
_WO_STRINGS = ("name", "description", "notes", "protocolNumber", "workAmountUnit")
_WO_DATES = ("created", "beginDate", "deadlineDate", "startDate", "finishDate")
_WO_NUMBERS = (
    "budget",
    "hoursEstimated",
    "workAmount",
    "workUnitMinutesTotal",
    "workUnitMinutes",
    "workUnitPrice",
)
_WO_REFERENCES = {
    "typeUuid": "type",
    "contractUuid": "contract",
    "contractScopeUuid": "contractScope",
    "accountUuid": "account",
    "assignedDepartmentUuid": "department",
    "assignedUserUuid": "user",
    "assignedContractorUuid": "contractor",
    "verifyUserUuid": "user",
    "parentUuid": "workOrder",
    "customerUuid": "customer",
    "locationUuid": "location",
    "placeOfWorkUuid": "placeOfWork",
}
_WO_FIELDS = frozenset(
    ("uuid", "stateName", "priorityName", "archived", *_WO_STRINGS, *_WO_DATES, *_WO_NUMBERS, *_WO_REFERENCES)
)
_PLAN_FIELDS = frozenset(("workOrderUuid", "elementTypeUuid", "itemCount", "category", "code"))
_RECORD_KINDS = frozenset((*_WO_REFERENCES.values(), "elementType", "asset"))


class _Rejected(Exception):
    """A request the simulated AMAGE refuses: answered as its result object."""

    def __init__(self, message: str, *, error_code: str = "BAD_REQUEST", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code
        self.status = status


@dataclass
class AmageSimState:
    """Everything the simulator knows; tests read it directly (same event loop)."""

    device_uuid: str = "00000000-0000-4000-8000-000000000001"
    api_key: str = "sim-api-key"
    key_secret: str = "sim-key-secret"
    sign_template: str = "{path}{key_secret}"
    check_references: bool = False  # True: a reference to a record not in `records` is NOT_FOUND
    records: dict[str, set[str]] = field(default_factory=dict)  # kind -> known uuids
    element_type_codes: dict[str, str] = field(default_factory=dict)  # code -> element type uuid
    work_orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # uuid -> accepted body + "id"
    plans: list[dict[str, Any]] = field(default_factory=list)  # accepted plan bodies + "uuid", "workOrder"
    asset_plans: list[dict[str, Any]] = field(default_factory=list)  # {"uuid", "workOrder", "asset"}
    requests: list[RecordedRequest] = field(default_factory=list)
    faults: FaultPlan = field(default_factory=FaultPlan)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1001))

    def reset(self) -> None:
        self.work_orders.clear()
        self.plans.clear()
        self.asset_plans.clear()
        self.requests.clear()
        self.faults.clear()

    def add_records(self, kind: str, uuids: list[str] | dict[str, str]) -> None:
        if kind not in _RECORD_KINDS:
            raise ValueError(f"unknown record kind {kind!r}; known: {sorted(_RECORD_KINDS)}")
        if isinstance(uuids, dict):
            if kind != "elementType":
                raise ValueError("only elementType records have codes")
            self.element_type_codes.update(uuids)
            uuids = list(uuids.values())
        self.records.setdefault(kind, set()).update(uuids)

    def expected_sign(self, *, method: str, path: str, body: bytes) -> str:
        text = self.sign_template.format(
            method=method,
            path=path,
            body=body.decode("utf-8", "replace"),
            api_key=self.api_key,
            device_uuid=self.device_uuid,
            key_secret=self.key_secret,
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def snapshot(self) -> dict[str, Any]:
        return {
            "work_orders": list(self.work_orders.values()),
            "plans": self.plans,
            "asset_plans": self.asset_plans,
            "requests": len(self.requests),
            "faults": self.faults.pending(),
        }


@dataclass
class AmageSim:
    url: str
    state: AmageSimState
    server: SimServer


def _result(
    status: int, *, uuid_: str = "", id_: int | None = None, error_code: Any = 0, message: str = ""
) -> Response:
    body: dict[str, Any] = {
        "uuid": uuid_,
        "success": status < 400,
        "errorCode": error_code,
        "message": message,
    }
    if id_ is not None:
        body = {"id": id_, **body}
    return JSONResponse(body, status_code=status)


def _header(request: Request, name: str) -> str | None:
    return request.headers.get(f"amage-{name}") or request.headers.get(name)


def _check_signature(state: AmageSimState, request: Request, body: bytes) -> None:
    device, key, sign = (
        _header(request, "device-uuid"),
        _header(request, "api-key"),
        _header(request, "api-sign"),
    )
    if not device or not key or not sign:
        raise _Rejected("Missing API signature headers", error_code="UNAUTHORIZED", status=401)
    if device != state.device_uuid or not hmac.compare_digest(key, state.api_key):
        raise _Rejected("Unknown device or API key", error_code="UNAUTHORIZED", status=401)
    expected = state.expected_sign(method=request.method, path=request.url.path, body=body)
    if not hmac.compare_digest(sign.lower(), expected):
        raise _Rejected("Invalid API signature", error_code="UNAUTHORIZED", status=401)


def _json_object(body: bytes, request: Request) -> dict[str, Any]:
    if "application/json" not in request.headers.get("content-type", ""):
        raise _Rejected(
            "Content-Type must be application/json", status=415, error_code="UNSUPPORTED_MEDIA_TYPE"
        )
    try:
        data = json.loads(body)
    except ValueError:
        raise _Rejected("The request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _Rejected("The request body must be a JSON object")
    return data


def _check_reference(state: AmageSimState, name: str, value: Any, kind: str) -> None:
    if not isinstance(value, str) or not _UUID.match(value):
        raise _Rejected(f"Field '{name}' must be a UUID")
    if kind == "workOrder":
        known = value in state.work_orders
    else:
        known = not state.check_references or value in state.records.get(kind, set())
    if not known:
        raise _Rejected(f"Record of type {kind} with uuid {value} was not found", error_code="NOT_FOUND")


def _validate_work_order(state: AmageSimState, data: dict[str, Any]) -> None:
    unknown = sorted(set(data) - _WO_FIELDS)
    if unknown:
        raise _Rejected(f"Unrecognized field(s): {', '.join(unknown)}")
    if "uuid" in data and (not isinstance(data["uuid"], str) or not _UUID.match(data["uuid"])):
        raise _Rejected("Field 'uuid' must be a UUID")
    if not isinstance(data.get("name"), str) or not data["name"].strip():
        raise _Rejected("Field 'name' is required")
    for name in _WO_STRINGS:
        if name in data and not isinstance(data[name], str):
            raise _Rejected(f"Field '{name}' must be a string")
    for name in _WO_DATES:
        if name in data and (not isinstance(data[name], str) or not _DATE.match(data[name])):
            raise _Rejected(f"Field '{name}' must be a date like 2021-01-01T12:00:00")
    for name in _WO_NUMBERS:
        if name in data and (isinstance(data[name], bool) or not isinstance(data[name], int | float)):
            raise _Rejected(f"Field '{name}' must be a number")
    if "archived" in data and not isinstance(data["archived"], bool):
        raise _Rejected("Field 'archived' must be a boolean")
    if "stateName" in data and data["stateName"] not in STATES:
        raise _Rejected(f"Field 'stateName' must be one of {', '.join(STATES)}")
    if "priorityName" in data and data["priorityName"] not in PRIORITIES:
        raise _Rejected(f"Field 'priorityName' must be one of {', '.join(PRIORITIES)}")
    for name, kind in _WO_REFERENCES.items():
        if name in data:
            _check_reference(state, name, data[name], kind)


def _validate_plan(state: AmageSimState, wo_uuid: str, data: dict[str, Any]) -> None:
    unknown = sorted(set(data) - _PLAN_FIELDS)
    if unknown:
        raise _Rejected(f"Unrecognized field(s): {', '.join(unknown)}")
    if "workOrderUuid" in data and data["workOrderUuid"] != wo_uuid:
        raise _Rejected("Field 'workOrderUuid' does not match the work order of the path")
    if wo_uuid not in state.work_orders:
        raise _Rejected(f"Work order with uuid {wo_uuid} was not found", error_code="NOT_FOUND")
    count = data.get("itemCount")
    if isinstance(count, bool) or not isinstance(count, int | float) or count <= 0:
        raise _Rejected("Field 'itemCount' must be a positive number")
    for name in ("category", "code"):
        if name in data and not isinstance(data[name], str):
            raise _Rejected(f"Field '{name}' must be a string")
    if "elementTypeUuid" in data:
        _check_reference(state, "elementTypeUuid", data["elementTypeUuid"], "elementType")
    elif "code" in data:
        if state.check_references and data["code"] not in state.element_type_codes:
            raise _Rejected(
                f"Record of type elementType with code {data['code']} was not found", error_code="NOT_FOUND"
            )
    else:
        raise _Rejected("Field 'elementTypeUuid' or 'code' is required")


def _join_asset(state: AmageSimState, wo_uuid: str, asset: str) -> Response:
    if wo_uuid not in state.work_orders:
        raise _Rejected(f"Work order with uuid {wo_uuid} was not found", error_code="NOT_FOUND")
    _check_reference(state, "uuid", asset, "asset")
    if any(p["workOrder"] == wo_uuid and p["asset"] == asset for p in state.asset_plans):
        raise _Rejected(f"Resource {asset} is already in the plan of work order {wo_uuid}")
    entry = str(uuid.uuid4())
    state.asset_plans.append({"uuid": entry, "workOrder": wo_uuid, "asset": asset})
    return _result(200, uuid_=entry, id_=next(state._ids))


def build_app(state: AmageSimState, server: SimServer) -> Starlette:
    def respond(request: Request, body: bytes) -> Response:
        try:
            _check_signature(state, request, body)
            return _handle(state, request, body)
        except _Rejected as rejected:
            return _result(rejected.status, error_code=rejected.error_code, message=rejected.message)

    async def api(request: Request) -> Response:
        return respond(request, await request.body())

    async def sim_records(request: Request) -> Response:
        try:
            data = await request.json()
            for kind, uuids in data.items():
                state.add_records(kind, uuids)
        except (ValueError, TypeError, AttributeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        state.check_references = True
        return JSONResponse({k: sorted(v) for k, v in state.records.items()})

    return Starlette(
        routes=[
            *control_routes(state, server),
            Route("/_sim/records", sim_records, methods=["POST"]),
            Route("/{path:path}", api, methods=["GET", "POST", "PUT", "DELETE"]),
        ]
    )


def _handle(state: AmageSimState, request: Request, body: bytes) -> Response:
    path = request.url.path
    if not path.startswith(BASE_PATH + "/"):
        raise _Rejected(f"No such endpoint: {path}", error_code="NOT_FOUND", status=404)
    action, _, arg = path[len(BASE_PATH) + 1 :].partition("/")
    if request.method != "POST":
        raise _Rejected(
            f"Method {request.method} not allowed here", error_code="METHOD_NOT_ALLOWED", status=405
        )
    if action == "add" and not arg:
        data = _json_object(body, request)
        _validate_work_order(state, data)
        wo_uuid = data.get("uuid") or str(uuid.uuid4())
        existing = state.work_orders.get(wo_uuid)
        if existing is not None:
            return _result(
                400, uuid_=wo_uuid, id_=existing["id"], error_code="BAD_REQUEST",
                message=f"Work order with uuid {wo_uuid} already exists",
            )  # fmt: skip
        wo_id = next(state._ids)
        state.work_orders[wo_uuid] = {**data, "uuid": wo_uuid, "id": wo_id}
        return _result(200, uuid_=wo_uuid, id_=wo_id)
    if action == "add-workorder-elementtype-plan" and _UUID.match(arg):
        data = _json_object(body, request)
        _validate_plan(state, arg, data)
        plan_uuid = str(uuid.uuid4())
        state.plans.append({**data, "uuid": plan_uuid, "workOrder": arg})
        return _result(200, uuid_=plan_uuid)
    if action == "asset-plan":
        wo_uuid, _, join = arg.partition("/join-asset-to-plan-by-uuid/")
        if _UUID.match(wo_uuid) and _UUID.match(join):
            return _join_asset(state, wo_uuid, join)
    raise _Rejected(f"No such endpoint: {path}", error_code="NOT_FOUND", status=404)


@contextlib.asynccontextmanager
async def run_amage_sim(
    *, host: str = "127.0.0.1", port: int = 0, state: AmageSimState | None = None, **options: Any
) -> AsyncIterator[AmageSim]:
    """Serve the simulator in the caller's event loop until the block exits. `options` build the state."""
    state = state if state is not None else AmageSimState(**options)
    async with serving(lambda server: build_app(state, server), state, host=host, port=port) as server:
        yield AmageSim(url=server.url, state=state, server=server)


__all__ = ["BASE_PATH", "AmageSim", "AmageSimState", "Fault", "build_app", "run_amage_sim"]
