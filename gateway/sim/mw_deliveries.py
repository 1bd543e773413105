"""The Mobility Work simulator's outgoing webhooks: build an event from the simulated world, sign it, send it,
resend it (a CMMS retry or a replay)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx

from gateway.core.statelog import StateLog
from gateway.sim import mw_webhooks as wh
from gateway.sim.mw_state import SimState, WebhookDelivery
from gateway.web.signature import HEADER, sign

log = logging.getLogger(__name__)


def dumps(obj: Any) -> bytes:
    # "the API will always return using a minified format"
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


_TASK_STATUS = {
    "TaskWasScheduled": "scheduled",
    "TaskWasStarted": "started",
    "TaskWasCompleted": "completed",
    "TaskWasCanceled": "canceled",
}


def build_webhook(
    s: SimState,
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
    now = time.time() if at is None else at
    user = s.user_for(by)
    net = s.network_id
    if event in wh.TASK_EVENTS:
        task = s.task(task_id)
        task.status = _TASK_STATUS[event]
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
    qty = 1.0 if quantity is None else quantity
    previous = part.stock
    if event in ("SparePartWasConsumed", "SparePartConsumptionWasCanceled"):
        ctask = s.task(task_id) if (task_id is not None or s.tasks) else None
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
        part.stock = previous + qty if event == "SparePartWasRestocked" else qty
        return wh.stock_change_event(
            event, part, user=user, quantity=qty, previous_stock=previous, at=now, network_id=net
        )
    if event in ("SparePartWasOutOfStock", "SparePartStockWasUnderMinThreshold"):
        if event == "SparePartWasOutOfStock":
            part.stock = 0
        return wh.stock_level_event(event, part, threshold=threshold, at=now, network_id=net)
    raise ValueError(f"unknown event {event!r}: one of {', '.join(wh.EVENTS)}")


class WebhookSender:
    """Sends the simulator's webhooks to its target and records each delivery in the state."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._target = StateLog(log, "mw-sim webhooks")

    async def send(self, event: str, **params: Any) -> WebhookDelivery:
        """Build and deliver one event to the webhook target (signed when a secret is set)."""
        payload = build_webhook(self.state, event, **params)
        return await self.deliver(event, dumps(payload))

    async def deliver(self, event: str, body: bytes, *, signature: str | None = None) -> WebhookDelivery:
        s = self.state
        if not s.webhook_url:
            raise RuntimeError("no webhook target configured")
        headers = {"Content-Type": "application/json", "User-Agent": wh.WEBHOOK_USER_AGENT}
        if signature is not None:
            headers[HEADER] = signature
        elif s.webhook_secret:
            headers[HEADER] = sign(s.webhook_secret, body, template=s.signature_template)
        async with self._lock:
            delivery = WebhookDelivery(
                id=len(s.deliveries) + 1,
                event=event,
                url=s.webhook_url,
                body=body,
                headers=headers,
                at=time.time(),
            )
            s.deliveries.append(delivery)
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0))
        try:
            response = await self._client.post(s.webhook_url, content=body, headers=headers)
            delivery.status = response.status_code
        except httpx.HTTPError as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
            self._target.change(
                "failing", logging.WARNING, "%s unreachable: %s", s.webhook_url, delivery.error
            )
        else:
            if self._target.state == "failing":
                self._target.change("ok", logging.INFO, "%s reachable again", s.webhook_url)
            self._target.quiet("ok")
        return delivery

    async def resend(self, delivery_id: int, *, same_signature: bool = False) -> WebhookDelivery:
        """Send a recorded delivery again, same body and `_idempotencyKey` (a duplicate). A fresh timestamp
        and nonce like a real retry, or with `same_signature=True` the very same header (a replay)."""
        original = next((d for d in self.state.deliveries if d.id == delivery_id), None)
        if original is None:
            raise KeyError(f"unknown delivery {delivery_id}")
        signature = original.headers.get(HEADER) if same_signature else None
        return await self.deliver(original.event, original.body, signature=signature)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
