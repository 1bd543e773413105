"""The Servitly backend: a firing becomes a maintenance work (or, configurable, a historical event).

Authentication: a JWT from `POST /identity/users/patLogin` (`{"apiKey", "pat"}`) or from
`POST /identity/users/login?apiKey=…` (`{"email", "password"}`), sent as `Authorization: Bearer`. The token is
renewed by logging in again, `token_refresh_margin` before `tokenExpirationTimestamp`, and whenever a call
answers 401: one transparent login and one retry of the same call, so an expired token loses no call. A 401
right after a fresh login means the credentials or their permissions are wrong: PAUSE.

Every call carries `X-Servitly-Tenant`. 429 is RETRY with the server's Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx

from gateway.cmms.http import (
    delivery_from_exception,
    delivery_from_response,
    make_client,
    response_body,
    user_agent,
)
from gateway.cmms.schema import ServitlyConfig
from gateway.core.clock import Clock, SystemClock
from gateway.core.delivery import Delivery, NetworkInfo, OutboxItem, Outcome
from gateway.core.errors import BackendError
from gateway.core.statelog import StateLog

log = logging.getLogger(__name__)

PAT_LOGIN = "/identity/users/patLogin"
LOGIN = "/identity/users/login"


class _LoginFailed(Exception):
    def __init__(self, delivery: Delivery) -> None:
        super().__init__(delivery.error)
        self.delivery = delivery


class ServitlyBackend:
    kind = "servitly"

    def __init__(
        self,
        config: ServitlyConfig,
        *,
        gateway_id: str,
        timezone: str | None = None,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.gateway_id = gateway_id
        self.counts_against_quota = config.monthly_quota is not None
        self._timezone = timezone
        self._clock = clock or SystemClock()
        self._client = make_client(
            config.http,
            base_url=config.url,
            headers={
                "User-Agent": user_agent(gateway_id),
                "Accept": "application/json",
                "X-Servitly-Tenant": config.tenant,
            },
            transport=transport,
        )
        self._token: str | None = None
        self._expires_at: float | None = None  # Unix seconds, when the login said
        self._login_lock = asyncio.Lock()
        self.logins = 0  # how many logins this backend made (status page, tests)
        self._login_log = StateLog(log, f"Servitly tenant {config.tenant}")

    @property
    def path(self) -> str:
        return f"/inventory/{self.config.endpoint}"

    # --- authentication -------------------------------------------------------------------------------

    def _login_request(self) -> tuple[str, dict[str, Any], dict[str, str]]:
        cfg = self.config
        api_key = cfg.api_key.get_secret_value()
        if cfg.pat is not None:
            return PAT_LOGIN, {"apiKey": api_key, "pat": cfg.pat.get_secret_value()}, {}
        assert cfg.email is not None and cfg.password is not None  # the schema checks it
        return LOGIN, {"email": cfg.email, "password": cfg.password.get_secret_value()}, {"apiKey": api_key}

    async def _login(self) -> dict[str, Any]:
        """Log in; raises _LoginFailed with the Delivery the failed login means."""
        path, body, params = self._login_request()
        shown = {"method": "POST", "path": path}  # never the credentials
        started = time.monotonic()
        try:
            response = await self._client.post(path, json=body, params=params)
        except httpx.HTTPError as exc:
            failed = delivery_from_exception(exc, request=shown, elapsed_s=time.monotonic() - started)
            failed.error = f"Servitly login: {failed.error}"
            failed.maybe_committed = False
            self._login_log.change("failed", logging.WARNING, "%s; tasks stay queued", failed.error)
            raise _LoginFailed(failed) from None
        answer = response_body(response)
        token = answer.get("token") if isinstance(answer, dict) else None
        if response.status_code != 200 or not isinstance(token, str) or not token:
            failed = delivery_from_response(
                response, request=shown, elapsed_s=time.monotonic() - started, now=self._clock.now()
            )
            if 400 <= response.status_code < 500 and response.status_code not in (408, 425, 429):
                failed.outcome = Outcome.PAUSE  # every later login would fail the same way
            elif failed.outcome is Outcome.DONE:
                failed.outcome = Outcome.PAUSE
                failed.error = f"HTTP {response.status_code} without a token: is {self.config.url} Servitly?"
            method = (
                "patLogin (pat, api_key)"
                if self.config.pat is not None
                else "login (email, password, api_key)"
            )
            failed.error = f"Servitly {method} refused, tenant {self.config.tenant}: {failed.error}"
            self._login_log.change("failed", logging.WARNING, "%s; tasks stay queued", failed.error)
            raise _LoginFailed(failed)
        assert isinstance(answer, dict)
        self._token = token
        expires_ms = answer.get("tokenExpirationTimestamp")
        if isinstance(expires_ms, int | float) and not isinstance(expires_ms, bool):
            self._expires_at = float(expires_ms) / 1000.0
        else:
            self._expires_at = None
        self.logins += 1
        self._login_log.change("ok", logging.INFO, "logged in; token valid until %s", self._expires_at)
        return answer

    def _token_usable(self) -> bool:
        if self._token is None:
            return False
        if self._expires_at is None:
            return True  # the server did not say: use it until it answers 401
        return self._clock.now() < self._expires_at - self.config.token_refresh_margin

    async def _ensure_token(self, *, stale: str | None = None) -> tuple[str, bool]:
        """A usable token, and whether it was fetched just now. `stale`: a token the server refused."""
        async with self._login_lock:
            if stale is not None and self._token == stale:
                self._token = None
            if self._token_usable():
                assert self._token is not None
                return self._token, False
            await self._login()
            assert self._token is not None
            return self._token, True

    async def start(self) -> NetworkInfo:
        """Log in once: bad credentials raise BackendError; an unreachable Servitly gives unknowns."""
        try:
            async with self._login_lock:
                answer = await self._login()
        except _LoginFailed as exc:
            if exc.delivery.outcome is Outcome.PAUSE:
                raise BackendError(exc.delivery.error) from None
            # not reachable: the login failure was logged once (and its recovery will be)
            return NetworkInfo(timezone=self._timezone, name=self.config.tenant)
        return NetworkInfo(
            timezone=self._timezone,
            network_id=str(answer.get("tenantId") or "") or None,
            name=self.config.tenant,
            extra={"user_id": answer.get("userId"), "endpoint": self.config.endpoint},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- the request ----------------------------------------------------------------------------------

    def target(self, item: OutboxItem) -> dict[str, str]:
        """thingId / locationId: the rule's thing_id or location_id, else the equipment mapped in `things`."""
        extra, out = item.firing.task.extra, {}
        if extra.get("thing_id") is not None:
            out["thingId"] = str(extra["thing_id"])
        if extra.get("location_id") is not None:
            out["locationId"] = str(extra["location_id"])
        equipment = item.firing.task.equipment
        if not out and equipment is not None and str(equipment) in self.config.things:
            out["thingId"] = self.config.things[str(equipment)]
        return out

    def properties(self, item: OutboxItem) -> dict[str, str]:
        firing = item.firing
        props = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in firing.metadata.items()}
        props.update(
            {
                "gateway": self.gateway_id,
                "rule": firing.rule_id,
                "firing": item.firing_uuid,
                "firingKey": firing.key,
                "priority": str(firing.priority),
                "evidence": json.dumps(
                    [
                        {"signal": e.signal, "value": e.value, "ts": e.ts, "quality": e.quality}
                        for e in firing.evidence
                    ],
                    separators=(",", ":"),
                    default=str,
                ),
            }
        )
        if firing.trigger:
            props["trigger"] = firing.trigger
        if firing.task.equipment is not None:
            props["equipment"] = str(firing.task.equipment)
        if firing.task.spare_parts:  # no field for them in either endpoint: a string property, like the rest
            props["spareParts"] = json.dumps(
                [{"article": p.article, "quantity": p.quantity} for p in firing.task.spare_parts],
                separators=(",", ":"),
            )
        return props

    def body(self, item: OutboxItem) -> dict[str, Any]:
        # Only the start: the firing is when the need arose. No endTimestamp ("when the maintenance work
        # completed", seed 003): the work has not been done yet, and firing time + duration would be a
        # completion in the future.
        firing, task, cfg = item.firing, item.firing.task, self.config
        start_ms = round(firing.fired_at * 1000)
        if cfg.endpoint == "historicalEvents":
            body: dict[str, Any] = {"startTimestamp": start_ms, **self.target(item)}
            definition = task.extra.get("alert_definition_id") or cfg.alert_definition_id
            if definition:
                body["alertDefinitionId"] = str(definition)
            trace = "\n".join(f"{k}: {v}" for k, v in self.properties(item).items())
            body["notes"] = f"{task.description}\n\n{trace}"
            return body
        body = {
            "startTimestamp": start_ms,
            "type": str(task.extra.get("type") or cfg.event_type),
            "description": task.description,
            **self.target(item),
            "properties": self.properties(item),
        }
        email = task.extra.get("user_email") or next(
            (a for a in task.assignees if isinstance(a, str) and "@" in a), None
        )
        if email:
            body["userEmail"] = str(email)
        return body

    def build_request(self, item: OutboxItem) -> dict[str, Any]:
        """The call as it is sent, without the token: {"method", "path", "json"}. ValueError when the rule
        gives no thing or location."""
        if not self.target(item):
            raise ValueError(
                f"rule {item.firing.rule_id} gives Servitly no thingId or locationId: add thing_id or "
                f"location_id to the rule's task, or map equipment {item.firing.task.equipment!r} under "
                "cmms.things in gateway.yaml"
            )
        return {"method": "POST", "path": self.path, "json": self.body(item)}

    # --- delivery -------------------------------------------------------------------------------------

    async def deliver(self, item: OutboxItem) -> Delivery:
        started = time.monotonic()
        try:
            rendered = self.build_request(item)
        except ValueError as exc:
            return Delivery(Outcome.DEAD, error=str(exc))
        stale: str | None = None
        for _ in range(2):
            try:
                token, fresh = await self._ensure_token(stale=stale)
            except _LoginFailed as exc:
                failed = exc.delivery
                failed.request = rendered
                failed.elapsed_s = time.monotonic() - started
                return failed
            try:
                response = await self._client.post(
                    self.path, json=rendered["json"], headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.HTTPError as exc:
                return delivery_from_exception(exc, request=rendered, elapsed_s=time.monotonic() - started)
            if response.status_code == 401 and not fresh:
                log.debug("Servitly refused the token (401): logging in again and resending the same call")
                stale = token
                continue
            break
        answer = response_body(response)
        remote_id = answer.get("id") if isinstance(answer, dict) and response.status_code < 300 else None
        delivery = delivery_from_response(
            response,
            request=rendered,
            elapsed_s=time.monotonic() - started,
            now=self._clock.now(),
            remote_id=str(remote_id) if remote_id is not None else None,
        )
        if response.status_code == 401:
            delivery.error = f"Servitly refused a token it had just issued: {delivery.error}"
        return delivery


__all__ = ["LOGIN", "PAT_LOGIN", "ServitlyBackend"]
