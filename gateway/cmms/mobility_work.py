"""The Mobility Work backend: a firing becomes `POST /partners/v1/tasks`.

Start-up reads `GET /partners/v1/network/settings` (timezone, currency, network id, and proof that the key
works). The API returns no task id: the task id arrives later with the TaskWasScheduled webhook, whose
`metadata.firing` names the firing. A POST whose response is lost may have created the task anyway; the
delivery then says `maybe_committed` and the ledger reports a duplicate if the retry creates a second one.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from gateway.cmms import http
from gateway.cmms.schema import MobilityWorkConfig
from gateway.core.clock import Clock, SystemClock
from gateway.core.delivery import Delivery, NetworkInfo, OutboxItem, Outcome
from gateway.core.errors import BackendError
from gateway.core.firings import TaskSpec
from gateway.core.statelog import StateLog

log = logging.getLogger(__name__)

TASKS_PATH = "/partners/v1/tasks"
SETTINGS_PATH = "/partners/v1/network/settings"

# The equipment_identifier schema's types, in the task endpoint's own words (seed 001, "Schedule a new task":
# "native", "external", "email", "code"; "For equipment you can mix both native and external identifiers").
EQUIPMENT_NATIVE = "native"
EQUIPMENT_EXTERNAL = "external"  # an equipment's external reference is its item code
EquipmentForm = Literal["external", "externalReference", "plain"]


def equipment_identifier(equipment: str | int, form: EquipmentForm = "external") -> str | dict[str, Any]:
    """int -> native id (typed); str -> item code as `{"type": "external"}` (default), `{"type":
    "externalReference"}`, or the bare string (`plain`, the API infers the type)."""
    if isinstance(equipment, bool):
        raise TypeError("equipment must be an item code (str) or a native id (int)")
    if isinstance(equipment, int):
        return {"type": EQUIPMENT_NATIVE, "value": equipment}
    if form == "plain":
        return equipment
    return {"type": form, "value": equipment}


def assignee_identifier(assignee: str | int) -> dict[str, Any]:
    """int -> native user id, str -> e-mail address."""
    if isinstance(assignee, int) and not isinstance(assignee, bool):
        return {"type": "native", "value": assignee}
    return {"type": "email", "value": str(assignee)}


def tag_identifier(tag: str | int) -> dict[str, Any]:
    """int -> native tag id, str -> tag code."""
    if isinstance(tag, int) and not isinstance(tag, bool):
        return {"type": "native", "value": tag}
    return {"type": "code", "value": str(tag)}


def format_datetime(ts: float, tz: tzinfo) -> str:
    """ISO 8601 with the zone's offset, to the second: `2022-01-11T10:00:00+01:00`."""
    return datetime.fromtimestamp(round(ts), tz).isoformat()


def task_payload(
    task: TaskSpec,
    *,
    fired_at: float,
    tz: tzinfo,
    metadata: dict[str, Any],
    send_email_default: bool = False,
    equipment_form: EquipmentForm = "external",
) -> dict[str, Any]:
    """The JSON body of `POST /partners/v1/tasks` for one rendered task."""
    if task.equipment is None:
        raise ValueError("a Mobility Work task needs an equipment")
    start = datetime.fromtimestamp(round(fired_at), tz)
    end = start + timedelta(seconds=round(task.duration_s))
    body: dict[str, Any] = {
        "equipment": equipment_identifier(task.equipment, equipment_form),
        "description": task.description,
        "startDateTime": start.isoformat(),
        "endDateTime": end.isoformat(),
        "allDay": task.all_day,
        "assignees": [assignee_identifier(a) for a in task.assignees],
    }
    if task.tags:
        body["tags"] = [tag_identifier(t) for t in task.tags]
    if task.checklist is not None:
        body["checklist"] = task.checklist
    body["sendEmailToAssignees"] = task.send_email_to_assignees or send_email_default
    body["inheritEquipmentTags"] = task.inherit_equipment_tags
    body["metadata"] = metadata
    return body


def _zone(name: str | None) -> tzinfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown timezone %r, ignoring it", name)
        return None


def make_mw_client(
    config: MobilityWorkConfig, *, gateway_id: str, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The one HTTP client set-up for the Mobility Work API (task backend and bulk client alike)."""
    return http.make_client(
        config.http,
        base_url=config.url,
        headers={
            "Api-Key": config.api_key.get_secret_value(),
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": http.user_agent(gateway_id, config.network_name),
        },
        transport=transport,
    )


class MobilityWorkBackend:
    kind = "mobility_work"
    counts_against_quota = True

    def __init__(
        self,
        config: MobilityWorkConfig,
        *,
        gateway_id: str,
        timezone: str | None = None,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.gateway_id = gateway_id
        self._tz_override = _zone(timezone)
        self._clock = clock or SystemClock()
        self.network: NetworkInfo | None = None  # None until the settings were read once
        self._settings_log = StateLog(log, "Mobility Work network settings")
        self._client = make_mw_client(config, gateway_id=gateway_id, transport=transport)

    @property
    def timezone(self) -> tzinfo:
        """Config override first, else the network's timezone, else UTC."""
        if self._tz_override is not None:
            return self._tz_override
        zone = _zone(self.network.timezone) if self.network else None
        return zone or ZoneInfo("UTC")

    async def _fetch_settings(self) -> NetworkInfo:
        """GET the network settings. Raises BackendError on 401/403, httpx.HTTPError when unreachable."""
        response = await self._client.get(SETTINGS_PATH)
        if response.status_code in (401, 403):
            cause = (
                "the API key was refused (HTTP 401): it is wrong, revoked or for another network"
                if response.status_code == 401
                else "access denied (HTTP 403): the plan or the key does not allow the API"
            )
            raise BackendError(f"Mobility Work at {self.config.url}: {cause}; check cmms.api_key")
        if response.status_code != 200:
            raise httpx.HTTPStatusError(
                f"HTTP {response.status_code}", request=response.request, response=response
            )
        data = http.response_body(response)  # JSON, or the text when it is not JSON (nor sanely nested)
        if not isinstance(data, dict):
            raise ValueError("network settings: expected a JSON object")
        info = NetworkInfo(
            timezone=data.get("timezone"),
            currency=data.get("currency"),
            network_id=data.get("networkId"),
            name=data.get("name"),
            extra={k: v for k, v in data.items() if k not in {"timezone", "currency", "networkId", "name"}},
        )
        self.network = info
        if not self.config.network_name and info.name:
            self._client.headers["User-Agent"] = http.user_agent(self.gateway_id, info.name)
        return info

    async def start(self) -> NetworkInfo:
        return await self._read_settings() or NetworkInfo()

    async def _read_settings(self) -> NetworkInfo | None:
        """The settings, logged once when they become known or unreadable; None when unknown.
        BackendError (key or plan refused) propagates."""
        try:
            info = await self._fetch_settings()
        except httpx.HTTPStatusError as exc:
            why = str(exc)
        except httpx.HTTPError as exc:
            why = f"Mobility Work unreachable ({http.describe_exception(exc)[0]})"
        except ValueError as exc:  # the body is not a JSON object
            why = f"unreadable ({exc})"
        else:
            self._settings_log.change(
                "known",
                logging.INFO,
                "network %r (%s), timezone %s, currency %s",
                info.name,
                info.network_id,
                info.timezone,
                info.currency,
            )
            return info
        self._settings_log.change("unknown", logging.WARNING, "%s; tasks will be queued", why)
        return None

    def metadata_for(self, item: OutboxItem) -> dict[str, Any]:
        """The rule's metadata, then ours on top (ours win on conflict)."""
        firing = item.firing
        return {
            **firing.metadata,
            "gateway": self.gateway_id,
            "rule": firing.rule_id,
            "firing": item.firing_uuid,
        }

    def build_request(self, item: OutboxItem) -> dict[str, Any]:
        """The request as it is sent, without the key: {"method", "path", "json"}."""
        body = task_payload(
            item.firing.task,
            fired_at=item.firing.fired_at,
            tz=self.timezone,
            metadata=self.metadata_for(item),
            send_email_default=self.config.send_email_to_assignees,
            equipment_form=self.config.equipment_identifier,
        )
        return {"method": "POST", "path": TASKS_PATH, "json": body}

    async def deliver(self, item: OutboxItem) -> Delivery:
        if self.network is None and self._tz_override is None:
            # Started while the CMMS was unreachable: learn the timezone now if we can (UTC otherwise).
            try:
                await self._read_settings()
            except BackendError as exc:  # the POST will say so too (PAUSE)
                log.debug("network settings still unknown: %s", exc)
        try:
            request = self.build_request(item)
        except (ValueError, TypeError) as exc:
            return Delivery(Outcome.DEAD, error=f"cannot build the task: {exc}")
        started = time.monotonic()
        try:
            response = await self._client.post(TASKS_PATH, json=request["json"])
        except httpx.HTTPError as exc:
            delivery = http.delivery_from_exception(
                exc, request=request, elapsed_s=time.monotonic() - started
            )
            log.debug("POST %s for firing %s: %s", TASKS_PATH, item.firing_uuid, delivery.error)
            return delivery
        delivery = http.delivery_from_response(
            response, request=request, elapsed_s=time.monotonic() - started, now=self._clock.now()
        )
        if delivery.outcome is not Outcome.DONE:
            log.debug("POST %s for firing %s: %s", TASKS_PATH, item.firing_uuid, delivery.error)
        return delivery

    async def aclose(self) -> None:
        await self._client.aclose()
