"""The AMAGE backend: a firing becomes a work order, and its expected spare parts a material plan.

One delivery is up to 1 + N calls (docs/backends.md has the whole story):

1. `POST {base}/add` with `uuid` = the firing uuid (uuid5 of installation id + gateway id + firing key). AMAGE
   lets the client choose the work order's uuid, so a retried add cannot make a second order. An answer
   saying that uuid already exists counts as success only when the gateway can show it caused it: this
   backend sent that add and never saw the answer, or the store counted an earlier attempt of the row as
   maybe committed (`OutboxItem.maybe_committed`, e.g. in flight when the gateway died). Otherwise the
   work order is not provably this firing's (a state database restored from a backup reuses ids): the row
   goes DEAD with a WARNING saying so, never a silent success.
2. `POST {base}/asset-plan/{uuid}/join-asset-to-plan-by-uuid/{resource}` when the equipment is an AMAGE
   resource (a uuid, or mapped in `assets`): the work order's resource plan. An error saying the resource is
   already on the plan (`duplicate_pattern`) counts as done: the work order is ours by then.
3. `POST {base}/add-workorder-elementtype-plan/{uuid}` once per expected spare part. Plan lines have no
   client-chosen id, so the backend remembers (in memory) which lines of which work order went through; a
   failed line makes the delivery RETRY / DEAD / PAUSE, and the next attempt skips the add (or gets
   "already exists") and sends only the missing lines. After a restart between two lines, the lines sent
   before it may be sent again (a duplicate plan line, never a duplicate work order).

Every call is signed: `<prefix>device-uuid`, `<prefix>api-key`, `<prefix>api-sign` = SHA-256 hex of
`sign_template` (default `{path}{key_secret}`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from gateway.cmms.http import (
    delivery_from_exception,
    delivery_from_response,
    make_client,
    outcome_for_status,
    parse_retry_after,
    response_body,
    user_agent,
)
from gateway.cmms.schema import AmageConfig
from gateway.core.clock import Clock, SystemClock
from gateway.core.delivery import Delivery, NetworkInfo, OutboxItem, Outcome
from gateway.core.firings import Priority

log = logging.getLogger(__name__)

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
NAME_MAX = 255
_REMEMBERED_MAX = 10_000  # work orders whose plan progress is kept in memory
_ASSET_DONE = -1  # in a work order's progress: the resource plan call went through

# Rule task keys (task.extra) that become AMAGE work-order fields; other keys belong to other backends.
EXTRA_FIELDS = {
    "type_uuid": "typeUuid",
    "state": "stateName",
    "priority": "priorityName",
    "assigned_user_uuid": "assignedUserUuid",
    "assigned_department_uuid": "assignedDepartmentUuid",
    "assigned_contractor_uuid": "assignedContractorUuid",
    "verify_user_uuid": "verifyUserUuid",
    "contract_uuid": "contractUuid",
    "contract_scope_uuid": "contractScopeUuid",
    "account_uuid": "accountUuid",
    "customer_uuid": "customerUuid",
    "location_uuid": "locationUuid",
    "place_of_work_uuid": "placeOfWorkUuid",
    "parent_uuid": "parentUuid",
    "protocol_number": "protocolNumber",
    "budget": "budget",
    "work_amount": "workAmount",
    "work_amount_unit": "workAmountUnit",
}
_ASSIGNMENT = ("assignedUserUuid", "assignedDepartmentUuid", "assignedContractorUuid")
_PAUSE_CODES = {"UNAUTHORIZED", "FORBIDDEN", "401", "403"}
_RETRY_CODES = {"TOO_MANY_REQUESTS", "INTERNAL_SERVER_ERROR", "SERVICE_UNAVAILABLE", "GATEWAY_TIMEOUT", "429"}


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and bool(_UUID.match(value))


def sign(
    template: str, *, method: str, path: str, body: bytes, api_key: str, device_uuid: str, key_secret: str
) -> str:
    """The `api-sign` header: SHA-256 hex digest of the template filled in."""
    text = template.format(
        method=method,
        path=path,
        body=body.decode("utf-8"),
        api_key=api_key,
        device_uuid=device_uuid,
        key_secret=key_secret,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def explain_error(body: dict[str, Any], status: int) -> str:
    """One line for people from an AMAGE result object with success=false."""
    code = str(body.get("errorCode", "")).strip()
    message = str(body.get("message") or "").strip() or "(no message)"
    if code == "NOT_FOUND" or code == "404":
        return (
            f"AMAGE HTTP {status}: a record the request refers to does not exist in AMAGE "
            f"(errorCode NOT_FOUND): {message}. Check the uuids given by the rule (type_uuid, "
            "assigned_user_uuid, location_uuid, …) and by gateway.yaml (users, department_uuid, "
            "element_types, work_order_type_uuid)."
        )
    return f"AMAGE HTTP {status} ({code or 'no errorCode'}): {message}"


class AmageBackend:
    kind = "amage"

    def __init__(
        self,
        config: AmageConfig,
        *,
        gateway_id: str,
        timezone: str | None = None,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.gateway_id = gateway_id
        self.counts_against_quota = config.monthly_quota is not None
        self._tz = ZoneInfo(timezone or "UTC")
        self._timezone = timezone or "UTC"
        self._clock = clock or SystemClock()
        self._base = "/" + config.base_path.strip("/")
        self._duplicate = re.compile(config.duplicate_pattern)
        self._client = make_client(
            config.http,
            base_url=config.url,
            headers={"User-Agent": user_agent(gateway_id), "Accept": "application/json"},
            transport=transport,
        )
        # work order uuid -> indexes of the material plan lines AMAGE accepted (see the module docstring)
        self._progress: OrderedDict[str, set[int]] = OrderedDict()
        # work orders whose add this backend sent without seeing AMAGE's answer: "already exists" is ours
        self._unanswered: OrderedDict[str, None] = OrderedDict()

    async def start(self) -> NetworkInfo:
        """AMAGE's document has no read endpoint to check the key with: nothing is called. A bad key or sign
        shows up on the first delivery (PAUSE, with AMAGE's message)."""
        return NetworkInfo(
            timezone=self._timezone, name=self.config.url, extra={"device_uuid": self.config.device_uuid}
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- the requests -----------------------------------------------------------------------------------

    def _date(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self._tz).strftime("%Y-%m-%dT%H:%M:%S")

    def work_order(self, item: OutboxItem) -> dict[str, Any]:
        """The `add` body of a firing."""
        firing, task, cfg = item.firing, item.firing.task, self.config
        first_line = next(
            (line.strip() for line in task.description.splitlines() if line.strip()), firing.rule_id
        )
        body: dict[str, Any] = {
            "uuid": item.firing_uuid,
            "name": (task.title or first_line)[:NAME_MAX],
            "description": task.description,
            "stateName": cfg.work_order_state,
            "priorityName": "HIGH" if firing.priority is Priority.HIGH else "NORMAL",
            "created": self._date(firing.fired_at),
            "beginDate": self._date(firing.fired_at),
            "deadlineDate": self._date(firing.fired_at + task.duration_s),
            "hoursEstimated": round(task.duration_s / 3600.0, 2),
            "notes": self._notes(item),
        }
        if cfg.work_order_type_uuid:
            body["typeUuid"] = cfg.work_order_type_uuid
        user = next((u for u in map(self._user_uuid, task.assignees) if u is not None), None)
        if user is not None:
            body["assignedUserUuid"] = user
        for key, name in EXTRA_FIELDS.items():
            if key in task.extra and task.extra[key] is not None:
                value = task.extra[key]
                body[name] = str(value).upper() if name in ("stateName", "priorityName") else value
        if cfg.department_uuid and not any(name in body for name in _ASSIGNMENT):
            body["assignedDepartmentUuid"] = cfg.department_uuid
        return body

    def _user_uuid(self, assignee: str | int) -> str | None:
        mapped = self.config.users.get(str(assignee))
        if mapped is not None:
            return mapped
        return assignee if is_uuid(assignee) else None  # type: ignore[return-value]

    def _notes(self, item: OutboxItem) -> str:
        firing = item.firing
        lines = [
            f"gateway: {self.gateway_id}",
            f"rule: {firing.rule_id}",
            f"firing: {item.firing_uuid}",
            f"firing key: {firing.key}",
        ]
        if firing.task.equipment is not None:
            lines.append(f"equipment: {firing.task.equipment}")
        if firing.task.assignees:
            lines.append("assignees: " + ", ".join(str(a) for a in firing.task.assignees))
        for key, value in firing.metadata.items():
            lines.append(f"{key}: {value}")
        if firing.evidence:
            lines.append("evidence:")
            for ev in firing.evidence:
                lines.append(f"- {ev.signal} = {ev.value} ({ev.quality}, {self._date(ev.ts)})")
        return "\n".join(lines)

    def plan_lines(self, item: OutboxItem) -> list[dict[str, Any]]:
        """The material plan bodies, one per expected spare part."""
        lines = []
        for part in item.firing.task.spare_parts:
            line: dict[str, Any] = {"workOrderUuid": item.firing_uuid, "itemCount": part.quantity}
            element = self.config.element_types.get(part.article)
            if element is None and is_uuid(part.article):
                element = part.article
            if element is not None:
                line["elementTypeUuid"] = element
            else:
                line["code"] = part.article
            lines.append(line)
        return lines

    def asset(self, item: OutboxItem) -> str | None:
        """The AMAGE resource uuid of the task's equipment: mapped in `assets`, or a uuid itself."""
        equipment = item.firing.task.equipment
        if equipment is None:
            return None
        mapped = self.config.assets.get(str(equipment))
        if mapped is not None:
            return mapped
        return equipment if is_uuid(equipment) else None  # type: ignore[return-value]

    def build_request(self, item: OutboxItem) -> dict[str, Any]:
        """What a delivery sends, without secrets: the add, the resource plan call, the material plan."""
        rendered: dict[str, Any] = {"method": "POST", "path": self._add_path, "json": self.work_order(item)}
        asset = self.asset(item)
        if asset is not None:
            rendered["asset_plan"] = {"method": "POST", "path": self._asset_path(item.firing_uuid, asset)}
        plan = [
            {"method": "POST", "path": self._plan_path(item.firing_uuid), "json": ln}
            for ln in self.plan_lines(item)
        ]
        if plan:
            rendered["material_plan"] = plan
        return rendered

    @property
    def _add_path(self) -> str:
        return f"{self._base}/add"

    def _plan_path(self, wo_uuid: str) -> str:
        return f"{self._base}/add-workorder-elementtype-plan/{wo_uuid}"

    def _asset_path(self, wo_uuid: str, asset: str) -> str:
        return f"{self._base}/asset-plan/{wo_uuid}/join-asset-to-plan-by-uuid/{asset}"

    # --- delivery ---------------------------------------------------------------------------------------

    async def deliver(self, item: OutboxItem) -> Delivery:
        started = time.monotonic()
        rendered = self.build_request(item)
        wo_uuid = item.firing_uuid
        done = self._progress.get(wo_uuid)
        if done is None:
            failed = await self._call(self._add_path, rendered["json"], rendered, started, add=item)
            if failed is not None:
                return failed
            self._unanswered.pop(wo_uuid, None)
            done = self._remember(wo_uuid)
        join = rendered.get("asset_plan")
        if join is not None and _ASSET_DONE not in done:
            failed = await self._call(join["path"], None, rendered, started, join=True)
            if failed is not None:
                failed.error = (
                    f"work order {wo_uuid} is in AMAGE, but joining its resource failed: {failed.error}"
                )
                failed.remote_id = wo_uuid
                return failed
            done.add(_ASSET_DONE)
        plan = rendered.get("material_plan", [])
        for index, call in enumerate(plan):
            if index in done:
                continue
            failed = await self._call(call["path"], call["json"], rendered, started)
            if failed is not None:
                article = item.firing.task.spare_parts[index].article
                failed.error = (
                    f"work order {wo_uuid} is in AMAGE, but material plan line {index + 1}/{len(plan)} "
                    f"({article}) failed: {failed.error}"
                )
                failed.remote_id = wo_uuid
                return failed
            done.add(index)
        self._progress.pop(wo_uuid, None)
        return Delivery(
            Outcome.DONE,
            status_code=200,
            request=rendered,
            remote_id=wo_uuid,
            elapsed_s=time.monotonic() - started,
        )

    def _remember(self, wo_uuid: str) -> set[int]:
        done: set[int] = set()
        self._progress[wo_uuid] = done
        while len(self._progress) > _REMEMBERED_MAX:
            self._progress.popitem(last=False)
        return done

    async def _call(
        self,
        path: str,
        payload: dict[str, Any] | None,
        rendered: dict[str, Any],
        started: float,
        *,
        add: OutboxItem | None = None,
        join: bool = False,
    ) -> Delivery | None:
        """One signed POST; None when AMAGE accepted it, else the failed Delivery. `add`: this is the work
        order's add, for that item."""
        text = "" if payload is None else json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        content = text.encode("utf-8")
        request = self._client.build_request("POST", path, content=content)
        request.headers["Content-Type"] = "application/json"
        cfg, prefix = self.config, self.config.header_prefix
        request.headers[f"{prefix}device-uuid"] = cfg.device_uuid
        request.headers[f"{prefix}api-key"] = cfg.api_key.get_secret_value()
        request.headers[f"{prefix}api-sign"] = sign(
            cfg.sign_template,
            method="POST",
            path=request.url.path,
            body=content,
            api_key=cfg.api_key.get_secret_value(),
            device_uuid=cfg.device_uuid,
            key_secret=cfg.key_secret.get_secret_value(),
        )
        try:
            response = await self._client.send(request)
        except httpx.HTTPError as exc:
            failed = delivery_from_exception(exc, request=rendered, elapsed_s=time.monotonic() - started)
            if add is not None:
                if failed.maybe_committed:
                    self._sent_unanswered(add.firing_uuid)
                failed.maybe_committed = False  # the retry carries the same uuid: no second work order
            return failed
        return self._interpret(response, rendered, started, add=add, join=join)

    def _sent_unanswered(self, wo_uuid: str) -> None:
        self._unanswered[wo_uuid] = None
        while len(self._unanswered) > _REMEMBERED_MAX:
            self._unanswered.popitem(last=False)

    def _interpret(
        self,
        response: httpx.Response,
        rendered: dict[str, Any],
        started: float,
        *,
        add: OutboxItem | None,
        join: bool = False,
    ) -> Delivery | None:
        status = response.status_code
        elapsed = time.monotonic() - started
        body = response_body(response)
        if not (isinstance(body, dict) and "success" in body):
            if add is not None and status in (502, 504):  # a proxy's answer: AMAGE may have committed
                self._sent_unanswered(add.firing_uuid)
            if 200 <= status < 300:
                return Delivery(
                    Outcome.PAUSE,
                    status_code=status,
                    error=f"HTTP {status} without an AMAGE result object: is {self.config.url} AMAGE?",
                    details=body,
                    request=rendered,
                    elapsed_s=elapsed,
                )
            return delivery_from_response(
                response, request=rendered, elapsed_s=elapsed, now=self._clock.now()
            )
        if body.get("success") is True and 200 <= status < 300:
            return None
        if add is not None and self._is_duplicate(body, add.firing_uuid):
            return self._already_exists(add, status, body, rendered, elapsed)
        code = str(body.get("errorCode", "")).upper()
        if join and code != "NOT_FOUND" and self._duplicate.search(str(body.get("message") or "")):
            return None  # the resource is on our work order's plan already
        outcome = outcome_for_status(status)
        if code in _PAUSE_CODES:
            outcome = Outcome.PAUSE
        elif code in _RETRY_CODES or code.startswith("5"):
            outcome = Outcome.RETRY
        elif outcome is Outcome.DONE:  # HTTP 2xx carrying success=false
            outcome = Outcome.DEAD
        retry_after = None
        if outcome is Outcome.RETRY:
            retry_after = parse_retry_after(response.headers.get("retry-after"), now=self._clock.now())
        return Delivery(
            outcome,
            status_code=status,
            error=explain_error(body, status),
            details=body,
            request=rendered,
            retry_after_s=retry_after,
            elapsed_s=elapsed,
        )

    def _already_exists(
        self, item: OutboxItem, status: int, body: dict[str, Any], rendered: dict[str, Any], elapsed: float
    ) -> Delivery | None:
        """AMAGE holds a work order with this firing's uuid: ours (None: go on) when provable, else DEAD."""
        wo_uuid, message = item.firing_uuid, str(body.get("message") or "")
        if wo_uuid in self._unanswered or item.maybe_committed > 0:
            log.info("AMAGE already has work order %s: an earlier attempt got through (%s)", wo_uuid, message)
            self._unanswered.pop(wo_uuid, None)
            return None
        error = (
            f"AMAGE already has work order {wo_uuid}, and no earlier attempt of this firing may have created "
            "it: not provably this firing's (a state database restored from a backup, or copied to a second "
            f"gateway, reuses firing ids). Check that work order in AMAGE. AMAGE said: {message}"
        )
        log.warning("outbox row %d (rule %s): %s", item.outbox_id, item.firing.rule_id, error)
        return Delivery(
            Outcome.DEAD, status_code=status, error=error, details=body, request=rendered, elapsed_s=elapsed
        )

    def _is_duplicate(self, body: dict[str, Any], wo_uuid: str) -> bool:
        code = str(body.get("errorCode", "")).upper()
        if code in ("CONFLICT", "409"):
            return True
        message = str(body.get("message") or "")
        return bool(self._duplicate.search(message)) and (wo_uuid in message or body.get("uuid") == wo_uuid)


__all__ = ["EXTRA_FIELDS", "AmageBackend", "explain_error", "is_uuid", "sign"]
